// CUDA engine (see cuda_engine.h): the Qwen3 forward and backward of model/cpu_qwen3.cpp, on the CUDA op families.
#include "train/cuda_engine.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/device_allocator.h"
#include "cuda/gemm.h"
#include "model/init.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/optimizer.h"
#include "ops/cuda/qk_norm_rope.h"
#include "ops/cuda/rmsnorm.h"

namespace qwen3 {
namespace {

using bf16 = __nv_bfloat16;
using cuda::MemCategory;

constexpr std::size_t kGemmWorkspace = 64ull << 20;
constexpr std::int64_t kLogitChunkBytes = 1ll << 30;  // bf16 logits of one token chunk

// What one decoder layer keeps for its backward (T tokens of the largest micro-batch). Norm outputs and the SwiGLU
// product are recomputed in the backward from these (cheap elementwise work instead of 2H + I values per token).
// q|k|v and gate|up are each one GEMM: their weights are adjacent in the parameter table (ParamTable order).
struct LayerActs {
  bf16 *x_in;      // [T, H]
  bf16 *qkv;       // [T, q_dim + 2·kv_dim] fused projection output, before q/k norm
  bf16 *q, *k, *v; // [T, heads|kv_heads, head_dim] attention inputs (q, k after norm + RoPE; v a contiguous copy)
  bf16 *attn;      // [T, q_dim]
  bf16 *x_mid;     // [T, H]
  bf16 *gate_up;   // [T, 2·I]
  float *rstd_in, *rstd_q, *rstd_k, *lse, *rstd_mid;  // [T], [T·heads], [T·kv_heads], [B·heads·S], [T]
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& cfg, const EngineOptions& opts);
  ~CudaEngine() override;
  const ParamTable& params() const override { return table_; }
  std::string device_name() const override { return device_name_; }
  void set_weights(const std::string& name, const std::vector<float>& values) override;
  std::vector<float> weights(const std::string& name) const override { return download(w_, table_.find(name)); }
  std::vector<float> gradient(const std::string& name) const override { return download(g_, table_.find(name)); }
  void zero_grad() override;
  cpu::LossSum forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  void reduce_gradients(Communicator& dp) override;
  double grad_norm() override;
  void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale) override;
  std::int64_t device_bytes_in_use() const override { return alloc_.bytes_in_use(); }
  std::vector<std::pair<std::string, std::int64_t>> device_bytes_by_category() const override;

 private:
  std::vector<float> download(const float* base, const ParamInfo& p) const;
  const bf16* W(std::size_t idx) const { return wb_ + table_.entries()[idx].offset; }
  float* G(std::size_t idx) const { return g_ + table_.entries()[idx].offset; }
  double device_scalar() const;

  ModelConfig cfg_;
  ParamTable table_;
  std::int64_t max_tokens_, max_batch_, max_seq_, logit_chunk_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  cuda::DeviceAllocator alloc_;
  std::unique_ptr<cuda::Gemm> gemm_;
  float *w_, *g_, *m_, *v_;  // [P] fp32 master weights, gradients, AdamW moments
  bf16* wb_;                 // [P] bf16 compute copy of the weights
  cuda::AdamWChunk* chunks_;
  int n_chunks_;
  std::vector<LayerActs> acts_;
  bf16 *x_final_, *hf_, *h_, *act_, *logits_, *g_bf_, *dattn_, *dq_, *dk_, *dv_, *dqkv_, *dact_, *dgate_up_;
  float *rstd_f_, *row_loss_, *dres_, *dh_;
  std::int32_t *tokens_, *labels_;
  void* attn_ws_;
  double *partial_, *scalar_;
  std::int64_t step_ = 0;
};

