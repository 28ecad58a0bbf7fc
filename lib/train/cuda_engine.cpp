// CUDA engine (see cuda_engine.h): the Qwen3 forward and backward of model/cpu_qwen3.cpp, on the CUDA op families.
#include "train/cuda_engine.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "cuda/check.h"
#ifdef QWEN3_HAVE_CUDNN
#include "cuda/cudnn_attention.h"
#endif
#ifdef QWEN3_HAVE_NCCL
#include "dist/nccl_communicator.h"
#endif
#include "cuda/device_allocator.h"
#include "cuda/gemm.h"
#include "cuda/host_staged_collectives.h"
#include "cuda/op_timer.h"
#include "model/init_stream.h"
#include "model/sequence_layout.h"
#include "model/tensor_parallel.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cpu/rope.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/init.h"
#include "ops/cuda/optimizer.h"
#include "ops/cuda/qk_norm_rope.h"
#include "ops/cuda/rmsnorm.h"

namespace qwen3 {
namespace {

// Throws UsageError when two ranks of `group` (null: none) drive one GPU: NCCL cannot span them. Collective over it.
void require_own_gpus(Communicator* group, const std::string& what, int device, int devices_here) {
  if (!group || group->size() < 2) return;
  const std::string gpu = cuda::shared_gpu(*group, device);
  if (gpu.empty()) return;
  throw UsageError(what + " ranks share one GPU (" + gpu + "): NCCL needs a GPU of its own for every rank of a "
                   "tensor-, pipeline- or data-parallel group. Start one rank per GPU (this host shows " +
                   std::to_string(devices_here) + ": at most " + std::to_string(devices_here) +
                   " ranks per node); only context parallelism (--cp) runs with ranks sharing a GPU, through host memory");
}

using bf16 = __nv_bfloat16;
using cuda::MemCategory;

constexpr std::size_t kGemmWorkspace = 64ull << 20;
constexpr std::int64_t kLogitChunkBytes = 2ll << 30;  // bf16 logits of one token chunk (4096 tokens: one chunk)

// What one decoder layer keeps for its backward. T = tokens of the largest micro-batch; with tensor parallelism the
// residual stream and its norm statistics hold this rank's Tl = T / tp rows (sequence parallelism) and the widths
// (q_dim, kv_dim, heads, I) are this rank's shares; Tl = T and full widths otherwise. The SwiGLU product is
// recomputed in the backward (inside the SwiGLU backward pass, I values per token not stored).
// q|k|v and gate|up are each one GEMM: their weights are adjacent in the parameter table (ParamTable order).
struct LayerActs {
  bf16 *x_in;      // [Tl, H]
  bf16 *qkv;       // [T, q_dim + 2·kv_dim] fused projection output, before q/k norm
  bf16 *q, *k, *v; // [T, heads|kv_heads, head_dim] attention inputs (q, k after norm + RoPE; v a contiguous copy
                   // for the own kernels; null with cuDNN, which reads v inside qkv)
  bf16 *attn;      // [T, q_dim]
  bf16 *x_mid;     // [Tl, H]
  bf16 *h_in, *h_mid;  // [T, H] the two norm outputs, gathered over the sequence (kept: recomputing cost more time)
  bf16 *gate_up;   // [T, 2·I]
  float *rstd_in, *rstd_q, *rstd_k, *lse, *rstd_mid;  // [Tl], [T·heads], [T·kv_heads], [B·heads·lse_rows], [Tl]
};

// Attention dimensions of one micro-batch (tokens of sequence b start at row b·S of every [T, ·] buffer). With
// context parallelism S is this rank's share of each sequence (two chunks) and S_full the whole sequence.
struct AttnDims {
  std::int64_t B, S, heads, kv_heads, head_dim, qd, kvd, qkv_dim, S_full;
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& cfg, const EngineOptions& opts);
  ~CudaEngine() override;
  const ParamTable& params() const override { return full_; }
  std::string device_name() const override { return device_name_; }
  void set_weights(const std::string& name, const std::vector<float>& values) override;
  std::vector<float> weights(const std::string& name) const override { return download(w_, name); }
  std::vector<float> moment(const std::string& name, int which) const override { return download(which == 0 ? m_ : v_, name); }
  void set_moment(const std::string& name, int which, const std::vector<float>& values) override;
  std::int64_t optimizer_steps() const override { return step_; }
  void set_optimizer_steps(std::int64_t steps) override { step_ = steps; }
  std::int64_t shard_begin() const { return shard0_; }
  std::vector<float> gradient(const std::string& name) const override {
    finish_replicated_grads();
    return download(g_, name);
  }
  void zero_grad() override;
  cpu::LossSum forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  cpu::LossSum stage_forward(int micro, const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  void stage_backward(int micro) override;
  Communicator::Transfer boundary(Boundary which, int micro, std::int64_t tokens) override;
  Communicator* pipeline_comm() override;
  void synchronize_pipeline() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  int pipeline_slots() const override { return slots_; }
  void reduce_gradients(Communicator& dp) override;
  double grad_norm() override;
  void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale) override;
  void synchronize() override { CUDA_CHECK(cudaDeviceSynchronize()); }
  std::int64_t device_bytes_in_use() const override { return alloc_.bytes_in_use(); }
  std::int64_t host_pinned_bytes() const override { return host_pinned_bytes_; }
  std::vector<std::pair<std::string, std::int64_t>> device_bytes_by_category() const override;

 private:
  // The full tensor `name` (gathered over the tensor-parallel group) from one of the flat fp32 buffers.
  std::vector<float> download(const float* base, const std::string& name) const;
  // Weights values[n] for flat elements [offset, offset + n): the bf16 copy, and the master copy where in the shard.
  void upload_weights(const float* values, std::int64_t offset, std::int64_t n);
  // The initial weights (model/init.h's values) of this rank's tensors, computed on the device.
  void init_weights_on_device(std::uint64_t seed, double std);
  // Flat elements [offset, offset + n) of the gradient buffer, holding fp32 weights, become the weights: the bf16
  // copy, the master copy where in the shard; the gradient buffer is zeroed again.
  void commit_weights(std::int64_t offset, std::int64_t n);
  // Tensor parallelism: every rank adds its share of the replicated weights' gradients (norms over the whole group,
  // replicated K/V heads over their KV group) in each micro-batch; the sums are reduced once, when the gradients are
  // first read after the last micro-batch (reduce_gradients, grad_norm, optimizer_step, gradient). Reading ends the
  // accumulation: another forward_backward needs zero_grad first.
  void finish_replicated_grads() const;
  enum class Replicated { clean, partial, reduced };
  mutable Replicated replicated_state_ = Replicated::clean;
  const bf16* W(std::size_t idx) const { return wb_ + table_.entries()[idx].offset; }
  // This rank's tensor-parallel part of full tensor `index` (values: the whole tensor).
  std::vector<float> own_part(std::size_t index, const std::vector<float>& values) const;
  float* G(std::size_t idx) const { return g_ + table_.entries()[idx].offset; }
  double device_scalar() const;
  // Attention of one layer: a.q, a.k and v (inside a.qkv) → a.attn, a.lse; backward: dattn_ → dq_, dk_, and dv
  // written straight into its columns of dqkv_.
  void attention_forward(LayerActs& a, const AttnDims& s, const cuda::AttentionShape& as, cudaStream_t st);
  void attention_backward(LayerActs& a, const AttnDims& s, const cuda::AttentionShape& as, cudaStream_t st);
  // Context parallelism (cp_ > 1; causal load balancing, model/cpu_qwen3.h's context_parallel_position): this rank holds
  // chunks r and 2·cp − 1 − r of every sequence. Its local chunk j (0 or 1) attends to every key up to that chunk's
  // end: the cuDNN shape of that call, with q, o and lse at row j·c of this rank's buffers and k|v in cp_kv_full_.
  cuda::SdpaShape cp_chunk_shape(int j, std::int64_t B, std::int64_t S) const;
  // Every rank's keys|values of one layer (k from a.k, v from a.qkv), all-gathered into cp_kv_full_ in sequence order.
  void cp_gather_kv(const LayerActs& a, const AttnDims& s, cudaStream_t st);
  // Moves [B, S, 2·kv] rows between sequence order and rank order ([cp][B][S / cp][2·kv], each rank's two chunks).
  void cp_reorder(const bf16* from, bf16* to, std::int64_t B, std::int64_t S, bool to_sequence_order, cudaStream_t st);
  // Device collectives of the context-parallel group: NCCL, or staged through host memory where its ranks share a GPU.
  void cp_all_gather_bf16(const void* in, void* out, std::size_t count) const;
  void cp_reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count) const;
  void cp_all_reduce_sum(float* data, std::size_t count) const;
  // The RoPE tables at this rank's positions of a sequence of S tokens (context parallelism; uploaded when S changes).
  void cp_rope_tables(std::int64_t S);
  // One micro-batch through this engine's layers: the forward (and, on the last stage, the loss and the output
  // projection's backward), the backward, or both. Activations live in slot `slot`.
  enum Part { kForward = 1, kBackward = 2, kBoth = 3 };
  cpu::LossSum run(int slot, const MicroBatch* mb, double grad_scale, std::vector<float>* logits_out, int part);

