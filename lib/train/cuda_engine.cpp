// CUDA engine (see cuda_engine.h): the orchestration of one rank's units (docs/cuda-engine.md has the map) — the
// buffer table allocated (train/cuda/device_buffers.h), the flat parameter state and optimizer
// (train/cuda/param_state.h), the Qwen3 blocks (train/cuda/qwen3_blocks.h) over the sequence-parallel region and the
// attention unit, the head (train/cuda/lm_head.h), activations and their offload (train/cuda/activations.h) — and a
// micro-batch's flow through them: forward over the stage's layers, the head on the last stage, backward in reverse.
#include "train/cuda_engine.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/host_staged_collectives.h"
#include "model/context_parallel.h"
#include "model/sequence_layout.h"
#include "ops/cuda/elementwise.h"
#include "train/buffer_table.h"
#include "train/pipeline_schedule.h"
#include "train/cuda_engine/activations.h"
#include "train/cuda_engine/attention.h"
#include "train/cuda_engine/device_buffers.h"
#include "train/cuda_engine/device_group.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/linears.h"
#include "train/cuda_engine/lm_head.h"
#include "train/cuda_engine/param_state.h"
#include "train/cuda_engine/qwen3_blocks.h"
#include "train/cuda_engine/sequence_parallel.h"
#include "train/cuda_engine/streams.h"

namespace qwen3 {
namespace {

using cuda::bf16;

// Whether two ranks of `group` (null: none) drive one GPU, which NCCL cannot span: then UsageError saying what to do,
// or with `staging` (--shared-gpu-staging) true (the group is staged through host memory). Collective over the group.
bool shares_a_gpu(Communicator* group, const std::string& what, int device, int devices_here, bool staging) {
  if (!group || group->size() < 2) return false;
  const std::string gpu = cuda::shared_gpu(*group, device);
  if (gpu.empty()) return false;
  if (staging) return true;
  throw UsageError(what + " ranks share one GPU (" + gpu + "): NCCL needs a GPU of its own for every rank of a "
                   "tensor-, pipeline- or data-parallel group. Start one rank per GPU (this host shows " +
                   std::to_string(devices_here) + ": at most " + std::to_string(devices_here) +
                   " ranks per node); only context parallelism (--cp) runs with ranks sharing a GPU, through host memory "
                   "(--shared-gpu-staging stages the others too, slowly, for checking them on fewer GPUs)");
}

// --comm-sm-margin m: the weight-gradient GEMMs that overlap the comm stream run on all but m SMs (0: all).
int overlapped_gemm_sms(int sm_count, int margin) {
  if (margin < 0 || margin >= sm_count)
    throw UsageError("--comm-sm-margin " + std::to_string(margin) + ": expected 0 to " + std::to_string(sm_count - 1) +
                     " SMs (this GPU has " + std::to_string(sm_count) + ")");
  return margin > 0 ? sm_count - margin : 0;
}

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& cfg, const EngineOptions& opts);
  ~CudaEngine() override;
  const ParamTable& params() const override { return plan_.full; }
  std::string device_name() const override { return device_name_; }
  void set_weights(const std::string& name, const std::vector<float>& values) override {
    state_->set_weights(name, values);
    weights_changed_ = true;
  }
  std::vector<float> weights(const std::string& name) const override { return state_->weights(name); }
  std::vector<float> moment(const std::string& name, int which) const override { return state_->moment(name, which); }
  void set_moment(const std::string& name, int which, const std::vector<float>& values) override {
    state_->set_moment(name, which, values);
  }
  std::int64_t optimizer_steps() const override { return state_->steps(); }
  void set_optimizer_steps(std::int64_t steps) override { state_->set_steps(steps); }
  std::vector<float> gradient(const std::string& name) const override { return state_->gradient(name); }
  void zero_grad() override { state_->zero_grad(); }
  cpu::LossSum forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  cpu::LossSum stage_forward(int micro, const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  void stage_backward(int micro) override;
  Communicator::Transfer boundary(Boundary which, int micro, std::int64_t tokens) override;
  Communicator* pipeline_comm() override { return pp_dev_ ? pp_dev_->communicator() : nullptr; }
  void synchronize_pipeline() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  int pipeline_slots() const override { return plan_.slots; }
  void reduce_gradients(Communicator& dp) override {
    state_->reduce_gradients(dp);
    linears_->end_step({tp_host_, cp_host_, &dp});
  }
  double grad_norm() override { return state_->grad_norm(); }
  void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale) override {
    state_->optimizer_step(lr, adamw, grad_scale);
    weights_changed_ = true;
  }
  void synchronize() override { CUDA_CHECK(cudaDeviceSynchronize()); }
  std::int64_t device_bytes_in_use() const override { return alloc_.bytes_in_use(); }
  std::int64_t device_used_bytes() const override;
  std::int64_t host_pinned_bytes() const override { return buffers_->host_pinned_bytes(); }
  int optimizer_shards() const override { return plan_.shard_parts; }
  HostOptimizerTimes host_optimizer_times() override {
    auto [seconds, elements] = state_->host_optimizer_times();
    return {std::move(seconds), elements};
  }
  std::vector<std::pair<std::string, std::int64_t>> device_bytes_by_category() const override;