CudaEngine::CudaEngine(const ModelConfig& cfg, const EngineOptions& o) : cfg_(cfg), table_(cfg) {
  cfg_.validate();
  if (o.max_seq <= 0 || o.max_batch <= 0) throw InternalError("the CUDA engine needs the micro-batch shape up front");
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  if (devices == 0) throw UsageError("--device cuda: no CUDA device is visible on this host");
  CUDA_CHECK(cudaSetDevice(o.local_rank % devices));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, o.local_rank % devices));
  device_name_ = prop.name;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));

  max_batch_ = o.max_batch;
  max_seq_ = o.max_seq;
  const std::int64_t T = max_tokens_ = o.max_batch * o.max_seq;
  const std::int64_t P = table_.total_elements(), H = cfg.hidden_size, I = cfg.intermediate_size;
  const std::int64_t qd = cfg.q_dim(), kvd = cfg.kv_dim(), V = cfg.vocab_size;
  logit_chunk_ = std::max<std::int64_t>(1, std::min(T, kLogitChunkBytes / (2 * V)));

  // Persistent state first: weights, gradients, optimizer — then activations, then workspaces.
  w_ = alloc_.allocate<float>(MemCategory::weights, P, "fp32 master weights");
  wb_ = alloc_.allocate<bf16>(MemCategory::weights, P, "bf16 compute weights");
  g_ = alloc_.allocate<float>(MemCategory::gradients, P, "fp32 gradients");
  m_ = alloc_.allocate<float>(MemCategory::optimizer_state, P, "AdamW first moment");
  v_ = alloc_.allocate<float>(MemCategory::optimizer_state, P, "AdamW second moment");
  std::vector<cuda::AdamWChunk> tensors;
  for (const auto& p : table_.entries()) tensors.push_back({p.offset, p.offset + p.numel, p.decay ? 1 : 0});
  const auto chunks = cuda::make_adamw_chunks(tensors);
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
  const auto A = MemCategory::activations;
  for (std::int64_t l = 0; l < cfg.num_layers; ++l) {
    LayerActs a{};
    const std::string what = "layer " + std::to_string(l) + " activations";
    a.x_in = alloc_.allocate<bf16>(A, T * H, what);
    a.qkv = alloc_.allocate<bf16>(A, T * (qd + 2 * kvd), what);
    a.q = alloc_.allocate<bf16>(A, T * qd, what);
    a.k = alloc_.allocate<bf16>(A, T * kvd, what);
    a.v = alloc_.allocate<bf16>(A, T * kvd, what);
    a.attn = alloc_.allocate<bf16>(A, T * qd, what);
    a.x_mid = alloc_.allocate<bf16>(A, T * H, what);
    a.gate_up = alloc_.allocate<bf16>(A, T * 2 * I, what);
    a.rstd_in = alloc_.allocate<float>(A, T, what);
    a.rstd_q = alloc_.allocate<float>(A, T * cfg.num_heads, what);
    a.rstd_k = alloc_.allocate<float>(A, T * cfg.num_kv_heads, what);
    a.lse = alloc_.allocate<float>(A, T * cfg.num_heads, what);
    a.rstd_mid = alloc_.allocate<float>(A, T, what);
    acts_.push_back(a);
  }
  x_final_ = alloc_.allocate<bf16>(A, T * H, "final hidden state");
  hf_ = alloc_.allocate<bf16>(A, T * H, "final norm output");
  rstd_f_ = alloc_.allocate<float>(A, T, "final norm statistics");
  const auto S = MemCategory::workspace;
  h_ = alloc_.allocate<bf16>(S, T * H, "norm output scratch");
  act_ = alloc_.allocate<bf16>(S, T * I, "SwiGLU scratch");
  logits_ = alloc_.allocate<bf16>(S, logit_chunk_ * V, "logits of one token chunk");
  row_loss_ = alloc_.allocate<float>(S, T, "per-token loss");
  dres_ = alloc_.allocate<float>(S, T * H, "residual-stream gradient");
  dh_ = alloc_.allocate<float>(S, T * H, "norm-output gradient");
  g_bf_ = alloc_.allocate<bf16>(S, T * std::max(H, qd), "bf16 gradient scratch");
  dattn_ = alloc_.allocate<bf16>(S, T * qd, "attention-output gradient");
  dq_ = alloc_.allocate<bf16>(S, T * qd, "query gradient");
  dk_ = alloc_.allocate<bf16>(S, T * kvd, "key gradient");
  dv_ = alloc_.allocate<bf16>(S, T * kvd, "value gradient");
  dqkv_ = alloc_.allocate<bf16>(S, T * (qd + 2 * kvd), "q|k|v projection gradient");
  dact_ = alloc_.allocate<bf16>(S, T * I, "SwiGLU-output gradient");
  dgate_up_ = alloc_.allocate<bf16>(S, T * 2 * I, "gate|up gradient");
  tokens_ = alloc_.allocate<std::int32_t>(S, T, "token ids");
  labels_ = alloc_.allocate<std::int32_t>(S, T, "labels");
  const cuda::AttentionShape ashape{o.max_batch, o.max_seq, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim};
  attn_ws_ = alloc_.allocate(S, static_cast<std::int64_t>(cuda::attention_backward_workspace_bytes(ashape)), "attention workspace");
  partial_ = alloc_.allocate<double>(S, cuda::kNormBlocks, "reduction partials");
  scalar_ = alloc_.allocate<double>(S, 1, "reduction result");
  gemm_ = std::make_unique<cuda::Gemm>(alloc_.allocate(S, kGemmWorkspace, "cuBLASLt workspace"), kGemmWorkspace);

  // Initial weights: the same values as every other backend (model/init.h), uploaded once.
  std::vector<float> host(static_cast<std::size_t>(P));
  init_weights(table_, o.seed, o.init_std, host.data());
  CUDA_CHECK(cudaMemcpy(w_, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  cuda::cast_f32_to_bf16(w_, wb_, P, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaEngine::~CudaEngine() {
  if (stream_) cudaStreamDestroy(stream_);
}

std::vector<std::pair<std::string, std::int64_t>> CudaEngine::device_bytes_by_category() const {
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (int c = 0; c < static_cast<int>(MemCategory::count); ++c)
    out.emplace_back(cuda::category_name(static_cast<MemCategory>(c)), alloc_.bytes_in_use(static_cast<MemCategory>(c)));
  return out;
}

std::vector<float> CudaEngine::download(const float* base, const ParamInfo& p) const {
  std::vector<float> out(static_cast<std::size_t>(p.numel));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemcpy(out.data(), base + p.offset, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return out;
}

void CudaEngine::set_weights(const std::string& name, const std::vector<float>& values) {
  const auto& p = table_.find(name);
  if (static_cast<std::int64_t>(values.size()) != p.numel)
    throw InputError("weight '" + name + "' has " + std::to_string(values.size()) + " values, the model expects " +
                     std::to_string(p.numel));
  CUDA_CHECK(cudaMemcpyAsync(w_ + p.offset, values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  cuda::cast_f32_to_bf16(w_ + p.offset, wb_ + p.offset, p.numel, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaEngine::zero_grad() { CUDA_CHECK(cudaMemsetAsync(g_, 0, table_.total_elements() * sizeof(float), stream_)); }

double CudaEngine::device_scalar() const {
  double v = 0;
  CUDA_CHECK(cudaMemcpyAsync(&v, scalar_, sizeof v, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return v;
}

cpu::LossSum CudaEngine::forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  const auto& c = cfg_;
  const std::int64_t B = mb.batch, S = mb.seq, T = B * S, H = c.hidden_size, I = c.intermediate_size;
  const std::int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const std::int64_t V = c.vocab_size;
  if (T > max_tokens_ || S > max_seq_ || B > max_batch_)
    throw InternalError("micro-batch " + std::to_string(B) + "×" + std::to_string(S) + " exceeds the engine's sizing");
  const float eps = static_cast<float>(c.rms_norm_eps);
  cudaStream_t st = stream_;
  auto& gemm = *gemm_;
  CUDA_CHECK(cudaMemcpyAsync(tokens_, mb.tokens, T * sizeof(std::int32_t), cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(labels_, mb.labels, T * sizeof(std::int32_t), cudaMemcpyHostToDevice, st));
  std::int64_t counted = 0;
  for (std::int64_t t = 0; t < T; ++t) counted += mb.labels[t] != cpu::kIgnoreLabel;
  const cuda::AttentionShape ashape{B, S, nh, nkv, hd};
  const std::int64_t qkv_dim = qd + 2 * kvd;
  const cuda::QkShape qshape{B, S, nh, hd, static_cast<float>(c.rope_theta), eps, qkv_dim};
  const cuda::QkShape kshape{B, S, nkv, hd, static_cast<float>(c.rope_theta), eps, qkv_dim};

  // ---- forward ----
  cuda::embedding_forward(tokens_, W(table_.embed), acts_[0].x_in, T, H, st);
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const auto& p = table_.layers[l];
    LayerActs& a = acts_[l];
    cuda::rmsnorm_forward(a.x_in, W(p.input_norm), h_, a.rstd_in, T, H, eps, st);
    gemm.forward(h_, W(p.q_proj), a.qkv, nullptr, T, H, qkv_dim, st);  // q|k|v in one GEMM
    cuda::qk_norm_rope_forward(a.qkv, W(p.q_norm), a.q, a.rstd_q, qshape, st);
    cuda::qk_norm_rope_forward(a.qkv + qd, W(p.k_norm), a.k, a.rstd_k, kshape, st);
    cuda::copy_columns(a.qkv + qd + kvd, qkv_dim, a.v, kvd, T, kvd, st);
    cuda::attention_forward(a.q, a.k, a.v, a.attn, a.lse, ashape, st);
    gemm.forward(a.attn, W(p.o_proj), a.x_mid, a.x_in, T, qd, H, st);  // residual add in the epilogue
    cuda::rmsnorm_forward(a.x_mid, W(p.post_norm), h_, a.rstd_mid, T, H, eps, st);
    gemm.forward(h_, W(p.gate_proj), a.gate_up, nullptr, T, H, 2 * I, st);  // gate|up in one GEMM
    cuda::swiglu_forward(a.gate_up, act_, T, I, st);
    bf16* next = l + 1 < c.num_layers ? acts_[l + 1].x_in : x_final_;
    gemm.forward(act_, W(p.down_proj), next, a.x_mid, T, I, H, st);
  }
  cuda::rmsnorm_forward(x_final_, W(table_.final_norm), hf_, rstd_f_, T, H, eps, st);

  // ---- output projection and loss, one token chunk at a time; dhf accumulates in dh_ ----
  for (std::int64_t t0 = 0; t0 < T; t0 += logit_chunk_) {
    const std::int64_t tc = std::min(logit_chunk_, T - t0);
    gemm.forward(hf_ + t0 * H, W(table_.lm_head), logits_, nullptr, tc, H, V, st);
    if (logits_out) {
      if (t0 == 0) logits_out->assign(static_cast<std::size_t>(T * V), 0.0f);
      std::vector<bf16> chunk(static_cast<std::size_t>(tc * V));
      CUDA_CHECK(cudaMemcpyAsync(chunk.data(), logits_, chunk.size() * sizeof(bf16), cudaMemcpyDeviceToHost, st));
      CUDA_CHECK(cudaStreamSynchronize(st));
      for (std::size_t i = 0; i < chunk.size(); ++i) (*logits_out)[t0 * V + i] = __bfloat162float(chunk[i]);
    }
    cuda::cross_entropy_forward_backward(logits_, labels_ + t0, row_loss_ + t0, tc, V, static_cast<float>(grad_scale), st);
    gemm.backward_data(logits_, W(table_.lm_head), dh_ + t0 * H, tc, H, V, false, st);
    gemm.backward_weight(logits_, hf_ + t0 * H, G(table_.lm_head), tc, H, V, st);
  }
  cuda::sum(row_loss_, T, partial_, scalar_, st);
  const double loss_sum = device_scalar();
  cuda::rmsnorm_backward(x_final_, W(table_.final_norm), rstd_f_, dh_, dres_, G(table_.final_norm), T, H, false, st);

  // ---- backward through the layers; dres_ holds d loss / d residual stream (fp32) ----
  for (std::int64_t l = c.num_layers - 1; l >= 0; --l) {
    const auto& p = table_.layers[l];
    LayerActs& a = acts_[l];
    // MLP block
    cuda::cast_f32_to_bf16(dres_, g_bf_, T * H, st);
    gemm.backward_data(g_bf_, W(p.down_proj), dact_, T, I, H, st);
    cuda::swiglu_forward(a.gate_up, act_, T, I, st);  // recompute the SwiGLU product
    gemm.backward_weight(g_bf_, act_, G(p.down_proj), T, I, H, st);
    cuda::swiglu_backward(a.gate_up, dact_, dgate_up_, T, I, st);
    cuda::rmsnorm_forward(a.x_mid, W(p.post_norm), h_, a.rstd_mid, T, H, eps, st);  // recompute the norm output
    gemm.backward_data(dgate_up_, W(p.gate_proj), dh_, T, H, 2 * I, false, st);
    gemm.backward_weight(dgate_up_, h_, G(p.gate_proj), T, H, 2 * I, st);  // gate and up gradients, adjacent
    cuda::rmsnorm_backward(a.x_mid, W(p.post_norm), a.rstd_mid, dh_, dres_, G(p.post_norm), T, H, true, st);
    // Attention block
    cuda::cast_f32_to_bf16(dres_, g_bf_, T * H, st);
    gemm.backward_data(g_bf_, W(p.o_proj), dattn_, T, qd, H, st);
    gemm.backward_weight(g_bf_, a.attn, G(p.o_proj), T, qd, H, st);
    cuda::attention_backward(a.q, a.k, a.v, a.attn, a.lse, dattn_, dq_, dk_, dv_, attn_ws_, ashape, st);
    cuda::qk_norm_rope_backward(a.qkv, W(p.q_norm), a.rstd_q, dq_, dqkv_, G(p.q_norm), qshape, st);
    cuda::qk_norm_rope_backward(a.qkv + qd, W(p.k_norm), a.rstd_k, dk_, dqkv_ + qd, G(p.k_norm), kshape, st);
    cuda::copy_columns(dv_, kvd, dqkv_ + qd + kvd, qkv_dim, T, kvd, st);
    cuda::rmsnorm_forward(a.x_in, W(p.input_norm), h_, a.rstd_in, T, H, eps, st);
    gemm.backward_data(dqkv_, W(p.q_proj), dh_, T, H, qkv_dim, false, st);
    gemm.backward_weight(dqkv_, h_, G(p.q_proj), T, H, qkv_dim, st);  // q, k and v gradients, adjacent
    cuda::rmsnorm_backward(a.x_in, W(p.input_norm), a.rstd_in, dh_, dres_, G(p.input_norm), T, H, true, st);
  }
  cuda::embedding_backward(tokens_, dres_, G(table_.embed), T, H, st);
  return {loss_sum, counted};
}

void CudaEngine::reduce_gradients(Communicator& dp) {
  if (dp.size() > 1)
    throw UsageError("data parallelism with --device cuda needs the NCCL gradient reduction, which is not built yet; "
                     "run one rank per model replica for now");
}

double CudaEngine::grad_norm() {
  cuda::sum_squares(g_, table_.total_elements(), partial_, scalar_, stream_);
  return std::sqrt(device_scalar());
}

void CudaEngine::optimizer_step(double lr, const AdamWConfig& a, double grad_scale) {
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
  cuda::adamw_step(w_, m_, v_, g_, wb_, chunks_, n_chunks_, args, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const EngineOptions& opts) {
  return std::make_unique<CudaEngine>(cfg, opts);
}

}  // namespace qwen3