  ModelConfig cfg_;
  ParamTable full_;   // Hugging Face names and full shapes (what params() reports)
  Communicator* tp_host_;  // tensor-parallel group, host side (null without tensor parallelism)
  TpDims tp_;         // this rank's share (model/tensor_parallel.h)
  Communicator* pp_host_;  // pipeline group, host side (null without pipeline parallelism)
  Communicator* cp_host_;  // context-parallel group, host side (null without context parallelism)
  int cp_ = 1, cp_rank_ = 0;
  StageRange stage_;       // this rank's layers (all without pipeline parallelism)
  std::vector<bool> owned_;  // per tensor: this stage holds it (all without pipeline parallelism)
  ParamTable table_;  // this rank's tensors: the flat buffers' layout (the full table when tp = 1 and pp = 1; other
                      // stages' tensors hold no elements)
  std::vector<bool> reports_;  // per tensor: this stage's copy is the one weights()/gradient() return
  int slots_ = 1;              // micro-batches in flight on this stage (pipeline: min(pp − stage, micro-batches))
  std::vector<std::pair<std::int64_t, std::int64_t>> slot_shape_;  // (batch, seq) of the micro-batch in each slot
  std::vector<bf16*> stage_out_;  // [slots][Tl, H] a non-last stage's output activations
  std::int64_t max_tokens_, max_batch_, max_seq_, logit_chunk_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  cuda::DeviceAllocator alloc_;
  std::unique_ptr<cuda::Gemm> gemm_;
  float *w_, *g_, *m_, *v_;  // fp32 master weights [Ps], gradients [P], AdamW moments [Ps]
  // Distributed optimizer (ZeRO-1, EngineOptions::shard_optimizer with data parallelism): each of the dp replicas
  // keeps the master weights and AdamW moments of elements [shard0_, shard0_ + shard_n_) of the flat buffers (padded
  // to dp · shard_n_); gradients are reduce-scattered to those elements, AdamW updates them, and the bf16 weights are
  // all-gathered. Without it shard0_ = 0 and shard_n_ = P.
  // The shards span dp_host_: the data-parallel group, or with EngineOptions::shard_comm the data × context-parallel
  // group (zero_over_cp_: its reduce-scatter also sums over the context-parallel ranks, which then skip their own
  // gradient all-reduce).
  Communicator* dp_host_ = nullptr;
  bool zero1_ = false, zero_over_cp_ = false, grads_scattered_ = false;
  std::int64_t shard0_ = 0, shard_n_ = 0, padded_ = 0;
  bf16* wb_;                 // [P] bf16 compute copy of the weights
  cuda::AdamWChunk* chunks_;
  int n_chunks_;
  // The optimizer overlaps the next forward: AdamW runs on a low-priority side stream in forward order, one segment
  // per event — segment 0 the embedding, 1 + l layer l, L + 1 the final norm (and an untied output projection) — and
  // the forward waits for each segment just before it uses those weights. zero_grad's memsets follow on that stream.
  cudaStream_t opt_stream_ = nullptr;
  std::vector<std::pair<int, int>> segments_;  // (first chunk, chunk count) per segment
  std::vector<cudaEvent_t> segment_done_;
  cudaEvent_t grads_ready_ = nullptr, zero_done_ = nullptr;
  bool update_pending_ = false, zero_pending_ = false;
  std::vector<std::vector<LayerActs>> acts_;  // [slot][layer − stage's first]
  // Recomputation (EngineOptions::recompute, model/recompute.h). Full: a recomputed layer keeps only x_in; every
  // other LayerActs field of every such layer points into one shared layer's buffers, which the backward refills
  // (forward again, output to recompute_out_) just before the layer's backward. Selective: h_in, h_mid, q and k of
  // every layer point into one shared set, refilled before each layer's backward.
  RecomputePolicy recompute_;
  bf16* recompute_out_ = nullptr;
  // Offloaded inputs (full recomputation with offload_inputs): the x_in of a recomputed layer but the stage's first is
  // one of two device buffers (ring_[index % 2], shared by all slots); the forward copies it to its pinned host place
  // on offload_stream_ while the layer runs (the buffer is written again two layers on, after that copy), and the
  // backward copies it back while the layer above runs its backward.
  bf16* ring_[2] = {nullptr, nullptr};
  bf16* host_inputs_ = nullptr;  // pinned [slots][offloaded layers: index 1 … n_offloaded_][max Tl, H]
  std::int64_t host_pinned_bytes_ = 0, n_offloaded_ = 0;
  cudaStream_t offload_stream_ = nullptr;
  cudaEvent_t to_host_[2] = {nullptr, nullptr}, to_device_[2] = {nullptr, nullptr}, offload_fork_ = nullptr;
  bf16* host_input(int slot, std::int64_t index) const {
    return host_inputs_ + (slot * n_offloaded_ + index - 1) * (max_tokens_ / tp_.size) * cfg_.hidden_size;
  }
  bf16 *x_final_, *hf_, *act_, *logits_, *g_bf_, *dattn_, *dq_, *dk_, *dv_, *dqkv_, *dact_, *dgate_up_;
  float *rstd_f_, *row_loss_, *dres_, *dh_;
  float *rope_cos_, *rope_sin_;  // [max_seq / cp, head_dim/2] RoPE tables (ops/cpu/rope.h's values) at this rank's positions
  // Context parallelism: this rank's keys|values [T, 2·kv]; every rank's in rank order, in sequence order, and the
  // gradients in sequence order of the second and the first local chunk's attention [cp·T, 2·kv] each (bf16).
  bf16 *cp_kv_local_ = nullptr, *cp_kv_ranks_ = nullptr, *cp_kv_full_ = nullptr, *cp_dkv_ = nullptr, *cp_dkv_first_ = nullptr;
  std::int64_t cp_rope_seq_ = 0;  // the sequence length the RoPE tables were uploaded for
  std::vector<std::int32_t> cp_tokens_, cp_labels_;  // this rank's tokens and labels of the current micro-batch
  std::unique_ptr<cuda::HostStagedCollectives> cp_staged_;
  std::int32_t *tokens_, *labels_;  // [slots][T] (the first stage keeps each in-flight micro-batch's), [T]
  void* attn_ws_ = nullptr;  // the own attention kernels' backward workspace
#ifdef QWEN3_HAVE_CUDNN
  // Fused attention through cuDNN (cuda/cudnn_attention.h) unless QWEN3_ATTENTION=own or cuDNN has no engine for
  // the shape; then the project's own kernels (ops/cuda/attention.h).
  std::unique_ptr<cuda::CudnnAttention> cudnn_;
  void* cudnn_ws_ = nullptr;
  std::size_t cudnn_ws_bytes_ = 0;
#endif
  bool use_cudnn_ = false;
  // Sequence-parallel buffers (tp > 1): the residual stream and norms hold Tl = T / tp rows per rank.
  bf16 *h_local_ = nullptr, *partial_bf_ = nullptr, *sum_local_ = nullptr;
  float *dh_local_ = nullptr, *dres_full_ = nullptr, *ce_m_ = nullptr, *ce_mg_ = nullptr, *ce_z_ = nullptr,
        *ce_t_ = nullptr;
  // The backward's sequence-parallel collectives run on comm_stream_ (highest priority): after a block's data-gradient
  // GEMM, its reduce-scatter, the norm backward and the next block's all-gather overlap this block's weight-gradient
  // GEMMs on the main stream, which may be held to fewer SMs (QWEN3_COMM_SM_MARGIN) to leave room for NCCL. The
  // gathered gradient alternates between two buffers: one is read by those GEMMs while the next is gathered.
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  int gemm_sms_overlapped_ = 0;  // SM target of the overlapped GEMMs (0: all)
  bf16* g_gathered_[2] = {nullptr, nullptr};
  std::vector<std::size_t> replicated_;     // norm weights: every rank holds them whole and adds a partial gradient
  std::vector<std::size_t> kv_replicated_;  // k_proj, v_proj when tp exceeds the KV heads: held by each KV group
#ifdef QWEN3_HAVE_NCCL
  std::unique_ptr<NcclCommunicator> tp_nccl_;  // the same group, device side
  std::unique_ptr<NcclCommunicator> kv_nccl_;  // the ranks sharing this rank's KV heads (tp > KV heads only)
  std::unique_ptr<NcclCommunicator> pp_nccl_;  // the pipeline group: stage-boundary transfers on the main stream
  std::unique_ptr<NcclCommunicator> embed_nccl_;  // tied embeddings, pp > 1: the first and last stages
  std::unique_ptr<NcclCommunicator> dp_nccl_;  // gradient all-reduce across data-parallel replicas, made on first use
  std::unique_ptr<NcclCommunicator> cp_nccl_;  // the context-parallel group (unless its ranks share a GPU)
#endif
  double *partial_, *scalar_;
  std::int64_t step_ = 0;
  // Gradients that no GEMM overwrites (norm weights, an untied embedding: scatter-added) are zeroed by zero_grad();
  // the GEMM-written ones are overwritten by the first backward after it (β = 0), which saves a pass over them.
  std::vector<std::size_t> zeroed_by_memset_;
  bool overwrite_grads_ = false;
  cuda::OpTimer timer_;  // QWEN3_CUDA_OP_TIMES=1: per-operation GPU time, printed at exit
};

CudaEngine::CudaEngine(const ModelConfig& cfg, const EngineOptions& o)
    : cfg_(cfg),
      full_(cfg),
      tp_host_(o.tp_comm && o.tp_comm->size() > 1 ? o.tp_comm : nullptr),
      tp_(tp_dims(cfg, tp_host_ ? tp_host_->rank() : 0, tp_host_ ? tp_host_->size() : 1)),
      pp_host_(o.pp_comm && o.pp_comm->size() > 1 ? o.pp_comm : nullptr),
      cp_host_(o.cp_comm && o.cp_comm->size() > 1 ? o.cp_comm : nullptr),
      cp_(cp_host_ ? cp_host_->size() : 1),
      cp_rank_(cp_host_ ? cp_host_->rank() : 0),
      stage_(pp_host_ ? o.stage : StageRange{0, cfg.num_layers, true, true}),
      owned_(stage_tensors(full_, stage_)),
      table_(ParamTable(cfg, tp_.q_dim, tp_.kv_dim, tp_.inter, tp_.vocab).restricted(owned_)),
      reports_(owned_) {
  cfg_.validate();
  if (pp_host_) {
#ifndef QWEN3_HAVE_NCCL
    throw UsageError("pipeline parallelism with --device cuda needs NCCL, which this build did not find");
#endif
    slots_ = std::min(pp_host_->size() - pp_host_->rank(), std::max(1, o.micro_batches));
    const bool first = pp_host_->rank() == 0, last = pp_host_->rank() + 1 == pp_host_->size();
    if (stage_.layers() < 1 || stage_.first_layer < 0 || stage_.last_layer > cfg.num_layers || stage_.first != first ||
        stage_.last != last)
      throw InternalError("CUDA engine: pipeline stage " + std::to_string(pp_host_->rank()) + " given layers [" +
                          std::to_string(stage_.first_layer) + ", " + std::to_string(stage_.last_layer) + ")");
    if (cfg.tie_word_embeddings && !stage_.first) reports_[full_.embed] = false;
  }
  slot_shape_.assign(static_cast<std::size_t>(slots_), {0, 0});
  if (o.max_seq <= 0 || o.max_batch <= 0) throw InternalError("the CUDA engine needs the micro-batch shape up front");
  check_sequence_layout(o.max_batch, o.max_seq, tp_.size, cp_, true);
#ifndef QWEN3_HAVE_NCCL
  if (tp_host_) throw UsageError("tensor parallelism with --device cuda needs NCCL, which this build did not find");
#endif
  require_usable_device("cuda");
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  CUDA_CHECK(cudaSetDevice(o.local_rank % devices));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, o.local_rank % devices));
  device_name_ = prop.name;
  int least_priority = 0, greatest_priority = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least_priority, &greatest_priority));
  // Priorities: the backward's collectives first, then the main stream, the optimizer's side stream last.
  const int main_priority = greatest_priority < least_priority ? greatest_priority + 1 : greatest_priority;
  CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, main_priority));
  CUDA_CHECK(cudaStreamCreateWithPriority(&opt_stream_, cudaStreamNonBlocking, least_priority));
  CUDA_CHECK(cudaEventCreateWithFlags(&grads_ready_, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&zero_done_, cudaEventDisableTiming));

  max_batch_ = o.max_batch;
  max_seq_ = o.max_seq;
  const std::int64_t T = max_tokens_ = o.max_batch * o.max_seq / cp_, Tl = T / tp_.size;  // this rank's tokens
  const std::int64_t P = table_.total_elements(), H = cfg.hidden_size, I = tp_.inter;
  const std::int64_t qd = tp_.q_dim, kvd = tp_.kv_dim, V = tp_.vocab, nh = tp_.heads, nkv = tp_.kv_heads;
  logit_chunk_ = std::max<std::int64_t>(1, std::min(T, kLogitChunkBytes / (2 * V)));

  // Persistent state first: weights, gradients, optimizer — then activations, then workspaces.
  // Context-parallel ranks that share a GPU exchange through host memory (NCCL refuses them): the optimizer then
  // shards over the data-parallel group only.
#ifdef QWEN3_HAVE_NCCL
  const bool cp_shared = cp_host_ && cuda::ranks_share_a_gpu(*cp_host_, o.local_rank % devices);
#else
  const bool cp_shared = cp_host_ != nullptr;
