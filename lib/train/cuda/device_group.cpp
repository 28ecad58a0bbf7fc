// Device collectives behind one seam (see device_group.h): NCCL when built, host-staged for ranks sharing a GPU.
#include "train/cuda/device_group.h"

#include "core/error.h"
#include "cuda/host_staged_collectives.h"
#ifdef QWEN3_HAVE_NCCL
#include "dist/nccl_communicator.h"
#endif

namespace qwen3::cuda {
namespace {

#ifdef QWEN3_HAVE_NCCL
class NcclGroup final : public DeviceGroup {
 public:
  explicit NcclGroup(std::unique_ptr<NcclCommunicator> c) : c_(std::move(c)) {}
  void set_stream(cudaStream_t s) override { c_->set_stream(s); }
  void all_gather_bf16(const void* in, void* out, std::size_t n) override { c_->all_gather_bf16(in, out, n); }
  void reduce_scatter_sum_bf16(const void* in, void* out, std::size_t n) override { c_->reduce_scatter_sum_bf16(in, out, n); }
  void all_gather(const float* in, float* out, std::size_t n) override { c_->all_gather(in, out, n); }
  void reduce_scatter_sum(const float* in, float* out, std::size_t n) override { c_->reduce_scatter_sum(in, out, n); }
  void all_reduce_sum(float* data, std::size_t n) override { c_->all_reduce_sum(data, n); }
  void all_reduce_max(float* data, std::size_t n) override { c_->all_reduce_max(data, n); }
  void group_start() override { c_->group_start(); }
  void group_end() override { c_->group_end(); }
  Communicator* communicator() override { return c_.get(); }
  std::unique_ptr<DeviceGroup> split(int color, int key) override {
    std::unique_ptr<Communicator> sub = c_->split(color, key);
    auto* nccl = dynamic_cast<NcclCommunicator*>(sub.get());
    QWEN3_ASSERT(nccl != nullptr, "NcclCommunicator::split returns an NcclCommunicator");
    sub.release();
    std::unique_ptr<NcclCommunicator> owned(nccl);
    owned->set_stream(c_->stream());
    return std::make_unique<NcclGroup>(std::move(owned));
  }

 private:
  std::unique_ptr<NcclCommunicator> c_;
};
#endif

class StagedGroup final : public DeviceGroup {
 public:
  StagedGroup(Communicator& host, cudaStream_t s) : c_(host), stream_(s) {}
  void set_stream(cudaStream_t s) override { stream_ = s; }
  void all_gather_bf16(const void* in, void* out, std::size_t n) override { c_.all_gather_bf16(in, out, n, stream_); }
  void reduce_scatter_sum_bf16(const void* in, void* out, std::size_t n) override {
    c_.reduce_scatter_sum_bf16(in, out, n, stream_);
  }
  void all_reduce_sum(float* data, std::size_t n) override { c_.all_reduce_sum(data, n, stream_); }
  void all_gather(const float*, float*, std::size_t) override { unsupported("all_gather"); }
  void reduce_scatter_sum(const float*, float*, std::size_t) override { unsupported("reduce_scatter_sum"); }
  void all_reduce_max(float*, std::size_t) override { unsupported("all_reduce_max"); }
  std::unique_ptr<DeviceGroup> split(int, int) override { unsupported("split"); }

 private:
  [[noreturn]] static void unsupported(const char* what) {
    throw InternalError(std::string("host-staged device collectives have no ") + what);
  }
  HostStagedCollectives c_;
  cudaStream_t stream_;
};

}  // namespace

bool stage_through_host(Communicator& group, int device) {
#ifdef QWEN3_HAVE_NCCL
  return ranks_share_a_gpu(group, device);
#else
  return true;
#endif
}

void require_nccl(const std::string& what) {
#ifndef QWEN3_HAVE_NCCL
  throw UsageError(what + " with --device cuda needs NCCL, which this build did not find");
#endif
}

std::unique_ptr<DeviceGroup> make_nccl_group(Communicator& host, cudaStream_t stream, const std::string& what) {
  require_nccl(what);
#ifdef QWEN3_HAVE_NCCL
  auto c = std::make_unique<NcclCommunicator>(host);
  c->set_stream(stream);
  return std::make_unique<NcclGroup>(std::move(c));
#else
  return nullptr;
#endif
}

std::unique_ptr<DeviceGroup> make_host_staged_group(Communicator& host, cudaStream_t stream) {
  return std::make_unique<StagedGroup>(host, stream);
}

}  // namespace qwen3::cuda