 private:
  // ---- construction, in order ----
  void check_options(const EngineOptions& o) const;
  std::pair<int, int> select_device(const EngineOptions& o);  // → the devices on this host, this one's SM count
  cuda::ParamGroups host_groups(const EngineOptions& o, int devices);
  void make_device_groups();  // NCCL communicators (collective), or host staging for context-parallel ranks
  void bind_units(const EngineOptions& o, int overlapped_gemm_sms);

  // ---- one micro-batch ----
  enum Part { kForward = 1, kBackward = 2, kBoth = 3 };
  cpu::LossSum run(int slot, const MicroBatch* mb, double grad_scale, std::vector<float>* logits_out, int part);
  std::int64_t load_micro_batch(int slot, const MicroBatch& mb, const cuda::MicroDims& d);  // → tokens counted
  cpu::LossSum forward(int slot, std::int64_t counted, double grad_scale, bool accumulate,
                       std::vector<float>* logits_out, const cuda::MicroDims& d);
  void backward(int slot, bool accumulate, const cuda::MicroDims& d);
  bf16* layer_output(int slot, std::int64_t l) const;  // where layer l writes: the next layer's input, or the stage's

  Communicator *tp_host_, *pp_host_, *cp_host_;  // host sides of the groups (null: one rank)
  std::string device_name_;
  int device_ = 0;  // this rank's GPU
  bool zero1_ = false;
  cuda::ParamGroups groups_;
  // What this rank holds and does (train/rank_plan.h): every size, table and window below is read from it.
  RankPlan plan_;
  const ModelConfig& cfg_ = plan_.model;
  const TpDims& tp_ = plan_.tp;
  const StageRange& stage_ = plan_.stage;
  std::vector<std::pair<std::int64_t, std::int64_t>> slot_shape_;  // (batch, seq) of the micro-batch in each slot
  bool cp_staged_ = false, tp_staged_ = false, pp_staged_ = false;  // groups whose collectives go through host memory
  cuda::Stream stream_;
  cuda::DeviceAllocator alloc_;
  cuda::OpTimer timer_;  // --op-times: per-operation GPU time, printed at exit
  std::unique_ptr<cuda::Attention> attention_;
  std::unique_ptr<cuda::DeviceBuffers> buffers_;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::unique_ptr<cuda::EngineContext> ctx_;
  std::unique_ptr<cuda::DeviceGroup> tp_dev_, kv_dev_, pp_dev_, embed_dev_, cp_dev_;
  std::unique_ptr<cuda::ParamState> state_;
  std::unique_ptr<cuda::Linears> linears_;
  std::unique_ptr<cuda::SequenceParallel> sp_;
  std::unique_ptr<cuda::Qwen3Blocks> blocks_;
  std::unique_ptr<cuda::LmHead> head_;
  std::unique_ptr<cuda::Offloader> offload_;
  cuda::Scratch scratch_{};
  std::vector<std::vector<cuda::LayerActs>> acts_;  // [slot][layer − stage's first]
  std::vector<std::vector<std::int32_t>> cp_rows_;  // context parallelism: this rank's tokens and labels
  std::int32_t *tokens_ = nullptr, *labels_ = nullptr;  // [slots][T] (first stage), [T] (last stage)
  bf16* recompute_out_ = nullptr;                       // [Tl, H] a recomputed layer's discarded output
  Fp8Layout fp8_;                                       // the linear layers' shapes, and --precision fp8's buffers
  bool weights_changed_ = true;                         // since the FP8 copies were cast (the next forward casts them)
};