#endif
  zero_over_cp_ = o.shard_optimizer && cp_host_ && o.shard_comm && !cp_shared;
  Communicator* shard_group = zero_over_cp_ ? o.shard_comm : o.dp_comm;
  dp_host_ = shard_group && shard_group->size() > 1 ? shard_group : nullptr;
  zero1_ = dp_host_ && o.shard_optimizer;
  if (zero1_) {
#ifndef QWEN3_HAVE_NCCL
    throw UsageError("the distributed optimizer with --device cuda needs NCCL, which this build did not find");
#endif
    const std::int64_t d = dp_host_->size();
    shard_n_ = ((P + d - 1) / d + 63) / 64 * 64;  // float4-aligned shards
    padded_ = shard_n_ * d;
    shard0_ = shard_n_ * dp_host_->rank();
  } else {
    shard_n_ = padded_ = P;
  }
  // NCCL spans the tensor-, pipeline- and data-parallel groups: each needs a GPU per rank (ncclCommInitRank would
  // refuse with "invalid usage"); said before anything is allocated.
  require_own_gpus(tp_host_, "--tp " + std::to_string(tp_.size) + ": tensor-parallel", o.local_rank % devices, devices);
  require_own_gpus(pp_host_, "--pp " + std::to_string(pp_host_ ? pp_host_->size() : 1) + ": pipeline-parallel",
                   o.local_rank % devices, devices);
  if (zero1_ || (o.dp_comm && o.dp_comm->size() > 1))
    require_own_gpus(zero1_ ? dp_host_ : o.dp_comm, "data-parallel", o.local_rank % devices, devices);
  const std::string shard = zero1_ ? zero_over_cp_ ? " (this data/context-parallel rank's shard)" : " (this data-parallel rank's shard)" : "";
  w_ = alloc_.allocate<float>(MemCategory::weights, shard_n_, "fp32 master weights" + shard);
  wb_ = alloc_.allocate<bf16>(MemCategory::weights, padded_, "bf16 compute weights");
  g_ = alloc_.allocate<float>(MemCategory::gradients, padded_, "fp32 gradients");
  m_ = alloc_.allocate<float>(MemCategory::optimizer_state, shard_n_, "AdamW first moment" + shard);
  v_ = alloc_.allocate<float>(MemCategory::optimizer_state, shard_n_, "AdamW second moment" + shard);
  // Chunks grouped by forward segment (the table's order is embedding, layers 0..L-1, final norm, output projection).
  std::vector<std::vector<cuda::AdamWChunk>> by_segment(static_cast<std::size_t>(cfg.num_layers + 2));
  {
    std::vector<int> segment_of(table_.entries().size(), static_cast<int>(cfg.num_layers + 1));
    segment_of[table_.embed] = 0;
    for (std::int64_t l = 0; l < cfg.num_layers; ++l) {
      const auto& p = table_.layers[l];
      for (std::size_t i : {p.q_proj, p.k_proj, p.v_proj, p.o_proj, p.q_norm, p.k_norm, p.gate_proj, p.up_proj,
                            p.down_proj, p.input_norm, p.post_norm})
        segment_of[i] = static_cast<int>(1 + l);
    }
    for (std::size_t i = 0; i < table_.entries().size(); ++i) {
      const auto& p = table_.entries()[i];  // the part in this rank's shard, in shard coordinates
      const std::int64_t b = std::max(p.offset, shard0_), e = std::min(p.offset + p.numel, shard0_ + shard_n_);
      if (e > b) by_segment[segment_of[i]].push_back({b - shard0_, e - shard0_, p.decay ? 1 : 0});
    }
  }
  std::vector<cuda::AdamWChunk> chunks;
  for (const auto& tensors : by_segment) {
    const auto seg = cuda::make_adamw_chunks(tensors);
    segments_.emplace_back(static_cast<int>(chunks.size()), static_cast<int>(seg.size()));
    chunks.insert(chunks.end(), seg.begin(), seg.end());
    segment_done_.emplace_back();
    CUDA_CHECK(cudaEventCreateWithFlags(&segment_done_.back(), cudaEventDisableTiming));
  }
  n_chunks_ = static_cast<int>(chunks.size());
  chunks_ = alloc_.allocate<cuda::AdamWChunk>(MemCategory::optimizer_state, n_chunks_, "AdamW chunk table");
  CUDA_CHECK(cudaMemcpy(chunks_, chunks.data(), chunks.size() * sizeof(cuda::AdamWChunk), cudaMemcpyHostToDevice));

  // The fused q|k|v and gate|up GEMMs rely on these weights (and gradients) being adjacent in the flat buffers.
  for (const auto& p : table_.layers) {
    const auto& e = table_.entries();
    QWEN3_ASSERT(e[p.k_proj].offset == e[p.q_proj].offset + e[p.q_proj].numel &&
                     e[p.v_proj].offset == e[p.k_proj].offset + e[p.k_proj].numel &&
                     e[p.up_proj].offset == e[p.gate_proj].offset + e[p.gate_proj].numel,
                 "q|k|v and gate|up weights must be adjacent in the parameter table");
  }
#ifdef QWEN3_HAVE_CUDNN
  const char* attention_choice = std::getenv("QWEN3_ATTENTION");
  if (attention_choice == nullptr || std::strcmp(attention_choice, "own") != 0) {
    try {
      cudnn_ = std::make_unique<cuda::CudnnAttention>();
      if (cp_ == 1)
        cudnn_ws_bytes_ = cudnn_->workspace_bytes({o.max_batch, o.max_seq, nh, nkv, cfg.head_dim, qd, kvd, qd + 2 * kvd, qd});
      else  // this rank's two chunk-attention calls
        cudnn_ws_bytes_ = std::max(cudnn_->workspace_bytes(cp_chunk_shape(0, o.max_batch, o.max_seq)),
                                   cudnn_->workspace_bytes(cp_chunk_shape(1, o.max_batch, o.max_seq)));
      use_cudnn_ = true;
    } catch (const InternalError& e) {
      std::fprintf(stderr, "qwen3: cuDNN fused attention unavailable (%s); using the own attention kernels\n", e.what());
      cudnn_.reset();
    }
  }
#endif
  if (cp_ > 1 && !use_cudnn_)
    throw UsageError("--cp " + std::to_string(cp_) + " with --device cuda needs cuDNN fused attention (the project's own "
                     "attention kernels attend whole sequences only); unset QWEN3_ATTENTION=own or use a cuDNN build");
  const auto A = MemCategory::activations;
  acts_.resize(static_cast<std::size_t>(slots_));
  recompute_ = o.recompute;
  recompute_.validate();
  const std::int64_t L = stage_.layers();
  if (recompute_.offload_inputs && recompute_.full_layers(L) > 1) {
    n_offloaded_ = recompute_.full_layers(L) - 1;
    host_pinned_bytes_ = static_cast<std::int64_t>(slots_) * n_offloaded_ * Tl * H * static_cast<std::int64_t>(sizeof(bf16));
    if (cudaHostAlloc(reinterpret_cast<void**>(&host_inputs_), static_cast<std::size_t>(host_pinned_bytes_),
                      cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      throw UsageError("--offload-inputs: could not pin " + std::to_string(host_pinned_bytes_ >> 20) +
                       " MiB of host memory for the offloaded layer inputs");
    }
    int least = 0, greatest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&offload_stream_, cudaStreamNonBlocking, least));
    for (int i = 0; i < 2; ++i) {
      CUDA_CHECK(cudaEventCreateWithFlags(&to_host_[i], cudaEventDisableTiming));
      CUDA_CHECK(cudaEventCreateWithFlags(&to_device_[i], cudaEventDisableTiming));
      CUDA_CHECK(cudaEventRecord(to_host_[i], offload_stream_));  // nothing pending yet
      CUDA_CHECK(cudaEventRecord(to_device_[i], offload_stream_));
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&offload_fork_, cudaEventDisableTiming));
  }
  LayerActs shared{};     // full recomputation: the one layer whose activations are recomputed
  LayerActs shared_sel{}; // selective: the norm outputs and q, k being recomputed
  for (int slot = 0; slot < slots_; ++slot)
  for (std::int64_t l = stage_.first_layer; l < stage_.last_layer; ++l) {
    const std::int64_t index = l - stage_.first_layer;
    LayerActs a{};
    const std::string what = "layer " + std::to_string(l) + " activations" +
                             (slots_ > 1 ? " (micro-batch slot " + std::to_string(slot) + ")" : "");
    if (recompute_.offloaded(index)) {
      bf16*& ring = ring_[index % 2];
      if (ring == nullptr) ring = alloc_.allocate<bf16>(A, Tl * H, "layer input on its way to or from the host");
      a.x_in = ring;
    } else {
      a.x_in = alloc_.allocate<bf16>(A, Tl * H, what);
    }
    const bool full = recompute_.full(index), sel = recompute_.selective(index);
    if (full && shared.qkv != nullptr) {  // every field but x_in shared
      bf16* x_in = a.x_in;
      a = shared;
      a.x_in = x_in;
      acts_[static_cast<std::size_t>(slot)].push_back(a);
      continue;
    }
    a.qkv = alloc_.allocate<bf16>(A, T * (qd + 2 * kvd), what);
    if (sel && shared_sel.q != nullptr) {
      a.q = shared_sel.q, a.k = shared_sel.k, a.h_in = shared_sel.h_in, a.h_mid = shared_sel.h_mid;
    } else {
      a.q = alloc_.allocate<bf16>(A, T * qd, what);
      a.k = alloc_.allocate<bf16>(A, T * kvd, what);
      a.h_in = alloc_.allocate<bf16>(A, T * H, what);
      a.h_mid = alloc_.allocate<bf16>(A, T * H, what);
      if (sel) shared_sel = a;
    }
    a.v = use_cudnn_ ? nullptr : alloc_.allocate<bf16>(A, T * kvd, what);
    a.attn = alloc_.allocate<bf16>(A, T * qd, what);
    a.x_mid = alloc_.allocate<bf16>(A, Tl * H, what);
    a.gate_up = alloc_.allocate<bf16>(A, T * 2 * I, what);
    a.rstd_in = alloc_.allocate<float>(A, Tl, what);
    a.rstd_q = alloc_.allocate<float>(A, T * nh, what);
    a.rstd_k = alloc_.allocate<float>(A, T * nkv, what);
    a.lse = alloc_.allocate<float>(A, o.max_batch * nh * lse_rows(o.max_seq, cp_), what);
    a.rstd_mid = alloc_.allocate<float>(A, Tl, what);
    acts_[static_cast<std::size_t>(slot)].push_back(a);
    if (full) shared = a;
  }
  if (recompute_.full_layers(L) > 0) recompute_out_ = alloc_.allocate<bf16>(A, Tl * H, "recomputed layer output (discarded)");
  if (!stage_.last)
    for (int slot = 0; slot < slots_; ++slot)
      stage_out_.push_back(alloc_.allocate<bf16>(A, Tl * H, "stage output (sent to the next stage)"));
  // The output projection and loss: on the last stage only (with pipeline parallelism), as the labels; token ids on
  // the first (embedding), one micro-batch per slot.
  x_final_ = hf_ = logits_ = nullptr;
  rstd_f_ = row_loss_ = nullptr;
  tokens_ = labels_ = nullptr;
  if (stage_.last) {
    x_final_ = alloc_.allocate<bf16>(A, Tl * H, "final hidden state");
    hf_ = alloc_.allocate<bf16>(A, T * H, "final norm output");
    rstd_f_ = alloc_.allocate<float>(A, Tl, "final norm statistics");
  }
  const auto S = MemCategory::workspace;
  act_ = alloc_.allocate<bf16>(S, T * I, "SwiGLU scratch");
  if (stage_.last) {
    logits_ = alloc_.allocate<bf16>(S, logit_chunk_ * V, "logits of one token chunk");
    row_loss_ = alloc_.allocate<float>(S, T, "per-token loss");
  }
  dres_ = alloc_.allocate<float>(S, Tl * H, "residual-stream gradient");
  dh_ = alloc_.allocate<float>(S, T * H, "norm-output gradient");
  g_bf_ = alloc_.allocate<bf16>(S, T * std::max(H, qd), "bf16 gradient scratch");
  dattn_ = alloc_.allocate<bf16>(S, T * qd, "attention-output gradient");
  dq_ = alloc_.allocate<bf16>(S, T * qd, "query gradient");
  dk_ = alloc_.allocate<bf16>(S, T * kvd, "key gradient");
  dv_ = alloc_.allocate<bf16>(S, T * kvd, "value gradient");
  dqkv_ = alloc_.allocate<bf16>(S, T * (qd + 2 * kvd), "q|k|v projection gradient");
  dact_ = alloc_.allocate<bf16>(S, T * I, "SwiGLU-output gradient");
  dgate_up_ = alloc_.allocate<bf16>(S, T * 2 * I, "gate|up gradient");
  rope_cos_ = alloc_.allocate<float>(S, o.max_seq / cp_ * (cfg.head_dim / 2), "RoPE cos table");
  rope_sin_ = alloc_.allocate<float>(S, o.max_seq / cp_ * (cfg.head_dim / 2), "RoPE sin table");
  if (cp_ > 1) {
    const std::int64_t kv2 = 2 * kvd;
    cp_kv_local_ = alloc_.allocate<bf16>(S, T * kv2, "keys|values of this rank (context parallel)");
    cp_kv_ranks_ = alloc_.allocate<bf16>(S, cp_ * T * kv2, "keys|values of every context-parallel rank");
    cp_kv_full_ = alloc_.allocate<bf16>(S, cp_ * T * kv2, "keys|values in sequence order");
    cp_dkv_ = alloc_.allocate<bf16>(S, cp_ * T * kv2, "key|value gradients in sequence order");
    cp_dkv_first_ = alloc_.allocate<bf16>(S, cp_ * T * kv2, "key|value gradients of the first local chunk");
    if (cp_shared) {
      if (cp_rank_ == 0)
        std::fprintf(stderr, "qwen3: the context-parallel ranks share a GPU (or NCCL is not built): their key/value and "
                             "gradient exchanges go through host memory (slow)\n");
      cp_staged_ = std::make_unique<cuda::HostStagedCollectives>(*cp_host_);
    }
#ifdef QWEN3_HAVE_NCCL
    else {
      cp_nccl_ = std::make_unique<NcclCommunicator>(*cp_host_);
      cp_nccl_->set_stream(stream_);
    }
#endif
  }
  if (stage_.first) tokens_ = alloc_.allocate<std::int32_t>(S, T * slots_, "token ids");
  if (stage_.last) labels_ = alloc_.allocate<std::int32_t>(S, T, "labels");
  if (tp_host_) {
    h_local_ = alloc_.allocate<bf16>(S, Tl * H, "sequence-parallel norm output");
    partial_bf_ = alloc_.allocate<bf16>(S, T * H, "row-parallel partial sums");
    sum_local_ = alloc_.allocate<bf16>(S, Tl * H, "reduce-scattered rows");
    for (bf16*& g : g_gathered_) g = alloc_.allocate<bf16>(S, T * H, "gathered residual gradient (bf16)");
    dh_local_ = alloc_.allocate<float>(S, Tl * H, "reduce-scattered norm-output gradient");
    if (stage_.first) dres_full_ = alloc_.allocate<float>(S, T * H, "gathered residual gradient (fp32)");
    if (stage_.last)
      for (float** p : {&ce_m_, &ce_mg_, &ce_z_, &ce_t_})
        *p = alloc_.allocate<float>(S, logit_chunk_, "vocabulary-parallel cross-entropy statistics");
    for (const auto& l : table_.layers) replicated_.insert(replicated_.end(), {l.input_norm, l.post_norm, l.q_norm, l.k_norm});
    replicated_.push_back(table_.final_norm);
#ifdef QWEN3_HAVE_NCCL
    tp_nccl_ = std::make_unique<NcclCommunicator>(*tp_host_);
    tp_nccl_->set_stream(stream_);
    if (tp_.kv_replicas > 1) {
      for (const auto& l : table_.layers) kv_replicated_.insert(kv_replicated_.end(), {l.k_proj, l.v_proj});
      std::unique_ptr<Communicator> kv = tp_nccl_->split(tp_.kv_group(), tp_.rank);
      kv_nccl_.reset(dynamic_cast<NcclCommunicator*>(kv.release()));
      QWEN3_ASSERT(kv_nccl_ != nullptr, "NcclCommunicator::split returns an NcclCommunicator");
      kv_nccl_->set_stream(stream_);
    }
    CUDA_CHECK(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest_priority));
    CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
    if (const char* margin = std::getenv("QWEN3_COMM_SM_MARGIN")) {
      const int m = std::atoi(margin);
      if (m < 0 || m >= prop.multiProcessorCount)
        throw UsageError("QWEN3_COMM_SM_MARGIN=" + std::string(margin) + ": expected 0 to " +
                         std::to_string(prop.multiProcessorCount - 1) + " SMs");
      gemm_sms_overlapped_ = m > 0 ? prop.multiProcessorCount - m : 0;
    }
