// MPI implementation of the communicator seam (see mpi_communicator.h).
#include "dist/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace qwen3 {

void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  throw InternalError(std::string(call) + " failed on rank " + std::to_string(rank) + ": " + std::string(msg, len));
}

namespace {
// MPI counts are int: split large buffers so multi-GiB gradients reduce correctly.
template <typename T>
void all_reduce_chunked(T* data, std::size_t count, MPI_Datatype type, MPI_Op op, MPI_Comm comm) {
  const std::size_t chunk = static_cast<std::size_t>(INT_MAX / 2);
  for (std::size_t off = 0; off < count; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, count - off));
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off, n, type, op, comm), "MPI_Allreduce");
  }
}
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  if (owned_) MPI_Comm_free(&comm_);
}

// Block collectives of one element type (MPI counts are ints: larger blocks are refused).
static void all_gather_block(const void* in, void* out, std::size_t count, MPI_Datatype type, MPI_Comm comm) {
  if (count > static_cast<std::size_t>(INT_MAX)) throw InternalError("MPI_Allgather: block of more than INT_MAX values");
  mpi_check(MPI_Allgather(in, static_cast<int>(count), type, out, static_cast<int>(count), type, comm), "MPI_Allgather");
}
static void reduce_scatter_block(const void* in, void* out, std::size_t count, MPI_Datatype type, MPI_Comm comm) {
  if (count > static_cast<std::size_t>(INT_MAX)) throw InternalError("MPI_Reduce_scatter_block: block of more than INT_MAX values");
  mpi_check(MPI_Reduce_scatter_block(in, out, static_cast<int>(count), type, MPI_SUM, comm), "MPI_Reduce_scatter_block");
}

void MpiCommunicator::all_gather(const double* in, double* out, std::size_t count) {
  all_gather_block(in, out, count, MPI_DOUBLE, comm_);
}
void MpiCommunicator::reduce_scatter_sum(const double* in, double* out, std::size_t count) {
  reduce_scatter_block(in, out, count, MPI_DOUBLE, comm_);
}
void MpiCommunicator::all_gather(const float* in, float* out, std::size_t count) {
  all_gather_block(in, out, count, MPI_FLOAT, comm_);
}
void MpiCommunicator::reduce_scatter_sum(const float* in, float* out, std::size_t count) {
  reduce_scatter_block(in, out, count, MPI_FLOAT, comm_);
}

void MpiCommunicator::exchange(const std::vector<Transfer>& transfers) {
  // Each transfer in pieces of at most 1 GiB (MPI counts are ints); all posted, then waited for together.
  constexpr std::size_t kPiece = 1ull << 30;
  std::vector<MPI_Request> requests;
  for (const Transfer& t : transfers) {
    if (t.peer < 0 || t.peer >= size_) throw InternalError("MPI exchange with rank " + std::to_string(t.peer) + " of " + std::to_string(size_));
    auto* bytes = static_cast<char*>(t.data);
    for (std::size_t off = 0; off < t.bytes || (off == 0 && t.bytes == 0); off += kPiece) {
      const int n = static_cast<int>(std::min(kPiece, t.bytes - off));
      requests.emplace_back();
      if (t.send)
        mpi_check(MPI_Isend(bytes + off, n, MPI_BYTE, t.peer, 0, comm_, &requests.back()), "MPI_Isend");
      else
        mpi_check(MPI_Irecv(bytes + off, n, MPI_BYTE, t.peer, 0, comm_, &requests.back()), "MPI_Irecv");
      if (t.bytes == 0) break;
    }
  }
  if (!requests.empty())
    mpi_check(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  MPI_Comm sub = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub, true);
}

void MpiCommunicator::all_reduce_sum(float* data, std::size_t count) {
  all_reduce_chunked(data, count, MPI_FLOAT, MPI_SUM, comm_);
}
void MpiCommunicator::all_reduce_sum(double* data, std::size_t count) {
  all_reduce_chunked(data, count, MPI_DOUBLE, MPI_SUM, comm_);
}
void MpiCommunicator::all_reduce_max(double* data, std::size_t count) {
  all_reduce_chunked(data, count, MPI_DOUBLE, MPI_MAX, comm_);
}

std::vector<std::string> MpiCommunicator::all_gather(const std::string& value) {
  int len = static_cast<int>(value.size());
  std::vector<int> lens(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
  mpi_check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_), "MPI_Allgather");
  int total = 0;
  for (int r = 0; r < size_; ++r) displs[r] = total, total += lens[r];
  std::string all(static_cast<std::size_t>(total), '\0');
  mpi_check(MPI_Allgatherv(value.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, comm_),
            "MPI_Allgatherv");
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r) out.push_back(all.substr(displs[r], lens[r]));
  return out;
}

std::vector<std::vector<double>> MpiCommunicator::gather(const std::vector<double>& values, int root) {
  int len = static_cast<int>(values.size());
  std::vector<int> lens(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
  mpi_check(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm_), "MPI_Gather");
  int total = 0;
  if (rank_ == root)
    for (int r = 0; r < size_; ++r) displs[r] = total, total += lens[r];
  std::vector<double> all(static_cast<std::size_t>(total));
  mpi_check(MPI_Gatherv(values.data(), len, MPI_DOUBLE, all.data(), lens.data(), displs.data(), MPI_DOUBLE, root, comm_),
            "MPI_Gatherv");
  std::vector<std::vector<double>> out;
  if (rank_ == root)
    for (int r = 0; r < size_; ++r) out.emplace_back(all.begin() + displs[r], all.begin() + displs[r] + lens[r]);
  return out;
}

void MpiCommunicator::broadcast(std::string& value, int root) {
  int len = static_cast<int>(value.size());
  mpi_check(MPI_Bcast(&len, 1, MPI_INT, root, comm_), "MPI_Bcast");
  value.resize(static_cast<std::size_t>(len));
  mpi_check(MPI_Bcast(value.data(), len, MPI_CHAR, root, comm_), "MPI_Bcast");
}

void MpiCommunicator::barrier() { mpi_check(MPI_Barrier(comm_), "MPI_Barrier"); }

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw InternalError("MPI_Init_thread failed");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiSession::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

namespace {

// This rank's place on its node and the node's ranks of `comm`.
std::pair<int, int> node_rank_and_size(MPI_Comm comm) {
  int rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  MPI_Comm node = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  int local = 0, size = 1;
  mpi_check(MPI_Comm_rank(node, &local), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(node, &size), "MPI_Comm_size");
  mpi_check(MPI_Comm_free(&node), "MPI_Comm_free");
  return {local, size};
}

}  // namespace

int node_local_rank(MPI_Comm comm) { return node_rank_and_size(comm).first; }
int node_local_size(MPI_Comm comm) { return node_rank_and_size(comm).second; }

std::string mpi_library_version() {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  std::string s(v, static_cast<std::size_t>(len));
  auto nl = s.find_first_of("\r\n,");  // "Open MPI v4.1.4, package: ..." → "Open MPI v4.1.4"
  return nl == std::string::npos ? s : s.substr(0, nl);
}

}  // namespace qwen3