CudaEngine::CudaEngine(const ModelConfig& cfg, const EngineOptions& o)
    : tp_host_(group_of(o.tp_comm)), pp_host_(group_of(o.pp_comm)), cp_host_(group_of(o.cp_comm)), plan_(cfg),
      timer_(o.op_times) {
  check_options(o);
  const auto [devices, sm_count] = select_device(o);
  const int gemm_sms = overlapped_gemm_sms(sm_count, o.comm_sm_margin);  // a bad margin stops before any allocation
  groups_ = host_groups(o, devices);
  plan_ = plan_rank(engine_rank_input(cfg, o, zero1_ ? groups_.shards : nullptr, true));
  slot_shape_.assign(static_cast<std::size_t>(plan_.slots), {0, 0});
  attention_ = std::make_unique<cuda::Attention>(cfg_, tp_, plan_.rank.cp, plan_.rank.cp_rank, plan_.max_batch, plan_.max_seq,
                                                 plan_.cudnn_attention);
  // Everything this rank allocates, in one table (persistent state, activations, workspaces).
  buffers_ = std::make_unique<cuda::DeviceBuffers>(buffer_table(plan_, attention_->workspace_bytes()), alloc_);
  gemm_ = std::make_unique<cuda::Gemm>(buffers_->get<void>(Buf::gemm_workspace),
                                       static_cast<std::size_t>(buffers_->bytes(Buf::gemm_workspace)), o.gemm_autotune);
  ctx_ = std::make_unique<cuda::EngineContext>(cuda::EngineContext{cfg_, tp_, stage_, plan_.local, plan_.rank.cp, plan_.rank.cp_rank, stream_, *gemm_,
                                                                   timer_, buffers_->get<bf16>(Buf::compute_weights),
                                                                   buffers_->get<float>(Buf::gradients)});
  make_device_groups();  // after every allocation: out of memory is the table's, before NCCL reserves its buffers
  bind_units(o, gemm_sms);
  state_->init_on_device(o.seed, o.init_std);
}

void CudaEngine::check_options(const EngineOptions& o) const {
  if (pp_host_) cuda::require_nccl("pipeline parallelism");
  if (tp_host_) cuda::require_nccl("tensor parallelism");
  if (o.max_seq <= 0 || o.max_batch <= 0) throw InternalError("the CUDA engine needs the micro-batch shape up front");
}

std::pair<int, int> CudaEngine::select_device(const EngineOptions& o) {
  require_usable_device("cuda");
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  device_ = o.local_rank % devices;
  CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  device_name_ = prop.name;
  // FP8 tensor cores: sm_89 and later; this build's kernels are sm_90's (CMAKE_CUDA_ARCHITECTURES), so Hopper on.
  if (o.fp8 && prop.major * 10 + prop.minor < 90)
    throw UsageError("--precision fp8 needs a GPU with FP8 tensor cores (Hopper, sm_90, or later); this one is " +
                     device_name_ + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + "): use bf16");
  stream_ = cuda::Stream(cuda::stream_priorities().main);
  return {devices, prop.multiProcessorCount};
}