#endif
  }
#ifdef QWEN3_HAVE_NCCL
  if (pp_host_) {
    pp_nccl_ = std::make_unique<NcclCommunicator>(*pp_host_);
    pp_nccl_->set_stream(stream_);
    if (cfg.tie_word_embeddings) {
      std::unique_ptr<Communicator> e = pp_nccl_->split(stage_.first || stage_.last ? 0 : 1, pp_host_->rank());
      embed_nccl_.reset(dynamic_cast<NcclCommunicator*>(e.release()));
      embed_nccl_->set_stream(stream_);
    }
  }
#endif
  const cuda::AttentionShape ashape{o.max_batch, o.max_seq, nh, nkv, cfg.head_dim};
  if (!use_cudnn_)
    attn_ws_ = alloc_.allocate(S, static_cast<std::int64_t>(cuda::attention_backward_workspace_bytes(ashape)), "attention workspace");
#ifdef QWEN3_HAVE_CUDNN
  if (use_cudnn_) cudnn_ws_ = alloc_.allocate(S, static_cast<std::int64_t>(cudnn_ws_bytes_), "cuDNN attention workspace");
#endif
  partial_ = alloc_.allocate<double>(S, cuda::kNormBlocks, "reduction partials");
  scalar_ = alloc_.allocate<double>(S, 1, "reduction result");
  gemm_ = std::make_unique<cuda::Gemm>(alloc_.allocate(S, kGemmWorkspace, "cuBLASLt workspace"), kGemmWorkspace);

  if (cp_ == 1) {  // positions 0 … max_seq − 1; with context parallelism per sequence length (cp_rope_tables)
    const cpu::RopeTable rope = cpu::rope_table(o.max_seq, cfg.head_dim, cfg.rope_theta);
    CUDA_CHECK(cudaMemcpy(rope_cos_, rope.cos.data(), rope.cos.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(rope_sin_, rope.sin.data(), rope.sin.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  std::vector<bool> gemm_written(table_.entries().size(), false);
  for (const auto& p : table_.layers)
    for (std::size_t i : {p.q_proj, p.k_proj, p.v_proj, p.o_proj, p.gate_proj, p.up_proj, p.down_proj}) gemm_written[i] = true;
  gemm_written[table_.lm_head] = true;  // the output projection's GEMM runs before the embedding's scatter-add
  if (table_.lm_head != table_.embed) gemm_written[table_.embed] = false;
  for (std::size_t i = 0; i < gemm_written.size(); ++i)  // a pipeline stage's micro-batches interleave: memset all
    if ((!gemm_written[i] || pp_host_) && table_.entries()[i].numel > 0) zeroed_by_memset_.push_back(i);
  CUDA_CHECK(cudaMemset(g_, 0, padded_ * sizeof(float)));
  CUDA_CHECK(cudaMemset(wb_, 0, padded_ * sizeof(bf16)));

  init_weights_on_device(o.seed, o.init_std);
}

void CudaEngine::init_weights_on_device(std::uint64_t seed, double std) {
  // The same values as every other backend (model/init.h), only this rank's shard of each tensor computed (its rows,
  // its columns, or all of a replicated one), on the GPU: the host would take minutes for the larger models.
  CUDA_CHECK(cudaDeviceSynchronize());
  for (std::size_t i = 0; i < full_.entries().size(); ++i) {
    const auto& f = full_.entries()[i];
    if (!owned_[i]) continue;  // another pipeline stage's
    float* out = g_ + table_.entries()[i].offset;
    const ShardSpec sh = shard_spec(full_, i, tp_);
    const std::int64_t rows = f.shape.size() < 2 ? 1 : f.shape[0], cols = f.numel / rows;
    const std::int64_t r0 = sh.dim == 0 ? sh.begin : 0, nr = sh.dim == 0 ? sh.count : rows;
    const std::int64_t c0 = sh.dim == 1 ? sh.begin : 0, nc = sh.dim == 1 ? sh.count : cols;
    QWEN3_ASSERT(nr * nc == table_.entries()[i].numel, "a tensor-parallel shard's size");
    if (f.shape.size() < 2)
      cuda::fill(out, nr * nc, 1.0f, stream_);
    else
      cuda::init_normal_block(out, nr, nc, r0, c0, cols, init_stream_start(seed, i), std, stream_);
  }
  commit_weights(0, table_.total_elements());
}

void CudaEngine::upload_weights(const float* values, std::int64_t offset, std::int64_t n) {
  CUDA_CHECK(cudaDeviceSynchronize());  // no optimizer step may still be writing these weights
  CUDA_CHECK(cudaMemcpyAsync(g_ + offset, values, n * sizeof(float), cudaMemcpyHostToDevice, stream_));  // ordered before the cast
  commit_weights(offset, n);
}

void CudaEngine::commit_weights(std::int64_t offset, std::int64_t n) {
  // From the gradient buffer (unused outside a step): the bf16 copy of all n, the master copy of this rank's shard.
  cuda::cast_f32_to_bf16(g_ + offset, wb_ + offset, n, stream_);
  const std::int64_t b = std::max(offset, shard0_), e = std::min(offset + n, shard0_ + shard_n_);
  if (e > b)
    CUDA_CHECK(cudaMemcpyAsync(w_ + (b - shard0_), g_ + b, (e - b) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  CUDA_CHECK(cudaMemsetAsync(g_ + offset, 0, n * sizeof(float), stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaEngine::~CudaEngine() {
  cudaDeviceSynchronize();  // no error check in a destructor: an earlier failure has already been reported
  const std::string times = timer_.report();
  if (!times.empty()) std::fputs(times.c_str(), stderr);
  for (auto e : segment_done_) cudaEventDestroy(e);
  if (grads_ready_) cudaEventDestroy(grads_ready_);
  if (zero_done_) cudaEventDestroy(zero_done_);
  if (fork_) cudaEventDestroy(fork_);
  if (join_) cudaEventDestroy(join_);
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
  for (int i = 0; i < 2; ++i) {
    if (to_host_[i]) cudaEventDestroy(to_host_[i]);
    if (to_device_[i]) cudaEventDestroy(to_device_[i]);
  }
  if (offload_fork_) cudaEventDestroy(offload_fork_);
  if (offload_stream_) cudaStreamDestroy(offload_stream_);
  if (host_inputs_) cudaFreeHost(host_inputs_);
  if (opt_stream_) cudaStreamDestroy(opt_stream_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::vector<std::pair<std::string, std::int64_t>> CudaEngine::device_bytes_by_category() const {
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (int c = 0; c < static_cast<int>(MemCategory::count); ++c)
    out.emplace_back(cuda::category_name(static_cast<MemCategory>(c)), alloc_.bytes_in_use(static_cast<MemCategory>(c)));
  return out;
}

std::vector<float> CudaEngine::download(const float* base, const std::string& name) const {
  const auto& f = full_.find(name);
  const std::size_t index = static_cast<std::size_t>(&f - full_.entries().data());
  const auto& p = table_.entries()[index];
  std::vector<float> out(static_cast<std::size_t>(p.numel));
  CUDA_CHECK(cudaDeviceSynchronize());  // both streams: a pending optimizer step or memset
  if (owned_[index]) {
    // The distributed optimizer's master weights (and reduce-scattered gradients) live in shards: each data-parallel
    // rank gives its part, the others add zeros.
    const bool shard_buffer = base == w_ || base == m_ || base == v_;  // [shard_n_] at flat shard0_
    const bool sharded = zero1_ && (shard_buffer || grads_scattered_);
    if (!sharded) {
      CUDA_CHECK(cudaMemcpy(out.data(), base + p.offset, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
      if (base == g_ && zero_over_cp_) cp_host_->all_reduce_sum(out.data(), out.size());  // not yet summed over cp
    } else {
      const std::int64_t b = std::max(p.offset, shard0_), e = std::min(p.offset + p.numel, shard0_ + shard_n_);
      const float* src = shard_buffer ? base + (b - shard0_) : g_ + b;
      if (e > b) CUDA_CHECK(cudaMemcpy(out.data() + (b - p.offset), src, (e - b) * sizeof(float), cudaMemcpyDeviceToHost));
      dp_host_->all_reduce_sum(out.data(), out.size());
    }
    if (tp_host_) out = gather_full_tensor(*tp_host_, cfg_, full_, index, out.data(), p.numel);
  }
  if (!pp_host_) return out;
  // Pipeline: the stage that reports the tensor gives it, the others add zeros.
  if (!reports_[index]) out.assign(static_cast<std::size_t>(f.numel), 0.0f);
  pp_host_->all_reduce_sum(out.data(), out.size());
  return out;
}

std::vector<float> CudaEngine::own_part(std::size_t index, const std::vector<float>& values) const {
  std::vector<float> part(static_cast<std::size_t>(table_.entries()[index].numel));
  extract_shard(shard_spec(full_, index, tp_), full_.entries()[index].shape, values.data(), part.data());
  return part;
}

void CudaEngine::set_weights(const std::string& name, const std::vector<float>& values) {
  const std::size_t index = full_.index_of_full(name, values.size(), "weight");
  if (!owned_[index]) return;  // another pipeline stage's tensor
  const auto& p = table_.entries()[index];
  upload_weights(own_part(index, values).data(), p.offset, p.numel);
}

void CudaEngine::set_moment(const std::string& name, int which, const std::vector<float>& values) {
  const std::size_t index = full_.index_of_full(name, values.size(), "moment of");
  if (!owned_[index]) return;  // another pipeline stage's tensor
  const auto& p = table_.entries()[index];
  const std::vector<float> part = own_part(index, values);
  CUDA_CHECK(cudaDeviceSynchronize());  // no optimizer step may still be writing the moments
  const std::int64_t b = std::max(p.offset, shard0_), e = std::min(p.offset + p.numel, shard0_ + shard_n_);
  if (e <= b) return;
  CUDA_CHECK(cudaMemcpyAsync((which == 0 ? m_ : v_) + (b - shard0_), part.data() + (b - p.offset),
                             (e - b) * sizeof(float), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // complete before the optimizer's side stream reads it
}

void CudaEngine::zero_grad() {
  // On the side stream, after any pending AdamW has read these gradients; the backward waits for zero_done_.
  timer_.start(opt_stream_);
  for (std::size_t i : zeroed_by_memset_) {
    const auto& p = table_.entries()[i];
    CUDA_CHECK(cudaMemsetAsync(g_ + p.offset, 0, p.numel * sizeof(float), opt_stream_));
  }
  timer_.mark(opt_stream_, "zero grad (side stream)");
  CUDA_CHECK(cudaEventRecord(zero_done_, opt_stream_));
  zero_pending_ = true;
  overwrite_grads_ = pp_host_ == nullptr;
  grads_scattered_ = false;
  replicated_state_ = Replicated::clean;
}

double CudaEngine::device_scalar() const {
  double v = 0;
  CUDA_CHECK(cudaMemcpyAsync(&v, scalar_, sizeof v, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return v;
}

cuda::SdpaShape CudaEngine::cp_chunk_shape(int j, std::int64_t B, std::int64_t S) const {
  const std::int64_t c = S / (2 * cp_), g = j == 0 ? cp_rank_ : 2 * cp_ - 1 - cp_rank_, kv2 = 2 * tp_.kv_dim;
  cuda::SdpaShape shape{B, c, tp_.heads, tp_.kv_heads, cfg_.head_dim, tp_.q_dim, kv2, kv2, tp_.q_dim};
  shape.kv_seq = (g + 1) * c;  // keys up to the end of chunk g
  shape.q_batch_rows = 2 * c;  // this rank's rows of each sequence
  shape.kv_batch_rows = S;     // the whole gathered sequence
  shape.lse_rows = lse_rows(S, cp_);  // chunk j's statistics at j · lse_rows / 2, each 16-byte aligned
  return shape;
}

void CudaEngine::cp_all_gather_bf16(const void* in, void* out, std::size_t count) const {
  if (cp_staged_) return cp_staged_->all_gather_bf16(in, out, count, stream_);
#ifdef QWEN3_HAVE_NCCL
  cp_nccl_->all_gather_bf16(in, out, count);
#endif
}

void CudaEngine::cp_reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count) const {
  if (cp_staged_) return cp_staged_->reduce_scatter_sum_bf16(in, out, count, stream_);
#ifdef QWEN3_HAVE_NCCL
  cp_nccl_->reduce_scatter_sum_bf16(in, out, count);
#endif
}

void CudaEngine::cp_all_reduce_sum(float* data, std::size_t count) const {
  if (cp_staged_) return cp_staged_->all_reduce_sum(data, count, stream_);
#ifdef QWEN3_HAVE_NCCL
  cp_nccl_->all_reduce_sum(data, count);
#endif
}

void CudaEngine::cp_reorder(const bf16* from, bf16* to, std::int64_t B, std::int64_t S, bool to_sequence_order,
                            cudaStream_t st) {
  // Rank q's block is [B, S / cp, 2·kv] at q·B·S / cp rows; its local chunk j is sequence chunk g (rows g·c …).
  const std::int64_t c = S / (2 * cp_), w = 2 * tp_.kv_dim, bytes = c * w * static_cast<std::int64_t>(sizeof(bf16));
  const std::size_t rank_pitch = static_cast<std::size_t>(2 * c * w * sizeof(bf16)), seq_pitch = static_cast<std::size_t>(S * w * sizeof(bf16));
  for (int q = 0; q < cp_; ++q)
    for (int j = 0; j < 2; ++j) {
      const std::int64_t g = j == 0 ? q : 2 * cp_ - 1 - q;
      const std::int64_t rank_row = q * B * 2 * c + j * c, seq_row = g * c;
      if (to_sequence_order)
        CUDA_CHECK(cudaMemcpy2DAsync(to + seq_row * w, seq_pitch, from + rank_row * w, rank_pitch,
                                     static_cast<std::size_t>(bytes), static_cast<std::size_t>(B), cudaMemcpyDeviceToDevice, st));
      else
        CUDA_CHECK(cudaMemcpy2DAsync(to + rank_row * w, rank_pitch, from + seq_row * w, seq_pitch,
                                     static_cast<std::size_t>(bytes), static_cast<std::size_t>(B), cudaMemcpyDeviceToDevice, st));
    }
}

void CudaEngine::cp_gather_kv(const LayerActs& a, const AttnDims& s, cudaStream_t st) {
  const std::int64_t T = s.B * s.S;
  cuda::copy_columns(a.k, s.kvd, cp_kv_local_, 2 * s.kvd, T, s.kvd, st);
  cuda::copy_columns(a.qkv + s.qd + s.kvd, s.qkv_dim, cp_kv_local_ + s.kvd, 2 * s.kvd, T, s.kvd, st);
  cp_all_gather_bf16(cp_kv_local_, cp_kv_ranks_, static_cast<std::size_t>(T * 2 * s.kvd));
  cp_reorder(cp_kv_ranks_, cp_kv_full_, s.B, s.S_full, true, st);
  timer_.mark(st, "key/value all-gather (context parallel)");
}

void CudaEngine::cp_rope_tables(std::int64_t S) {
  if (S == cp_rope_seq_) return;
  const std::int64_t half = cfg_.head_dim / 2, Sl = S / cp_;
  const cpu::RopeTable rope = cpu::rope_table(S, cfg_.head_dim, cfg_.rope_theta);
  std::vector<float> cos(static_cast<std::size_t>(Sl * half)), sin(cos.size());
  for (std::int64_t j = 0; j < Sl; ++j) {
    const std::int64_t pos = context_parallel_position(cp_rank_, j, S, cp_);
    std::copy_n(rope.cos.begin() + pos * half, half, cos.begin() + j * half);
    std::copy_n(rope.sin.begin() + pos * half, half, sin.begin() + j * half);
  }
  // On the main stream (a legacy-stream copy of pageable memory may still be in flight when it returns, unordered with
  // the non-blocking streams), after what earlier micro-batches read; done before the host vectors go.
  CUDA_CHECK(cudaMemcpyAsync(rope_cos_, cos.data(), cos.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(rope_sin_, sin.data(), sin.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  cp_rope_seq_ = S;
}

void CudaEngine::attention_forward(LayerActs& a, const AttnDims& s, const cuda::AttentionShape& as,
                                   cudaStream_t st) {
  const bf16* v = a.qkv + s.qd + s.kvd;  // v's columns of the fused projection, row stride qkv_dim
#ifdef QWEN3_HAVE_CUDNN
  if (use_cudnn_ && cp_ > 1) {  // each local chunk against the gathered keys up to its end
    cp_gather_kv(a, s, st);
    for (int j = 0; j < 2; ++j) {
      const cuda::SdpaShape shape = cp_chunk_shape(j, s.B, s.S_full);
      if (cudnn_->workspace_bytes(shape) > cudnn_ws_bytes_) throw InternalError("cuDNN attention workspace too small");
      const std::int64_t row = j * shape.seq;
      cudnn_->forward(a.q + row * s.qd, cp_kv_full_, cp_kv_full_ + s.kvd, a.attn + row * s.qd, a.lse + j * shape.lse_rows / 2, shape,
                      cudnn_ws_, st);
    }
    timer_.mark(st, "attention fwd (two context-parallel chunks)");
    return;
  }
  if (use_cudnn_) {
    const cuda::SdpaShape shape{s.B, s.S, s.heads, s.kv_heads, s.head_dim, s.qd, s.kvd, s.qkv_dim, s.qd};
    if (cudnn_->workspace_bytes(shape) > cudnn_ws_bytes_) throw InternalError("cuDNN attention workspace too small");
    cudnn_->forward(a.q, a.k, v, a.attn, a.lse, shape, cudnn_ws_, st);
    timer_.mark(st, "attention fwd");
    return;
  }
#endif
  cuda::copy_columns(v, s.qkv_dim, a.v, s.kvd, s.B * s.S, s.kvd, st);
  timer_.mark(st, "copy v");
  cuda::attention_forward(a.q, a.k, a.v, a.attn, a.lse, as, st);
  timer_.mark(st, "attention fwd");
}

void CudaEngine::attention_backward(LayerActs& a, const AttnDims& s, const cuda::AttentionShape& as,
                                    cudaStream_t st) {
  bf16* dv = dqkv_ + s.qd + s.kvd;
#ifdef QWEN3_HAVE_CUDNN
  if (use_cudnn_ && cp_ > 1) {
    // The keys and values again (a whole sequence per layer is not kept), each chunk's backward, the two chunks' key
    // and value gradients added in sequence order (chunk 1 reaches further), then reduce-scattered to their owners.
    cp_gather_kv(a, s, st);
    const std::int64_t S = s.S_full, w = 2 * s.kvd, T = s.B * s.S;
    const cuda::SdpaShape first = cp_chunk_shape(0, s.B, S), second = cp_chunk_shape(1, s.B, S);
    const std::int64_t c = first.seq;
    const std::size_t pitch = static_cast<std::size_t>(S * w) * sizeof(bf16);
    if (second.kv_seq < S)  // keys past chunk 1 get nothing from this rank
      CUDA_CHECK(cudaMemset2DAsync(cp_dkv_ + second.kv_seq * w, pitch, 0,
                                   static_cast<std::size_t>((S - second.kv_seq) * w) * sizeof(bf16),
                                   static_cast<std::size_t>(s.B), st));
    cudnn_->backward(a.q + c * s.qd, cp_kv_full_, cp_kv_full_ + s.kvd, a.attn + c * s.qd, dattn_ + c * s.qd,
                     a.lse + second.lse_rows / 2, dq_ + c * s.qd, cp_dkv_, cp_dkv_ + s.kvd, second, cudnn_ws_, st);
    cudnn_->backward(a.q, cp_kv_full_, cp_kv_full_ + s.kvd, a.attn, dattn_, a.lse, dq_, cp_dkv_first_,
                     cp_dkv_first_ + s.kvd, first, cudnn_ws_, st);
    for (std::int64_t b = 0; b < s.B; ++b)
      cuda::add(cp_dkv_ + b * S * w, cp_dkv_first_ + b * S * w, cp_dkv_ + b * S * w, first.kv_seq * w, st);
    timer_.mark(st, "attention bwd (two context-parallel chunks)");
    cp_reorder(cp_dkv_, cp_kv_ranks_, s.B, S, false, st);
    cp_reduce_scatter_sum_bf16(cp_kv_ranks_, cp_kv_local_, static_cast<std::size_t>(T * w));
    cuda::copy_columns(cp_kv_local_, w, dk_, s.kvd, T, s.kvd, st);
    cuda::copy_columns(cp_kv_local_ + s.kvd, w, dv, s.qkv_dim, T, s.kvd, st);
    timer_.mark(st, "key/value gradient reduce-scatter (context parallel)");
    return;
  }
  if (use_cudnn_) {
    const cuda::SdpaShape shape{s.B, s.S, s.heads, s.kv_heads, s.head_dim, s.qd, s.kvd, s.qkv_dim, s.qd};
    cudnn_->backward(a.q, a.k, a.qkv + s.qd + s.kvd, a.attn, dattn_, a.lse, dq_, dk_, dv, shape, cudnn_ws_, st);
    timer_.mark(st, "attention bwd");
    return;
  }
#endif
  cuda::attention_backward(a.q, a.k, a.v, a.attn, a.lse, dattn_, dq_, dk_, dv_, attn_ws_, as, st);
  timer_.mark(st, "attention bwd");
  cuda::copy_columns(dv_, s.kvd, dv, s.qkv_dim, s.B * s.S, s.kvd, st);
  timer_.mark(st, "copy dv");
}

cpu::LossSum CudaEngine::forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (pp_host_) throw InternalError("CUDA engine: a pipeline stage runs stage_forward/stage_backward");
  return run(0, &mb, grad_scale, logits_out, kBoth);
}

cpu::LossSum CudaEngine::stage_forward(int micro, const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (!pp_host_) throw InternalError("CUDA engine: stage_forward without pipeline parallelism");
  return run(micro % slots_, &mb, grad_scale, stage_.last ? logits_out : nullptr, kForward);
}

void CudaEngine::stage_backward(int micro) {
  if (!pp_host_) throw InternalError("CUDA engine: stage_backward without pipeline parallelism");
  run(micro % slots_, nullptr, 0.0, nullptr, kBackward);
}

Communicator* CudaEngine::pipeline_comm() {
#ifdef QWEN3_HAVE_NCCL
  return pp_nccl_.get();
#else
  return nullptr;
#endif
}

Communicator::Transfer CudaEngine::boundary(Boundary which, int micro, std::int64_t tokens) {
  // Activations cross stages in bf16 (the residual stream's type), gradients in fp32 (dres_, which the backward
  // starts from and ends in). The stream orders each transfer after the work that writes or reads its buffer.
  const int slot = micro % slots_;
  const std::int64_t rows = tokens / cp_ / tp_.size, H = cfg_.hidden_size;
  Communicator::Transfer t;
  switch (which) {
    case Boundary::input:
      t.data = acts_[static_cast<std::size_t>(slot)][0].x_in, t.bytes = rows * H * sizeof(bf16);
      break;
    case Boundary::output:
      if (stage_out_.empty()) throw InternalError("the last pipeline stage has no output activations");
      t.data = stage_out_[static_cast<std::size_t>(slot)], t.bytes = rows * H * sizeof(bf16);
      break;
    case Boundary::output_grad:
    case Boundary::input_grad:
      t.data = dres_, t.bytes = rows * H * sizeof(float);
      break;
  }
  return t;
}

cpu::LossSum CudaEngine::run(int slot, const MicroBatch* mbp, double grad_scale, std::vector<float>* logits_out, int part) {
  const auto& c = cfg_;
  if (part & kForward) slot_shape_[static_cast<std::size_t>(slot)] = {mbp->batch, mbp->seq};
  auto& acts = acts_[static_cast<std::size_t>(slot)];
  const std::int64_t first = stage_.first_layer;
  // S: this rank's tokens of each sequence (with context parallelism two chunks of S_full / (2·cp) each).
  const std::int64_t B = slot_shape_[static_cast<std::size_t>(slot)].first, S_full = slot_shape_[static_cast<std::size_t>(slot)].second;
  const std::int64_t S = S_full / cp_, T = B * S, H = c.hidden_size, I = tp_.inter;
  const std::int64_t nh = tp_.heads, nkv = tp_.kv_heads, hd = c.head_dim, qd = tp_.q_dim, kvd = tp_.kv_dim;
  const std::int64_t V = tp_.vocab, v0 = tp_.vocab0;
  if (T > max_tokens_ || S_full > max_seq_ || B > max_batch_)
    throw InternalError("micro-batch " + std::to_string(B) + "×" + std::to_string(S_full) + " exceeds the engine's sizing");
  check_sequence_layout(B, S_full, tp_.size, cp_, true);
  const float eps = static_cast<float>(c.rms_norm_eps);
  cudaStream_t st = stream_;
  auto& gemm = *gemm_;
  // Sequence parallelism (tp > 1): the residual stream, its norms and gradient hold this rank's Tl rows; each block
  // all-gathers its normalised input to T rows and reduce-scatters its row-parallel output back to Tl rows.
  const bool tp = tp_host_ != nullptr;
  const std::int64_t Tl = T / tp_.size;
#ifdef QWEN3_HAVE_NCCL
  NcclCommunicator* tpc = tp_nccl_.get();
#else
  struct NoComm {
    void all_gather_bf16(const void*, void*, std::size_t) {}
    void reduce_scatter_sum_bf16(const void*, void*, std::size_t) {}
    void all_gather(const float*, float*, std::size_t) {}
    void reduce_scatter_sum(const float*, float*, std::size_t) {}
    void all_reduce_max(float*, std::size_t) {}
    void all_reduce_sum(float*, std::size_t) {}
    void set_stream(cudaStream_t) {}
  } no_comm;
  NoComm* tpc = &no_comm;  // never used: tensor parallelism needs NCCL (checked at construction)
#endif
  // Norm of this rank's rows, gathered to every row for the column-parallel block that follows.
  auto norm_gathered = [&](const bf16* x, std::size_t w, bf16* full, float* rstd) {
    cuda::rmsnorm_forward(x, W(w), tp ? h_local_ : full, rstd, Tl, H, eps, st);
    timer_.mark(st, "rmsnorm fwd");
    if (tp) {
      tpc->all_gather_bf16(h_local_, full, static_cast<std::size_t>(Tl * H));
      timer_.mark(st, "all-gather (sequence parallel)");
    }
  };
  // out[Tl rows] = residual + this rank's rows of Σ_ranks (in·Wᵀ); without tensor parallelism one GEMM with the
  // residual in its epilogue.
  auto row_parallel = [&](const bf16* in, std::size_t w, std::int64_t k, const bf16* residual, bf16* out, const char* what) {
    if (!tp) {
      gemm.forward(in, W(w), out, residual, T, k, H, st);
      timer_.mark(st, what);
      return;
    }
    gemm.forward(in, W(w), partial_bf_, nullptr, T, k, H, st);
    timer_.mark(st, what);
    tpc->reduce_scatter_sum_bf16(partial_bf_, sum_local_, static_cast<std::size_t>(Tl * H));
    timer_.mark(st, "reduce-scatter (sequence parallel)");
    cuda::add(residual, sum_local_, out, Tl * H, st);
    timer_.mark(st, "residual add");
  };
  // dh_ (T rows, this rank's partial sums) reduced to this rank's Tl rows.
  auto scattered_dh = [&]() -> const float* {
    if (!tp) return dh_;
    tpc->reduce_scatter_sum(dh_, dh_local_, static_cast<std::size_t>(Tl * H));
    timer_.mark(st, "reduce-scatter (sequence parallel)");
    return dh_local_;
  };
  timer_.start(st);
  std::int32_t* tokens = stage_.first ? tokens_ + slot * max_tokens_ : nullptr;  // this slot's (the embedding's)
  std::int64_t counted = 0;
  if (part & kForward) {
    const std::int32_t *tok = mbp->tokens, *lab = mbp->labels;
    if (cp_ > 1) {  // this rank's two chunks of every sequence, and RoPE at their positions
      cp_tokens_.resize(static_cast<std::size_t>(T));
      cp_labels_.resize(static_cast<std::size_t>(T));
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t j = 0; j < S; ++j) {
          const std::int64_t from = b * S_full + context_parallel_position(cp_rank_, j, S_full, cp_);
          if (tok) cp_tokens_[static_cast<std::size_t>(b * S + j)] = tok[from];  // (only the first stage reads tokens)
          cp_labels_[static_cast<std::size_t>(b * S + j)] = lab[from];
        }
      tok = tok ? cp_tokens_.data() : nullptr, lab = cp_labels_.data();
      cp_rope_tables(S_full);
    }
    if (stage_.first) CUDA_CHECK(cudaMemcpyAsync(tokens, tok, T * sizeof(std::int32_t), cudaMemcpyHostToDevice, st));
    if (stage_.last) CUDA_CHECK(cudaMemcpyAsync(labels_, lab, T * sizeof(std::int32_t), cudaMemcpyHostToDevice, st));
    for (std::int64_t t = 0; t < T; ++t) counted += lab[t] != cpu::kIgnoreLabel;
  }
  const cuda::AttentionShape ashape{B, S, nh, nkv, hd};
  const std::int64_t qkv_dim = qd + 2 * kvd;
  const cuda::QkShape qshape{B, S, nh, hd, static_cast<float>(c.rope_theta), eps, qkv_dim, rope_cos_, rope_sin_};
  const cuda::QkShape kshape{B, S, nkv, hd, static_cast<float>(c.rope_theta), eps, qkv_dim, rope_cos_, rope_sin_};
  const AttnDims sshape{B, S, nh, nkv, hd, qd, kvd, qkv_dim, S_full};
  const bool acc = !overwrite_grads_;  // weight-gradient GEMMs add into the gradients, or overwrite them (β = 0)
  overwrite_grads_ = false;
  if (replicated_state_ == Replicated::reduced)
    throw InternalError("CUDA engine: a micro-batch's forward/backward after the gradients were read needs zero_grad first");
  if (tp || embed_nccl_ || cp_host_) replicated_state_ = Replicated::partial;
  auto wait_zero = [&] {  // before any gradient is written
    if (zero_pending_) CUDA_CHECK(cudaStreamWaitEvent(st, zero_done_, 0));
    zero_pending_ = false;
  };
  // One decoder layer's forward from a.x_in into next (the following layer's input), keeping what its backward
  // needs in a; run again in the backward when recomputing.
  auto layer_forward = [&](std::int64_t l, LayerActs& a, bf16* next) {
    const auto& p = table_.layers[l];
    norm_gathered(a.x_in, p.input_norm, a.h_in, a.rstd_in);
    gemm.forward(a.h_in, W(p.q_proj), a.qkv, nullptr, T, H, qkv_dim, st);  // q|k|v in one GEMM
    timer_.mark(st, "gemm qkv fwd");
    cuda::qk_norm_rope_forward(a.qkv, W(p.q_norm), a.q, a.rstd_q, qshape, st);
    timer_.mark(st, "qk norm+rope fwd");
    cuda::qk_norm_rope_forward(a.qkv + qd, W(p.k_norm), a.k, a.rstd_k, kshape, st);
    timer_.mark(st, "qk norm+rope fwd");
    attention_forward(a, sshape, ashape, st);
    row_parallel(a.attn, p.o_proj, qd, a.x_in, a.x_mid, "gemm o fwd");
    norm_gathered(a.x_mid, p.post_norm, a.h_mid, a.rstd_mid);
    gemm.forward(a.h_mid, W(p.gate_proj), a.gate_up, nullptr, T, H, 2 * I, st);  // gate|up in one GEMM
    timer_.mark(st, "gemm gate_up fwd");
    cuda::swiglu_forward(a.gate_up, act_, T, I, st);
    timer_.mark(st, "swiglu fwd");
    row_parallel(act_, p.down_proj, I, a.x_mid, next, "gemm down fwd");
  };
  cpu::LossSum result{0.0, 0};

  if (part & kForward) {
  // ---- forward; each segment's weights may still be in a pending optimizer step (side stream) ----
  const bool wait_update = update_pending_;
  update_pending_ = false;
  auto wait_segment = [&](std::size_t seg) {
    if (wait_update) CUDA_CHECK(cudaStreamWaitEvent(st, segment_done_[seg], 0));
  };
  if (stage_.first) {  // later stages received their input into acts[0].x_in (boundary())
    wait_segment(0);
    if (!tp) {
      cuda::embedding_forward(tokens, W(table_.embed), acts[0].x_in, T, H, st);
    } else {  // vocabulary-parallel: rows of this rank's tokens, zeros elsewhere, summed and scattered
      cuda::embedding_forward(tokens, W(table_.embed), partial_bf_, T, H, st, v0, V);
      tpc->reduce_scatter_sum_bf16(partial_bf_, acts[0].x_in, static_cast<std::size_t>(Tl * H));
    }
    timer_.mark(st, "embedding fwd");
  }
  for (std::int64_t l = first; l < stage_.last_layer; ++l) {
    LayerActs& a = acts[static_cast<std::size_t>(l - first)];
    wait_segment(static_cast<std::size_t>(1 + l));
    bf16* next = l + 1 < stage_.last_layer ? acts[static_cast<std::size_t>(l + 1 - first)].x_in
                 : stage_.last            ? x_final_
                                          : stage_out_[static_cast<std::size_t>(slot)];
    const std::int64_t next_index = l + 1 - first;
    const bool offload_next = l + 1 < stage_.last_layer && recompute_.offloaded(next_index);
    // An offloaded input's buffer is written again only after its previous content reached the host.
    if (offload_next) CUDA_CHECK(cudaStreamWaitEvent(st, to_host_[next_index % 2], 0));
    layer_forward(l, a, next);
    if (offload_next) {  // out to the host while the next layer's forward reads it
      CUDA_CHECK(cudaEventRecord(offload_fork_, st));
      CUDA_CHECK(cudaStreamWaitEvent(offload_stream_, offload_fork_, 0));
      CUDA_CHECK(cudaMemcpyAsync(host_input(slot, next_index), next, Tl * H * sizeof(bf16), cudaMemcpyDeviceToHost,
                                 offload_stream_));
      CUDA_CHECK(cudaEventRecord(to_host_[next_index % 2], offload_stream_));
    }
  }
  if (offload_stream_) {  // the forward ends when its inputs are on the host
    CUDA_CHECK(cudaStreamWaitEvent(st, to_host_[0], 0));
    CUDA_CHECK(cudaStreamWaitEvent(st, to_host_[1], 0));
  }
  if (stage_.last) {
  wait_segment(static_cast<std::size_t>(c.num_layers + 1));
  wait_zero();
  norm_gathered(x_final_, table_.final_norm, hf_, rstd_f_);

  // ---- output projection and loss, one token chunk at a time; dhf accumulates in dh_ ----
  for (std::int64_t t0 = 0; t0 < T; t0 += logit_chunk_) {
    const std::int64_t tc = std::min(logit_chunk_, T - t0);
    gemm.forward(hf_ + t0 * H, W(table_.lm_head), logits_, nullptr, tc, H, V, st);
    timer_.mark(st, "gemm lm_head fwd");
    if (logits_out) {  // [T, full vocabulary]: every rank's vocabulary slice side by side
      const std::int64_t Vf = V * tp_.size;
      if (t0 == 0) logits_out->assign(static_cast<std::size_t>(T * Vf), 0.0f);
      std::vector<bf16> chunk(static_cast<std::size_t>(tc * V));
      CUDA_CHECK(cudaMemcpyAsync(chunk.data(), logits_, chunk.size() * sizeof(bf16), cudaMemcpyDeviceToHost, st));
      CUDA_CHECK(cudaStreamSynchronize(st));
      std::vector<double> mine(chunk.size()), all(chunk.size() * static_cast<std::size_t>(tp_.size));
      for (std::size_t i = 0; i < chunk.size(); ++i) mine[i] = __bfloat162float(chunk[i]);
      if (tp) tp_host_->all_gather(mine.data(), all.data(), mine.size());
      else all = mine;
      for (int r = 0; r < tp_.size; ++r)
        for (std::int64_t row = 0; row < tc; ++row)
          for (std::int64_t j = 0; j < V; ++j)
            (*logits_out)[(t0 + row) * Vf + r * V + j] = static_cast<float>(all[(r * tc + row) * V + j]);
    }
    if (!tp) {
      cuda::cross_entropy_forward_backward(logits_, labels_ + t0, row_loss_ + t0, tc, V, static_cast<float>(grad_scale), st);
    } else {  // vocabulary-parallel: row max, then sum of exponentials and the target logit, over the group
      cuda::cross_entropy_vp_stats(logits_, labels_ + t0, ce_m_, ce_z_, ce_t_, tc, V, v0, st);
      CUDA_CHECK(cudaMemcpyAsync(ce_mg_, ce_m_, tc * sizeof(float), cudaMemcpyDeviceToDevice, st));
      tpc->all_reduce_max(ce_mg_, static_cast<std::size_t>(tc));
      cuda::cross_entropy_vp_rescale(ce_m_, ce_mg_, ce_z_, tc, st);
      tpc->all_reduce_sum(ce_z_, static_cast<std::size_t>(tc));
      tpc->all_reduce_sum(ce_t_, static_cast<std::size_t>(tc));
      cuda::cross_entropy_vp_backward(logits_, labels_ + t0, ce_mg_, ce_z_, ce_t_, row_loss_ + t0, tc, V, v0,
                                      static_cast<float>(grad_scale), st);
    }
    timer_.mark(st, "cross-entropy");
    gemm.backward_data(logits_, W(table_.lm_head), dh_ + t0 * H, tc, H, V, false, st);
    timer_.mark(st, "gemm lm_head bwd data");
    gemm.backward_weight(logits_, hf_ + t0 * H, G(table_.lm_head), tc, H, V, acc || t0 > 0, st);
    timer_.mark(st, "gemm lm_head bwd weight");
  }
  cuda::sum(row_loss_, T, partial_, scalar_, st);
  timer_.mark(st, "loss sum");
  result = {device_scalar(), counted};
  if (cp_host_) {  // the whole sequences' loss: every context-parallel rank's tokens
    double pair[2] = {result.sum, static_cast<double>(result.count)};
    cp_host_->all_reduce_sum(pair, 2);
    result = {pair[0], static_cast<std::int64_t>(pair[1])};
    if (logits_out) *logits_out = context_parallel_gather(*cp_host_, *logits_out, B, S, V * tp_.size);
  }
  cuda::rmsnorm_backward(x_final_, W(table_.final_norm), rstd_f_, scattered_dh(), dres_, G(table_.final_norm), Tl, H,
                         false, st, g_bf_);
  timer_.mark(st, "rmsnorm bwd");
  }  // last stage
  }  // forward
  if (!(part & kBackward)) return result;
  wait_zero();
  if (!stage_.last) {  // the gradient of this stage's output arrived in dres_ (fp32): its bf16 copy for the GEMMs
    cuda::cast_f32_to_bf16(dres_, g_bf_, Tl * H, st);
    timer_.mark(st, "cast received gradient");
  }

  // ---- backward through the layers; dres_ holds d loss / d residual stream (fp32), g_bf_ its bf16 copy ----
  // With tensor parallelism each block's output gradient is gathered to T rows (dy) and its input gradient dh_ (this
  // rank's partial sums over T rows) reduce-scattered back. Per block: data-gradient GEMMs → fork → on comm_stream_
  // reduce-scatter dh_, the norm backward, all-gather of the next block's dy into the other buffer, while the main
  // stream runs this block's weight-gradient GEMMs → join.
  int cur = 0;  // g_gathered_[cur] holds the current block's dy
  if (tp) {
    tpc->all_gather_bf16(g_bf_, g_gathered_[cur], static_cast<std::size_t>(Tl * H));
    timer_.mark(st, "all-gather (sequence parallel)");
  }
  // The tail of a block: norm backward (x, norm weight, statistics) into dres_ and g_bf_, then (when more blocks
  // follow) the all-gather of the next dy, overlapping the weight-gradient GEMMs in `wgrads`.
  auto block_tail = [&](const bf16* x, std::size_t norm, const float* rstd, bool more, auto&& wgrads) {
    if (!tp) {
      wgrads();
      cuda::rmsnorm_backward(x, W(norm), rstd, dh_, dres_, G(norm), Tl, H, true, st, more ? g_bf_ : nullptr);
      timer_.mark(st, "rmsnorm bwd");
      return;
    }
    cudaStream_t cs = comm_stream_;
    CUDA_CHECK(cudaEventRecord(fork_, st));
    CUDA_CHECK(cudaStreamWaitEvent(cs, fork_, 0));
    timer_.start(cs);
    tpc->set_stream(cs);
    tpc->reduce_scatter_sum(dh_, dh_local_, static_cast<std::size_t>(Tl * H));
    timer_.mark(cs, "reduce-scatter (sequence parallel, comm stream)");
    cuda::rmsnorm_backward(x, W(norm), rstd, dh_local_, dres_, G(norm), Tl, H, true, cs, more ? g_bf_ : nullptr);
    timer_.mark(cs, "rmsnorm bwd (comm stream)");
    if (more) {
      tpc->all_gather_bf16(g_bf_, g_gathered_[cur ^ 1], static_cast<std::size_t>(Tl * H));
      timer_.mark(cs, "all-gather (sequence parallel, comm stream)");
    }
    tpc->set_stream(st);
    CUDA_CHECK(cudaEventRecord(join_, cs));
    gemm.set_sm_count_target(gemm_sms_overlapped_);
    wgrads();
    gemm.set_sm_count_target(0);
    CUDA_CHECK(cudaStreamWaitEvent(st, join_, 0));
    timer_.mark(st, "wait for the comm stream");
    cur ^= 1;
  };
  // Offloaded inputs come back one layer ahead: the copy of layer `index`'s input starts once everything queued so
  // far (the backward of the layer that last used its buffer) is done, and runs during the current layer's backward.
  auto prefetch_input = [&](std::int64_t index) {
    if (index < 0 || !recompute_.offloaded(index)) return;
    CUDA_CHECK(cudaEventRecord(offload_fork_, st));
    CUDA_CHECK(cudaStreamWaitEvent(offload_stream_, offload_fork_, 0));
    CUDA_CHECK(cudaMemcpyAsync(acts[static_cast<std::size_t>(index)].x_in, host_input(slot, index),
                               Tl * H * sizeof(bf16), cudaMemcpyHostToDevice, offload_stream_));
    CUDA_CHECK(cudaEventRecord(to_device_[index % 2], offload_stream_));
  };
  prefetch_input(stage_.last_layer - 1 - first);
  for (std::int64_t l = stage_.last_layer - 1; l >= first; --l) {
    const auto& p = table_.layers[l];
    const std::int64_t index = l - first;
    LayerActs& a = acts[static_cast<std::size_t>(index)];
    if (recompute_.offloaded(index)) CUDA_CHECK(cudaStreamWaitEvent(st, to_device_[index % 2], 0));
    prefetch_input(index - 1);
    if (recompute_.full(index)) {  // this layer's activations again, from its kept input
      layer_forward(l, a, recompute_out_);
      timer_.mark(st, "(recompute) layer forward");
    } else if (recompute_.selective(index)) {  // its norm outputs and its normed, rotated q and k again
      norm_gathered(a.x_in, p.input_norm, a.h_in, a.rstd_in);
      cuda::qk_norm_rope_forward(a.qkv, W(p.q_norm), a.q, a.rstd_q, qshape, st);
      cuda::qk_norm_rope_forward(a.qkv + qd, W(p.k_norm), a.k, a.rstd_k, kshape, st);
      norm_gathered(a.x_mid, p.post_norm, a.h_mid, a.rstd_mid);
      timer_.mark(st, "(recompute) norms and q, k");
    }
    // MLP block
    const bf16* dy_mlp = tp ? g_gathered_[cur] : g_bf_;
    gemm.backward_data(dy_mlp, W(p.down_proj), dact_, T, I, H, st);
    timer_.mark(st, "gemm down bwd data");
    cuda::swiglu_backward(a.gate_up, dact_, dgate_up_, T, I, st, act_);  // also recomputes the SwiGLU product
    timer_.mark(st, "swiglu bwd");
    gemm.backward_data(dgate_up_, W(p.gate_proj), dh_, T, H, 2 * I, false, st);
    timer_.mark(st, "gemm gate_up bwd data");
    block_tail(a.x_mid, p.post_norm, a.rstd_mid, true, [&] {
      gemm.backward_weight(dy_mlp, act_, G(p.down_proj), T, I, H, acc, st);
      timer_.mark(st, "gemm down bwd weight");
      gemm.backward_weight(dgate_up_, a.h_mid, G(p.gate_proj), T, H, 2 * I, acc, st);  // gate and up, adjacent
      timer_.mark(st, "gemm gate_up bwd weight");
    });
    // Attention block
    const bf16* dy_attn = tp ? g_gathered_[cur] : g_bf_;
    gemm.backward_data(dy_attn, W(p.o_proj), dattn_, T, qd, H, st);
    timer_.mark(st, "gemm o bwd data");
    attention_backward(a, sshape, ashape, st);
    cuda::qk_norm_rope_backward(a.qkv, W(p.q_norm), a.rstd_q, dq_, dqkv_, G(p.q_norm), qshape, st);
    timer_.mark(st, "qk norm+rope bwd");
    cuda::qk_norm_rope_backward(a.qkv + qd, W(p.k_norm), a.rstd_k, dk_, dqkv_ + qd, G(p.k_norm), kshape, st);
    timer_.mark(st, "qk norm+rope bwd");
    gemm.backward_data(dqkv_, W(p.q_proj), dh_, T, H, qkv_dim, false, st);
    timer_.mark(st, "gemm qkv bwd data");
    block_tail(a.x_in, p.input_norm, a.rstd_in, l > first, [&] {
      gemm.backward_weight(dy_attn, a.attn, G(p.o_proj), T, qd, H, acc, st);
      timer_.mark(st, "gemm o bwd weight");
      gemm.backward_weight(dqkv_, a.h_in, G(p.q_proj), T, H, qkv_dim, acc, st);  // q, k and v gradients, adjacent
      timer_.mark(st, "gemm qkv bwd weight");
    });
  }
  if (stage_.first) {  // later stages send dres_, the gradient of their input, to the previous stage
    if (!tp) {
      cuda::embedding_backward(tokens, dres_, G(table_.embed), T, H, st);
    } else {  // every token's gradient on every rank; each adds the rows of its vocabulary slice
      tpc->all_gather(dres_, dres_full_, static_cast<std::size_t>(Tl * H));
      cuda::embedding_backward(tokens, dres_full_, G(table_.embed), T, H, st, v0, V);
    }
    timer_.mark(st, "embedding bwd");
  }
  return result;
}

void CudaEngine::finish_replicated_grads() const {
  if (replicated_state_ != Replicated::partial) return;
  replicated_state_ = Replicated::reduced;
#ifdef QWEN3_HAVE_NCCL
  auto reduce = [&](NcclCommunicator& comm, const std::vector<std::size_t>& tensors) {
    comm.group_start();
    for (std::size_t i : tensors) {
      const auto& e = table_.entries()[i];
      if (e.numel > 0) comm.all_reduce_sum(g_ + e.offset, static_cast<std::size_t>(e.numel));
    }
    comm.group_end();
  };
  if (tp_nccl_) reduce(*tp_nccl_, replicated_);
  if (kv_nccl_) reduce(*kv_nccl_, kv_replicated_);
  if (embed_nccl_ && (stage_.first || stage_.last)) reduce(*embed_nccl_, {full_.embed});
#endif
  // Context parallelism: each rank's gradients are its tokens' share; every rank then holds the whole sums (unless the
  // distributed optimizer's reduce-scatter over data × context-parallel ranks sums them).
  if (cp_host_ && !zero_over_cp_) cp_all_reduce_sum(g_, static_cast<std::size_t>(table_.total_elements()));
}

void CudaEngine::reduce_gradients(Communicator& dp) {
  finish_replicated_grads();
  if (dp.size() == 1 && !zero1_) return;
#ifdef QWEN3_HAVE_NCCL
  if (!dp_nccl_) {  // collective over the group: every replica reaches its first reduction together
    dp_nccl_ = std::make_unique<NcclCommunicator>(zero1_ ? *dp_host_ : dp);
    dp_nccl_->set_stream(stream_);
  }
  timer_.start(stream_);
  if (zero1_) {  // each rank receives the sums of its shard, in place (fp32, on the main stream)
    if (dp.size() * (zero_over_cp_ ? cp_ : 1) != dp_host_->size())
      throw InternalError("reduce_gradients over another group than the optimizer's shards");
    dp_nccl_->reduce_scatter_sum(g_, g_ + shard0_, static_cast<std::size_t>(shard_n_));
    grads_scattered_ = true;
    timer_.mark(stream_, "gradient reduce-scatter (distributed optimizer, NCCL)");
  } else {
    dp_nccl_->all_reduce_sum(g_, static_cast<std::size_t>(table_.total_elements()));  // fp32 sums, on the main stream
    timer_.mark(stream_, "gradient all-reduce (data parallel, NCCL)");
  }
#else
  throw UsageError("data parallelism with --device cuda needs NCCL, which this build did not find");
#endif
}

double CudaEngine::grad_norm() {
  finish_replicated_grads();
  if (zero_over_cp_ && !grads_scattered_) throw InternalError("CUDA engine: grad_norm before reduce_gradients");
  // Each tensor counts once: a tensor-parallel shard on every rank; the replicated norm weights on tp rank 0; a
  // replicated KV head on its KV group's first rank; a tied embedding on the first pipeline stage. This rank sums what
  // it holds (its shard of the flat buffer under the distributed optimizer) minus what another rank counts; the groups
  // add up.
  const std::int64_t lo = grads_scattered_ ? shard0_ : 0;
  const std::int64_t hi = grads_scattered_ ? shard0_ + shard_n_ : table_.total_elements();
  timer_.start(stream_);
  cuda::sum_squares(g_ + lo, std::min(hi, padded_) - lo, partial_, scalar_, stream_);
  timer_.mark(stream_, "grad norm");
  double ss = device_scalar();
  std::vector<std::size_t> not_counted;
  if (tp_host_ && tp_.rank % tp_.kv_replicas != 0) not_counted.insert(not_counted.end(), kv_replicated_.begin(), kv_replicated_.end());
  if (tp_host_ && tp_.rank != 0) not_counted.insert(not_counted.end(), replicated_.begin(), replicated_.end());
  if (pp_host_ && owned_[full_.embed] && !reports_[full_.embed]) not_counted.push_back(full_.embed);
  for (std::size_t i : not_counted) {
    const auto& e = table_.entries()[i];
    const std::int64_t b = std::max(e.offset, lo), end = std::min(e.offset + e.numel, hi);
    if (end <= b) continue;
    cuda::sum_squares(g_ + b, end - b, partial_, scalar_, stream_);
    ss -= device_scalar();
  }
  if (grads_scattered_) dp_host_->all_reduce_sum(&ss, 1);
  if (tp_host_) tp_host_->all_reduce_sum(&ss, 1);
  if (pp_host_) pp_host_->all_reduce_sum(&ss, 1);
  return std::sqrt(std::max(ss, 0.0));
}

void CudaEngine::optimizer_step(double lr, const AdamWConfig& a, double grad_scale) {
  finish_replicated_grads();
  ++step_;
  cuda::AdamWArgs args{};
  args.lr = static_cast<float>(lr);
  args.beta1 = static_cast<float>(a.beta1);
  args.beta2 = static_cast<float>(a.beta2);
  args.eps = static_cast<float>(a.eps);
  args.weight_decay = static_cast<float>(a.weight_decay);
  args.bias_correction1 = static_cast<float>(1.0 - std::pow(a.beta1, static_cast<double>(step_)));
  args.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(a.beta2, static_cast<double>(step_))));
  args.grad_scale = static_cast<float>(grad_scale);
  CUDA_CHECK(cudaEventRecord(grads_ready_, stream_));
  CUDA_CHECK(cudaStreamWaitEvent(opt_stream_, grads_ready_, 0));
  timer_.start(opt_stream_);
  if (zero1_ && !grads_scattered_) throw InternalError("the distributed optimizer steps after reduce_gradients only");
  for (std::size_t s = 0; s < segments_.size(); ++s) {
    if (segments_[s].second > 0)
      cuda::adamw_step(w_, m_, v_, g_ + shard0_, wb_ + shard0_, chunks_ + segments_[s].first, segments_[s].second, args,
                       opt_stream_);
    if (!zero1_) CUDA_CHECK(cudaEventRecord(segment_done_[s], opt_stream_));
  }
  timer_.mark(opt_stream_, "adamw (side stream, overlaps the next forward)");
#ifdef QWEN3_HAVE_NCCL
  if (zero1_) {  // every replica's updated bf16 shard to every replica; the next forward waits for all of it
    dp_nccl_->set_stream(opt_stream_);
    dp_nccl_->all_gather_bf16(wb_ + shard0_, wb_, static_cast<std::size_t>(shard_n_));
    dp_nccl_->set_stream(stream_);
    timer_.mark(opt_stream_, "bf16 weight all-gather (distributed optimizer)");
    for (auto e : segment_done_) CUDA_CHECK(cudaEventRecord(e, opt_stream_));
  }
#endif
  update_pending_ = true;
  if (timer_.enabled()) timer_.collect();  // timing only: waits for the step (no overlap measured across steps)
  if (step_ == 1) timer_.clear();  // the first step pays for cuBLASLt heuristics and lazy module loading
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
