// The communicator seam: collectives the trainer needs, passed explicitly (never global). MPI on the CPU; NCCL on GPUs.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace qwen3 {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sums over every rank of this communicator (host memory for the MPI implementation).
  virtual void all_reduce_sum(float* data, std::size_t count) = 0;
  virtual void all_reduce_sum(double* data, std::size_t count) = 0;
  virtual void all_reduce_max(double* data, std::size_t count) = 0;
  // Tensor/sequence parallelism (host memory here): out[size·count] = every rank's in[count], in rank order;
  // out[count] = rank r's block of the element-wise sum of every rank's in[size·count].
  virtual void all_gather(const double* in, double* out, std::size_t count) = 0;
  virtual void reduce_scatter_sum(const double* in, double* out, std::size_t count) = 0;
  // The same for fp32 (gradients and weights of the distributed optimizer).
  virtual void all_gather(const float* in, float* out, std::size_t count) = 0;
  virtual void reduce_scatter_sum(const float* in, float* out, std::size_t count) = 0;
  // Point-to-point transfers (pipeline parallelism), posted together so that two neighbours sending to each other
  // cannot deadlock; complete on return (MPI) or enqueued in order on the communicator's stream (NCCL). Buffers live
  // where the implementation's collectives take them (host for MPI, device for NCCL). Between two ranks, transfers
  // in the same direction are matched in the order posted.
  struct Transfer {
    bool send = true;
    void* data = nullptr;
    std::size_t bytes = 0;
    int peer = 0;  // rank in this communicator
  };
  virtual void exchange(const std::vector<Transfer>& transfers) = 0;
  // A communicator over the ranks that pass the same color, ordered by key (MPI_Comm_split semantics).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // Every rank's string, in rank order, on every rank.
  virtual std::vector<std::string> all_gather(const std::string& value) = 0;
  // Every rank's vector (lengths may differ), in rank order, on rank `root` only (empty elsewhere).
  virtual std::vector<std::vector<double>> gather(const std::vector<double>& values, int root) = 0;
  virtual void broadcast(std::string& value, int root) = 0;
  virtual void barrier() = 0;
};

}  // namespace qwen3
