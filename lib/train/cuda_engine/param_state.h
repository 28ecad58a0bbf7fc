// The CUDA engine's flat parameter state: bf16 compute weights, fp32 gradients, and fp32 master weights and AdamW
// moments over this rank's ZeRO-1 shard window (model/shard_window.h) — on the device, or the window's tail in pinned
// host memory updated by the CPU (--offload-optimizer: train/cuda/host_optimizer.h); their exchange with the host by full tensor
// name; gradient ownership (model/gradient_ownership.h: the replicated weights' partial sums finished once, each
// tensor counted once in the norm); and AdamW on a low-priority side stream that overlaps the next forward, one
// segment per forward segment (train/optimizer_segments.h), the forward waiting for each just before it reads it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gpu/op_timer.h"
#include "model/gradient_ownership.h"
#include "model/shard_window.h"
#include "ops/adamw_chunks.h"
#include "train/engine.h"
#include "train/cuda_engine/device_buffers.h"
#include "train/cuda_engine/device_group.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/host_optimizer.h"
#include "train/cuda_engine/streams.h"

namespace qwen3::cuda {

// The groups the parameter state reduces over: host communicators (null when the group has one rank) and the device
// groups of the replicated gradients.
struct ParamGroups {
  Communicator *tp = nullptr, *pp = nullptr, *cp = nullptr;
  Communicator* shards = nullptr;  // the distributed optimizer's group (data, or data × context parallel), or null
  bool zero_over_cp = false;       // the shards span the context-parallel ranks: their reduce-scatter sums over cp
  bool staged_dp = false;          // the data-parallel (or shard) group's ranks share a GPU: staged through host memory
  DeviceGroup *tp_dev = nullptr, *kv_dev = nullptr, *embed_dev = nullptr, *cp_dev = nullptr;
};

// The optimizer state's part on the host (--offload-optimizer): the fraction of the window, the CPU pass's threads.
struct OptimizerOnHost {
  double fraction = 0;
  int threads = 0;  // 0: OpenMP's default
};

class ParamState {
 public:
  // full: the model's table; owned / reports: per tensor, this stage holds it / reports it; zero1: ZeRO-1 over
  // groups.shards with this window.
  ParamState(const EngineContext& ctx, const ParamTable& full, std::vector<bool> owned, std::vector<bool> reports,
             const ParamGroups& groups, bool zero1, const ShardWindow& shard, const DeviceBuffers& buffers,
             OpTimer& timer, const OptimizerOnHost& on_host);
  ~ParamState();

  // The initial weights (model/init.h's values) of this rank's tensors, computed on the device.
  void init_on_device(std::uint64_t seed, double std);
  void set_weights(const std::string& name, const std::vector<float>& values);
  void set_moment(const std::string& name, int which, const std::vector<float>& values);
  std::vector<float> weights(const std::string& name) const { return download(kMaster, name); }
  std::vector<float> moment(const std::string& name, int which) const { return download(which == 0 ? kM : kV, name); }
  std::vector<float> gradient(const std::string& name) const;

  // Before a micro-batch's backward writes gradients: whether its weight-gradient GEMMs add (or overwrite, β = 0,
  // the first after zero_grad without pipeline parallelism); marks the replicated gradients partial.
  bool begin_micro_batch(bool replicated_partial);
  // The forward's wait for segment `seg`'s pending AdamW update; the backward's for zero_grad's memsets.
  void wait_segment(std::size_t seg, cudaStream_t st, bool pending) const;
  bool take_update_pending();
  void wait_zero(cudaStream_t st);

  void zero_grad();
  void finish_replicated_grads() const;
  void reduce_gradients(Communicator& dp);
  double grad_norm();
  void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale);
  std::int64_t steps() const { return step_; }
  // The host optimizer's CPU seconds per step so far and its elements (none without a host part).
  std::pair<std::vector<double>, std::int64_t> host_optimizer_times() const {
    return host_ ? std::pair{host_->step_cpu_seconds(), host_->elements()} : std::pair<std::vector<double>, std::int64_t>{};
  }
  void set_steps(std::int64_t s) { step_ = s; }
  // Σ over the device scalar buffer: the result of the last reduction (cuda::sum/sum_squares).
  double device_scalar() const;
  double* partials() const { return partial_; }
  double* scalar() const { return scalar_; }

 private:
  // The flat fp32 buffers: the window's master weights and moments (device part, host part), the gradients.
  enum Flat { kMaster = 0, kM = 1, kV = 2, kGrad = 3 };
  // The full tensor `name` (gathered over the tensor-parallel group) from one of the flat fp32 buffers.
  std::vector<float> download(Flat which, const std::string& name) const;
  // Window elements [lo, hi) of state `which` (master, m, v) from `other` (to_state) or to it, host or device memory,
  // on the main stream: the device part's and the host part's.
  void copy_state(Flat which, std::int64_t lo, std::int64_t hi, float* other, bool to_state) const;
  std::vector<float> own_part(std::size_t index, const std::vector<float>& values) const;
  void upload(const float* values, std::int64_t offset, std::int64_t n);
  // Flat elements [offset, offset + n) of the gradient buffer, holding fp32 weights, become the weights: the bf16
  // copy, the master copy where in the shard; the gradient buffer is zeroed again.
  void commit(std::int64_t offset, std::int64_t n);
  void setup_optimizer(const DeviceBuffers& buffers, int host_threads);

  const EngineContext& ctx_;
  const ParamTable& full_;
  std::vector<bool> owned_, reports_;
  ParamGroups groups_;
  GradientOwnership ownership_;
  bool zero1_;
  ShardWindow shard_;
  OpTimer& timer_;
  float *w_, *g_, *m_, *v_;  // [host_begin_], [padded], [host_begin_] ×2
  std::int64_t host_begin_;  // the window's elements from here on are the host optimizer's
  std::unique_ptr<HostOptimizer> host_;
  bf16* wb_;                 // [padded]
  AdamWChunk* chunks_;
  double *partial_, *scalar_;
  Stream opt_stream_;
  std::vector<std::pair<int, int>> segments_;
  std::vector<Event> segment_done_;
  Event grads_ready_, zero_done_;
  std::unique_ptr<DeviceGroup> dp_dev_;  // the data-parallel (or shard) group on the device, made on first use
  bool update_pending_ = false, zero_pending_ = false, overwrite_grads_ = false, grads_scattered_ = false;
  enum class Replicated { clean, partial, reduced };
  mutable Replicated replicated_ = Replicated::clean;
  std::vector<std::size_t> zeroed_by_memset_;  // gradients no GEMM overwrites (norms, an untied embedding)
  std::int64_t step_ = 0;
};

}  // namespace qwen3::cuda
