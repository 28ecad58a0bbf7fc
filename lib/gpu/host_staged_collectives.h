// Collectives on device buffers carried out over a host communicator: each call copies its input to host memory,
// runs the host collective (MPI) and copies the result back, synchronously on the given stream. For groups whose
// ranks share one GPU — NCCL refuses two ranks on the same device — so that such a group still runs (slowly), e.g.
// context parallelism tested on a one-GPU host. bf16 data is summed in fp32 on the host and rounded once.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace qwen3::cuda {

class HostStagedCollectives {
 public:
  explicit HostStagedCollectives(Communicator& host) : host_(host) {}
  // out[size·count] = every rank's in[count] (bf16), in rank order.
  void all_gather_bf16(const void* in, void* out, std::size_t count, cudaStream_t stream);
  // out[count] = this rank's block of the element-wise sum of every rank's in[size·count] (bf16).
  void reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count, cudaStream_t stream);
  // data[count] (fp32) = the element-wise sum over the ranks, in place.
  void all_reduce_sum(float* data, std::size_t count, cudaStream_t stream);
  // The same pair in fp32, and the element-wise maximum in place.
  void all_gather(const float* in, float* out, std::size_t count, cudaStream_t stream);
  void reduce_scatter_sum(const float* in, float* out, std::size_t count, cudaStream_t stream);
  void all_reduce_max(float* data, std::size_t count, cudaStream_t stream);
  // Point-to-point transfers of device buffers (Communicator::exchange): sends copied out once the stream's work is
  // done, received data copied in before returning.
  void exchange(const std::vector<Communicator::Transfer>& transfers, cudaStream_t stream);

 private:
  Communicator& host_;
  // in[n] (bf16 or fp32, device) → a_[n] (fp32, host); b_[0, n) → out[n]. Synchronous on stream.
  void download(const void* in, std::size_t n, bool bf16, cudaStream_t stream);
  void upload(void* out, std::size_t n, bool bf16, cudaStream_t stream);
  // The all-gather and the reduce-scatter of either type (bf16 summed in fp32 and rounded once).
  void gather(const void* in, void* out, std::size_t count, bool bf16, cudaStream_t stream);
  void scatter(const void* in, void* out, std::size_t count, bool bf16, cudaStream_t stream);
  std::vector<std::uint16_t> bits_;  // bf16 staging
  std::vector<float> a_, b_;         // fp32 staging
};

// "host/PCI bus id" of a GPU that two ranks of `group` drive, "" when every rank has its own: NCCL cannot span such
// a group. Collective over the group.
std::string shared_gpu(Communicator& group, int device);
inline bool ranks_share_a_gpu(Communicator& group, int device) { return !shared_gpu(group, device).empty(); }

}  // namespace qwen3::cuda
