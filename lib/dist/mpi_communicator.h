// Communicator over an MPI communicator (CPU backend, and host-side bookkeeping on every backend).
#pragma once
#include <mpi.h>

#include "dist/communicator.h"

namespace qwen3 {

// Throws InternalError naming the MPI call and this rank when rc is not MPI_SUCCESS.
void mpi_check(int rc, const char* call);

class MpiCommunicator final : public Communicator {
 public:
  // Does not take ownership unless owned: the caller keeps comm alive (MPI_COMM_WORLD, or a split made by the
  // layout); split() returns communicators that free their own.
  explicit MpiCommunicator(MPI_Comm comm, bool owned = false);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, std::size_t count) override;
  void all_reduce_sum(double* data, std::size_t count) override;
  void all_reduce_max(double* data, std::size_t count) override;
  void all_gather(const double* in, double* out, std::size_t count) override;
  void reduce_scatter_sum(const double* in, double* out, std::size_t count) override;
  void all_gather(const float* in, float* out, std::size_t count) override;
  void reduce_scatter_sum(const float* in, float* out, std::size_t count) override;
  void exchange(const std::vector<Transfer>& transfers) override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  std::vector<std::string> all_gather(const std::string& value) override;
  std::vector<std::vector<double>> gather(const std::vector<double>& values, int root) override;
  void broadcast(std::string& value, int root) override;
  void barrier() override;
  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_;
  bool owned_ = false;
  int rank_ = 0, size_ = 1;
};

// RAII MPI_Init_thread / MPI_Finalize for mains. MPI errors return codes instead of aborting.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  // Ends every rank of the job at once with this exit code (for errors that only one rank saw).
  [[noreturn]] static void abort(int code);
};

std::string mpi_library_version();

// This rank's index among the ranks on its node (MPI_COMM_TYPE_SHARED): the device it drives.
int node_local_rank(MPI_Comm comm);
// The ranks of `comm` on this rank's node.
int node_local_size(MPI_Comm comm);

}  // namespace qwen3
