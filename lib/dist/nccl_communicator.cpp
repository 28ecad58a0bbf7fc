// NCCL implementation of the communicator seam (see nccl_communicator.h).
#include "dist/nccl_communicator.h"

#include <nccl.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "gpu/check.h"

namespace qwen3 {
namespace {

void nccl_check(ncclResult_t r, const char* call, ncclComm_t comm, int rank) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  std::string detail = ncclGetErrorString(r);
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  if (last && *last) detail += std::string(" (") + last + ")";
  throw InternalError(std::string(call) + " failed on rank " + std::to_string(rank) + ": " + detail);
}
#define NCCL_CHECK(call) nccl_check((call), #call, comm_, rank_)

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host) : host_(host), rank_(host.rank()), size_(host.size()) {
  ncclUniqueId id;
  std::string blob;
  if (rank_ == 0) {
    nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", nullptr, rank_);
    blob.assign(reinterpret_cast<const char*>(&id), sizeof id);
  }
  host_.broadcast(blob, 0);
  if (blob.size() != sizeof id) throw InternalError("NCCL unique id of the wrong size received over the host communicator");
  std::memcpy(&id, blob.data(), sizeof id);
  ncclComm_t c = nullptr;
  nccl_check(ncclCommInitRank(&c, size_, id, rank_), "ncclCommInitRank", nullptr, rank_);
  comm_ = c;
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host_owned, ncclComm* comm)
    : host_owned_(std::move(host_owned)), host_(*host_owned_), comm_(comm), rank_(host_.rank()), size_(host_.size()) {}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclCommunicator::all_reduce_sum(float* data, std::size_t count) {
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_));
}
void NcclCommunicator::all_reduce_sum(double* data, std::size_t count) {
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat64, ncclSum, comm_, stream_));
}
void NcclCommunicator::all_reduce_max(double* data, std::size_t count) {
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat64, ncclMax, comm_, stream_));
}
void NcclCommunicator::all_gather(const double* in, double* out, std::size_t count) {
  NCCL_CHECK(ncclAllGather(in, out, count, ncclFloat64, comm_, stream_));
}
void NcclCommunicator::reduce_scatter_sum(const double* in, double* out, std::size_t count) {
  NCCL_CHECK(ncclReduceScatter(in, out, count, ncclFloat64, ncclSum, comm_, stream_));
}
void NcclCommunicator::all_gather(const float* in, float* out, std::size_t count) {
  NCCL_CHECK(ncclAllGather(in, out, count, ncclFloat32, comm_, stream_));
}
void NcclCommunicator::reduce_scatter_sum(const float* in, float* out, std::size_t count) {
  NCCL_CHECK(ncclReduceScatter(in, out, count, ncclFloat32, ncclSum, comm_, stream_));
}
void NcclCommunicator::all_gather_bf16(const void* in, void* out, std::size_t count) {
  NCCL_CHECK(ncclAllGather(in, out, count, ncclBfloat16, comm_, stream_));
}
void NcclCommunicator::reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count) {
  NCCL_CHECK(ncclReduceScatter(in, out, count, ncclBfloat16, ncclSum, comm_, stream_));
}
void NcclCommunicator::all_reduce_sum_bf16(void* data, std::size_t count) {
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclBfloat16, ncclSum, comm_, stream_));
}

void NcclCommunicator::all_reduce_max(float* data, std::size_t count) {
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclMax, comm_, stream_));
}
void NcclCommunicator::exchange(const std::vector<Transfer>& transfers) {
  NCCL_CHECK(ncclGroupStart());
  for (const Transfer& t : transfers) {
    if (t.send)
      NCCL_CHECK(ncclSend(t.data, t.bytes, ncclUint8, t.peer, comm_, stream_));
    else
      NCCL_CHECK(ncclRecv(t.data, t.bytes, ncclUint8, t.peer, comm_, stream_));
  }
  NCCL_CHECK(ncclGroupEnd());
}

void NcclCommunicator::group_start() { NCCL_CHECK(ncclGroupStart()); }
void NcclCommunicator::group_end() { NCCL_CHECK(ncclGroupEnd()); }

void NcclCommunicator::barrier() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  host_.barrier();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  auto host = host_.split(color, key);
  ncclComm_t sub = nullptr;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(host), sub));
}

}  // namespace qwen3