cuda::ParamGroups CudaEngine::host_groups(const EngineOptions& o, int devices) {
  // Context-parallel ranks that share a GPU exchange through host memory (NCCL refuses them): the optimizer then
  // shards over the data-parallel group only.
  const int device = o.local_rank % devices;
  cp_staged_ = cp_host_ && cuda::stage_through_host(*cp_host_, device);
  cuda::ParamGroups g;
  g.tp = tp_host_, g.pp = pp_host_, g.cp = cp_host_;
  g.zero_over_cp = o.shard_optimizer && cp_host_ && o.shard_comm && !cp_staged_;
  g.shards = group_of(g.zero_over_cp ? o.shard_comm : o.dp_comm);
  zero1_ = g.shards && o.shard_optimizer;
  if (zero1_) cuda::require_nccl("the distributed optimizer");
  g.shards = zero1_ ? g.shards : nullptr;
  // NCCL spans the tensor-, pipeline- and data-parallel groups: each needs a GPU per rank (ncclCommInitRank would
  // refuse with "invalid usage"); said before anything is allocated.
  const bool s = o.shared_gpu_staging;
  tp_staged_ = shares_a_gpu(tp_host_, "--tp " + std::to_string(tp_host_ ? tp_host_->size() : 1) + ": tensor-parallel", device,
                            devices, s);
  pp_staged_ = shares_a_gpu(pp_host_, "--pp " + std::to_string(pp_host_ ? pp_host_->size() : 1) + ": pipeline-parallel",
                            device, devices, s);
  if (zero1_ || group_of(o.dp_comm))
    g.staged_dp = shares_a_gpu(zero1_ ? g.shards : o.dp_comm, "data-parallel", device, devices, s);
  return g;
}

void CudaEngine::make_device_groups() {
  if (cp_host_ && cp_staged_) {
    if (plan_.rank.cp_rank == 0)
      std::fprintf(stderr, "qwen3: the context-parallel ranks share a GPU (or NCCL is not built): their key/value and "
                           "gradient exchanges go through host memory (slow)\n");
    cp_dev_ = cuda::make_host_staged_group(*cp_host_, stream_);
  } else if (cp_host_) {
    cp_dev_ = cuda::make_nccl_group(*cp_host_, stream_, "context parallelism");
  }
  if (tp_host_) {
    tp_dev_ = tp_staged_ ? cuda::make_host_staged_group(*tp_host_, stream_)
                         : cuda::make_nccl_group(*tp_host_, stream_, "tensor parallelism");
    if (tp_.kv_replicas > 1) kv_dev_ = tp_dev_->split(tp_.kv_group(), tp_.rank);
  }
  if (pp_host_) {
    pp_dev_ = pp_staged_ ? cuda::make_host_staged_group(*pp_host_, stream_)
                         : cuda::make_nccl_group(*pp_host_, stream_, "pipeline parallelism");
    if (cfg_.tie_word_embeddings) embed_dev_ = pp_dev_->split(stage_.first || stage_.last ? 0 : 1, pp_host_->rank());
  }
}

void CudaEngine::bind_units(const EngineOptions& o, int gemm_sms) {
  const cuda::DeviceBuffers& b = *buffers_;
  scratch_ = cuda::bind_scratch(b);
  groups_.tp_dev = tp_dev_.get(), groups_.kv_dev = kv_dev_.get(), groups_.embed_dev = embed_dev_.get();
  groups_.cp_dev = cp_dev_.get();
  state_ = std::make_unique<cuda::ParamState>(*ctx_, plan_.full, plan_.owned, plan_.reports, groups_, zero1_, plan_.shard, b, timer_,
                                              cuda::OptimizerOnHost{plan_.recompute.offload_optimizer, o.host_threads});
  fp8_ = fp8_layout(plan_);
  linears_ = std::make_unique<cuda::Linears>(*ctx_, b, fp8_, plan_.fp8, plan_.recompute.fp8_weights_per_layer,
                                             plan_.fp8_delayed, tp_dev_.get(), cp_dev_.get());
  sp_ = std::make_unique<cuda::SequenceParallel>(*ctx_, tp_dev_.get(), b, scratch_, *linears_, tp_dev_ ? gemm_sms : 0);
  attention_->bind(*ctx_, b, scratch_, cp_dev_.get(), o.max_seq);
  blocks_ = std::make_unique<cuda::Qwen3Blocks>(*ctx_, *sp_, *attention_, *linears_, scratch_);
  if (stage_.last)
    head_ = std::make_unique<cuda::LmHead>(*ctx_, *sp_, b, scratch_, tp_host_, cp_host_, state_->partials(), state_->scalar(),
                                           logit_chunk_tokens(plan_.tokens, tp_.vocab));
  const std::int64_t input_elements = plan_.tokens / tp_.size * cfg_.hidden_size;
  offload_ = std::make_unique<cuda::Offloader>(plan_.recompute, stage_.layers(), input_elements, b.get<bf16>(Buf::host_inputs));
  acts_.resize(static_cast<std::size_t>(plan_.slots));
  for (int slot = 0; slot < plan_.slots; ++slot)
    for (std::int64_t i = 0; i < stage_.layers(); ++i)
      acts_[static_cast<std::size_t>(slot)].push_back(cuda::bind_layer(b, slot, static_cast<int>(i), plan_.fp8 ? &fp8_ : nullptr));
  tokens_ = b.get<std::int32_t>(Buf::tokens);
  labels_ = b.get<std::int32_t>(Buf::labels);
  recompute_out_ = b.get<bf16>(Buf::recompute_out);
}

