// Device collectives behind one seam (see device_group.h): NCCL when built, host-staged for ranks sharing a GPU.
#include "train/cuda_engine/device_group.h"

#include <cstdlib>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/host_staged_collectives.h"
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

// A Communicator over device buffers whose point-to-point transfers go through host memory (the pipeline's stage
// boundaries when its ranks share a GPU); everything else is the host communicator's.
class StagedCommunicator final : public Communicator {
 public:
  StagedCommunicator(Communicator& host, HostStagedCollectives& staged, const cudaStream_t& stream)
      : host_(host), staged_(staged), stream_(stream) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  void all_reduce_sum(float* d, std::size_t n) override { host_.all_reduce_sum(d, n); }
  void all_reduce_sum(double* d, std::size_t n) override { host_.all_reduce_sum(d, n); }
  void all_reduce_max(double* d, std::size_t n) override { host_.all_reduce_max(d, n); }
  void all_gather(const double* i, double* o, std::size_t n) override { host_.all_gather(i, o, n); }
  void reduce_scatter_sum(const double* i, double* o, std::size_t n) override { host_.reduce_scatter_sum(i, o, n); }
  void all_gather(const float* i, float* o, std::size_t n) override { host_.all_gather(i, o, n); }
  void reduce_scatter_sum(const float* i, float* o, std::size_t n) override { host_.reduce_scatter_sum(i, o, n); }
  void exchange(const std::vector<Transfer>& transfers) override { staged_.exchange(transfers, stream_); }
  std::unique_ptr<Communicator> split(int color, int key) override { return host_.split(color, key); }
  std::vector<std::string> all_gather(const std::string& v) override { return host_.all_gather(v); }
  std::vector<std::vector<double>> gather(const std::vector<double>& v, int root) override { return host_.gather(v, root); }
  void broadcast(std::string& v, int root) override { host_.broadcast(v, root); }
  void barrier() override {
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    host_.barrier();
  }

 private:
  Communicator& host_;
  HostStagedCollectives& staged_;
  const cudaStream_t& stream_;
};

class StagedGroup final : public DeviceGroup {
 public:
  StagedGroup(Communicator& host, cudaStream_t s, std::unique_ptr<Communicator> owned = nullptr)
      : owned_(std::move(owned)), host_(host), c_(host), stream_(s), comm_(host, c_, stream_) {}
  void set_stream(cudaStream_t s) override { stream_ = s; }
  void all_gather_bf16(const void* in, void* out, std::size_t n) override { c_.all_gather_bf16(in, out, n, stream_); }
  void reduce_scatter_sum_bf16(const void* in, void* out, std::size_t n) override {
    c_.reduce_scatter_sum_bf16(in, out, n, stream_);
  }
  void all_gather(const float* in, float* out, std::size_t n) override { c_.all_gather(in, out, n, stream_); }
  void reduce_scatter_sum(const float* in, float* out, std::size_t n) override { c_.reduce_scatter_sum(in, out, n, stream_); }
  void all_reduce_sum(float* data, std::size_t n) override { c_.all_reduce_sum(data, n, stream_); }
  void all_reduce_max(float* data, std::size_t n) override { c_.all_reduce_max(data, n, stream_); }
  Communicator* communicator() override { return &comm_; }
  std::unique_ptr<DeviceGroup> split(int color, int key) override {
    std::unique_ptr<Communicator> sub = host_.split(color, key);
    Communicator& ref = *sub;
    return std::make_unique<StagedGroup>(ref, stream_, std::move(sub));
  }

 private:
  std::unique_ptr<Communicator> owned_;  // a split's host communicator
  Communicator& host_;
  HostStagedCollectives c_;
  cudaStream_t stream_;
  StagedCommunicator comm_;
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
