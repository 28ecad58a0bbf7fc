// A process group's collectives on device memory, ordered on a CUDA stream: NCCL, or — for context-parallel ranks
// that share a GPU, which NCCL refuses — staged through host memory. The one seam where the build's NCCL flag is read:
// without NCCL, asking for a group that needs it throws UsageError naming what needed it.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace qwen3::cuda {

class DeviceGroup {
 public:
  virtual ~DeviceGroup() = default;
  virtual void set_stream(cudaStream_t s) = 0;
  // Sequence parallelism's dual pair (bf16, and fp32): out[size·count] ← every rank's in[count], in rank order;
  // out[count] ← this rank's block of the element-wise sum of every rank's in[size·count].
  virtual void all_gather_bf16(const void* in, void* out, std::size_t count) = 0;
  virtual void reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count) = 0;
  virtual void all_gather(const float* in, float* out, std::size_t count) = 0;
  virtual void reduce_scatter_sum(const float* in, float* out, std::size_t count) = 0;
  virtual void all_reduce_sum(float* data, std::size_t count) = 0;
  virtual void all_reduce_max(float* data, std::size_t count) = 0;
  // Batches the collectives between them into one launch (NCCL groups; nothing when staged).
  virtual void group_start() {}
  virtual void group_end() {}
  // The group as a Communicator of device buffers (the pipeline's stage transfers): NCCL only.
  virtual Communicator* communicator() { return nullptr; }
  // The sub-group of the ranks with the same color, ordered by key (collective).
  virtual std::unique_ptr<DeviceGroup> split(int color, int key) = 0;
};

// NCCL over `host`'s ranks (collective), on `stream`. Without NCCL in this build: UsageError "<what> with --device
// cuda needs NCCL, which this build did not find".
std::unique_ptr<DeviceGroup> make_nccl_group(Communicator& host, cudaStream_t stream, const std::string& what);
// Every collective and the point-to-point transfers staged through host memory over `host` (synchronous, slow): for
// groups whose ranks share a GPU.
std::unique_ptr<DeviceGroup> make_host_staged_group(Communicator& host, cudaStream_t stream);
// Whether `group`'s collectives must be staged through host memory: its ranks share a GPU (collective over it), or
// this build has no NCCL.
bool stage_through_host(Communicator& group, int device);
// Throws the UsageError above when this build has no NCCL; returns otherwise.
void require_nccl(const std::string& what);

}  // namespace qwen3::cuda