CudaEngine::~CudaEngine() {
  cudaDeviceSynchronize();  // no error check in a destructor: an earlier failure has already been reported
  const std::string times = timer_.report();
  if (!times.empty()) std::fputs(times.c_str(), stderr);
}

std::int64_t CudaEngine::device_used_bytes() const {
  // From the memory tracer's thread: its current device set to this rank's on every call.
  std::size_t free = 0, total = 0;
  if (cudaSetDevice(device_) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return static_cast<std::int64_t>(total - free);
}

std::vector<std::pair<std::string, std::int64_t>> CudaEngine::device_bytes_by_category() const {
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (int c = 0; c < static_cast<int>(cuda::MemCategory::count); ++c)
    out.emplace_back(cuda::category_name(static_cast<cuda::MemCategory>(c)), alloc_.bytes_in_use(static_cast<cuda::MemCategory>(c)));
  return out;
}

cpu::LossSum CudaEngine::forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (pp_host_) throw InternalError("CUDA engine: a pipeline stage runs stage_forward/stage_backward");
  return run(0, &mb, grad_scale, logits_out, kBoth);
}

cpu::LossSum CudaEngine::stage_forward(int micro, const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (!pp_host_) throw InternalError("CUDA engine: stage_forward without pipeline parallelism");
  return run(micro % plan_.slots, &mb, grad_scale, stage_.last ? logits_out : nullptr, kForward);
}

void CudaEngine::stage_backward(int micro) {
  if (!pp_host_) throw InternalError("CUDA engine: stage_backward without pipeline parallelism");
  run(micro % plan_.slots, nullptr, 0.0, nullptr, kBackward);
}

Communicator::Transfer CudaEngine::boundary(Boundary which, int micro, std::int64_t tokens) {
  // Activations cross stages in bf16 (the residual stream's type), gradients in fp32 (dres, which the backward
  // starts from and ends in). The stream orders each transfer after the work that writes or reads its buffer.
  const int slot = micro % plan_.slots;
  const std::int64_t rows = tokens / plan_.rank.cp / tp_.size, H = cfg_.hidden_size;
  Communicator::Transfer t;
  switch (which) {
    case Boundary::input:
      t.data = acts_[static_cast<std::size_t>(slot)][0].x_in, t.bytes = rows * H * sizeof(bf16);
      break;
    case Boundary::output:
      if (stage_.last) throw InternalError("the last pipeline stage has no output activations");
      t.data = buffers_->get<bf16>(Buf::stage_out, slot), t.bytes = rows * H * sizeof(bf16);
      break;
    case Boundary::output_grad:
    case Boundary::input_grad:
      t.data = scratch_.dres, t.bytes = rows * H * sizeof(float);
      break;
  }
  return t;
}

