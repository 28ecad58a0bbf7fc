// The communicator seam over NCCL (GPU backend). The numeric collectives take DEVICE pointers and run on the stream
// given to set_stream(), asynchronously; the bookkeeping ones (strings, gather to a root, barrier) go over the host
// communicator this one was built from. One NCCL communicator per group, created from the host group collectively:
// rank 0's unique id is broadcast over it (no global state; every communicator is passed explicitly).
#pragma once
#include <cuda_runtime.h>

#include <memory>

#include "dist/communicator.h"

struct ncclComm;  // ncclComm_t is ncclComm*; keeps nccl.h out of the includers

namespace qwen3 {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host`: every rank of it constructs one, each driving the CUDA device current at the call.
  // `host` must outlive this object.
  explicit NcclCommunicator(Communicator& host);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void set_stream(cudaStream_t s) { stream_ = s; }
  cudaStream_t stream() const { return stream_; }

  // Device buffers, enqueued on stream().
  void all_reduce_sum(float* data, std::size_t count) override;
  void all_reduce_sum(double* data, std::size_t count) override;
  void all_reduce_max(double* data, std::size_t count) override;
  void all_gather(const double* in, double* out, std::size_t count) override;
  void reduce_scatter_sum(const double* in, double* out, std::size_t count) override;
  // bf16 and fp32 device variants for activations (sequence parallelism) and gradients.
  void all_gather_bf16(const void* in, void* out, std::size_t count);
  void reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count);
  void all_reduce_sum_bf16(void* data, std::size_t count);
  void all_reduce_max(float* data, std::size_t count);
  // Several collectives as one NCCL group (fewer launches): start … end around the calls.
  void group_start();
  void group_end();
  void all_gather(const float* in, float* out, std::size_t count) override;
  void reduce_scatter_sum(const float* in, float* out, std::size_t count) override;
  void exchange(const std::vector<Transfer>& transfers) override;  // one NCCL group of sends and receives

  // Host bookkeeping, over the host communicator.
  std::vector<std::string> all_gather(const std::string& value) override { return host_.all_gather(value); }
  std::vector<std::vector<double>> gather(const std::vector<double>& values, int root) override {
    return host_.gather(values, root);
  }
  void broadcast(std::string& value, int root) override { host_.broadcast(value, root); }
  void barrier() override;  // waits for this communicator's stream, then the host barrier

  // A sub-communicator (ncclCommSplit) over the ranks passing the same color; its host side is split alike.
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  NcclCommunicator(std::unique_ptr<Communicator> host_owned, ncclComm* comm);
  std::unique_ptr<Communicator> host_owned_;  // set for split() results
  Communicator& host_;
  ncclComm* comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace qwen3