cpu::LossSum CudaEngine::run(int slot, const MicroBatch* mb, double grad_scale, std::vector<float>* logits_out, int part) {
  auto& shape = slot_shape_[static_cast<std::size_t>(slot)];
  if (part & kForward) shape = {mb->batch, mb->seq};
  const auto [B, S_full] = shape;
  if (B * S_full / plan_.rank.cp > plan_.tokens || S_full > plan_.max_seq || B > plan_.max_batch)
    throw InternalError("micro-batch " + std::to_string(B) + "×" + std::to_string(S_full) + " exceeds the engine's sizing");
  check_sequence_layout(B, S_full, tp_.size, plan_.rank.cp, true);
  if (plan_.rank.cp > 1 && (part & kForward)) attention_->set_sequence(S_full);  // RoPE at this rank's positions
  const cuda::MicroDims d = cuda::micro_dims(*ctx_, B, S_full, attention_->rope_cos(), attention_->rope_sin());
  timer_.start(stream_);
  const std::int64_t counted = (part & kForward) ? load_micro_batch(slot, *mb, d) : 0;
  const bool accumulate = state_->begin_micro_batch(tp_host_ || embed_dev_ || cp_host_);
  cpu::LossSum result{0.0, 0};
  if (part & kForward) result = forward(slot, counted, grad_scale, accumulate, logits_out, d);
  if (part & kBackward) backward(slot, accumulate, d);
  return result;
}

std::int64_t CudaEngine::load_micro_batch(int slot, const MicroBatch& mb, const cuda::MicroDims& d) {
  const std::int32_t *tok = mb.tokens, *lab = mb.labels;
  if (plan_.rank.cp > 1) {  // this rank's two chunks of every sequence (model/context_parallel.h)
    cp_rows_.resize(2);
    for (auto& rows : cp_rows_) rows.resize(static_cast<std::size_t>(d.T));
    if (tok) context_parallel_rows(plan_.rank.cp_rank, plan_.rank.cp, d.B, d.S_full, 1, tok, cp_rows_[0].data());  // (first stage only)
    context_parallel_rows(plan_.rank.cp_rank, plan_.rank.cp, d.B, d.S_full, 1, lab, cp_rows_[1].data());
    tok = tok ? cp_rows_[0].data() : nullptr, lab = cp_rows_[1].data();
  }
  const cudaStream_t st = stream_;
  if (stage_.first)
    CUDA_CHECK(cudaMemcpyAsync(tokens_ + slot * plan_.tokens, tok, d.T * sizeof(std::int32_t), cudaMemcpyHostToDevice, st));
  if (stage_.last) CUDA_CHECK(cudaMemcpyAsync(labels_, lab, d.T * sizeof(std::int32_t), cudaMemcpyHostToDevice, st));
  std::int64_t counted = 0;
  for (std::int64_t t = 0; t < d.T; ++t) counted += lab[t] != cpu::kIgnoreLabel;
  return counted;
}

bf16* CudaEngine::layer_output(int slot, std::int64_t l) const {
  if (l + 1 < stage_.last_layer) return acts_[static_cast<std::size_t>(slot)][static_cast<std::size_t>(l + 1 - stage_.first_layer)].x_in;
  return stage_.last ? head_->x_final() : buffers_->get<bf16>(Buf::stage_out, slot);
}

cpu::LossSum CudaEngine::forward(int slot, std::int64_t counted, double grad_scale, bool accumulate,
                                 std::vector<float>* logits_out, const cuda::MicroDims& d) {
  // Each segment's weights may still be in a pending optimizer step (side stream): waited for just before use.
  const bool pending = state_->take_update_pending();
  // FP8 weight copies: kept ones cast once after the weights change (each layer's once its update is done), or per
  // layer before each use (here the forward's row-major ones; the backward casts the transposed ones) — their amaxes
  // taken in the first forward after the change, kept for the step's other casts.
  const bool changed = linears_->fp8() && std::exchange(weights_changed_, false);
  const bool cast_fp8 = changed || (linears_->fp8() && linears_->per_layer());
  auto& acts = acts_[static_cast<std::size_t>(slot)];
  const std::int64_t first = stage_.first_layer;
  if (stage_.first) {  // later stages received their input into acts[0].x_in (boundary())
    state_->wait_segment(0, stream_, pending);
    sp_->embed_forward(tokens_ + slot * plan_.tokens, acts[0].x_in, d);
  }
  for (std::int64_t l = first; l < stage_.last_layer; ++l) {
    state_->wait_segment(static_cast<std::size_t>(1 + l), stream_, pending);
    if (cast_fp8) linears_->cast_weights(l, true, !linears_->per_layer(), changed);
    const std::int64_t next = l + 1 - first;  // the next layer's stage index; its input is this layer's output
    const bool into_next_layer = l + 1 < stage_.last_layer;
    if (into_next_layer) offload_->before_write(next, stream_);  // an offloaded input's buffer is reused
    blocks_->layer_forward(l, acts[static_cast<std::size_t>(l - first)], layer_output(slot, l), d);
    if (into_next_layer) offload_->after_write(slot, next, layer_output(slot, l), stream_);
  }
  offload_->end_forward(stream_);
  if (!stage_.last) return {0.0, 0};
  state_->wait_segment(static_cast<std::size_t>(cfg_.num_layers + 1), stream_, pending);
  state_->wait_zero(stream_);
  return head_->head_forward_backward(labels_, counted, grad_scale, accumulate, logits_out, d);
}

void CudaEngine::backward(int slot, bool accumulate, const cuda::MicroDims& d) {
  // scratch.dres holds d loss / d residual stream (fp32), scratch.dy its bf16 copy; with tensor parallelism each
  // block's output gradient is gathered to T rows and its input gradient reduce-scattered back (sequence_parallel.h).
  state_->wait_zero(stream_);
  if (!stage_.last) {  // the gradient of this stage's output arrived in dres (fp32): its bf16 copy for the GEMMs
    cuda::cast_f32_to_bf16(scratch_.dres, scratch_.dy, d.Tl * d.H, stream_);
    timer_.mark(stream_, "cast received gradient");
  }
  sp_->gather_first_dy(d);
  auto& acts = acts_[static_cast<std::size_t>(slot)];
  const std::int64_t first = stage_.first_layer;
  offload_->prefetch(slot, stage_.last_layer - 1 - first, acts.back().x_in, stream_);
  for (std::int64_t l = stage_.last_layer - 1; l >= first; --l) {
    const std::int64_t index = l - first;
    cuda::LayerActs& a = acts[static_cast<std::size_t>(index)];
    offload_->wait_input(index, stream_);
    if (index > 0) offload_->prefetch(slot, index - 1, acts[static_cast<std::size_t>(index - 1)].x_in, stream_);
    if (linears_->per_layer())  // and a recompute's forward; the amaxes the step's first forward took
      linears_->cast_weights(l, plan_.recompute.full(index), true, false);
    if (plan_.recompute.full(index)) {  // this layer's activations again, from its kept input
      blocks_->layer_forward(l, a, recompute_out_, d);
      timer_.mark(stream_, "(recompute) layer forward");
    } else if (plan_.recompute.selective(index)) {
      blocks_->recompute_selective(l, a, d);
    }
    blocks_->layer_backward(l, a, l > first, accumulate, d);
  }
  if (stage_.first) sp_->embed_backward(tokens_ + slot * plan_.tokens, d);  // later stages send dres back
}

}  // namespace

std::int64_t cuda_device_total_bytes(int local_rank) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, local_rank % devices));
  return static_cast<std::int64_t>(prop.totalGlobalMem);
}

std::string cuda_unusable_reason() {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e == cudaSuccess && devices > 0) return "";
  cudaGetLastError();  // clear the error: the caller may still run on the CPU
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string mask = visible ? std::string(" (CUDA_VISIBLE_DEVICES=\"") + visible + "\")" : "";
  const std::string runtime = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
  switch (e) {
    case cudaSuccess:
    case cudaErrorNoDevice: return "no CUDA device is visible" + mask;
    case cudaErrorInsufficientDriver:
      return "no NVIDIA driver was found, or it is older than this build's CUDA " + runtime + " runtime needs";
    default: return std::string("CUDA cannot start (") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")" + mask;
  }
}

std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const EngineOptions& opts) {
  return std::make_unique<CudaEngine>(cfg, opts);
}

}  // namespace qwen3
