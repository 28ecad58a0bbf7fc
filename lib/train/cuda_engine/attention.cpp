// One layer's attention, whole-sequence or context-parallel (see attention.h).
#include "train/cuda_engine/attention.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "gpu/check.h"
#include "model/context_parallel.h"
#include "model/sequence_layout.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/elementwise.h"
#ifdef QWEN3_HAVE_CUDNN
#include "gpu/cudnn_attention.h"
#else
namespace qwen3::cuda {
class CudnnAttention {};  // not built: the own kernels only
struct SdpaShape {};
}  // namespace qwen3::cuda
#endif

namespace qwen3::cuda {

Attention::Attention(const ModelConfig& cfg, const TpDims& tp, int cp, int cp_rank, std::int64_t max_batch,
                     std::int64_t max_seq, bool cudnn)
    : cfg_(cfg), tp_(tp), cp_size_(cp), cp_rank_(cp_rank), use_cudnn_(cudnn) {
  const auto& t = tp;
  if (cp > 1 && !cudnn)  // refused by the rank's plan (train/rank_plan.h) before an engine is built
    throw InternalError("the own attention kernels under context parallelism");
  if (cudnn) {
#ifdef QWEN3_HAVE_CUDNN
    try {  // what the memory plan counted: a failure here is said, never replaced by the other kernels
      cudnn_ = std::make_unique<CudnnAttention>();
      const std::int64_t qkv = t.q_dim + 2 * t.kv_dim;
      if (cp == 1)
        workspace_bytes_ = static_cast<std::int64_t>(cudnn_->workspace_bytes(
            {max_batch, max_seq, t.heads, t.kv_heads, cfg.head_dim, t.q_dim, t.kv_dim, qkv, t.q_dim}));
      else  // this rank's two chunk-attention calls
        workspace_bytes_ = static_cast<std::int64_t>(std::max(cudnn_->workspace_bytes(chunk_shape(0, max_batch, max_seq)),
                                                              cudnn_->workspace_bytes(chunk_shape(1, max_batch, max_seq))));
    } catch (const InternalError& e) {
      throw UsageError(std::string("--attention cudnn: cuDNN fused attention is unavailable for this run (") + e.what() +
                       "); --attention own runs the project's own kernels");
    }
#else
    throw UsageError("--attention cudnn: this build has no cuDNN; --attention own runs the project's own kernels");
#endif
  }
  if (!use_cudnn_)
    workspace_bytes_ = static_cast<std::int64_t>(
        attention_backward_workspace_bytes({max_batch, max_seq, t.heads, t.kv_heads, cfg.head_dim}));
}

Attention::~Attention() = default;

void Attention::bind(const EngineContext& ctx, const DeviceBuffers& b, const Scratch& scratch, DeviceGroup* cp,
                     std::int64_t max_seq) {
  ctx_ = &ctx;
  workspace_ = b.get<void>(Buf::attention_workspace);
  scratch_ = scratch;
  cp_ = cp;
  rope_cos_ = b.get<float>(Buf::rope_cos);
  rope_sin_ = b.get<float>(Buf::rope_sin);
  kv_local_ = b.get<bf16>(Buf::cp_kv_local);
  kv_ranks_ = b.get<bf16>(Buf::cp_kv_ranks);
  kv_full_ = b.get<bf16>(Buf::cp_kv_full);
  dkv_ = b.get<bf16>(Buf::cp_dkv);
  dkv_first_ = b.get<bf16>(Buf::cp_dkv_first);
  if (cp_size_ == 1) set_sequence(max_seq);  // positions 0 … max_seq − 1 serve every shorter sequence
}

void Attention::set_sequence(std::int64_t S_full) {
  if (S_full == rope_seq_ || (cp_size_ == 1 && rope_seq_ > 0)) return;
  const cpu::RopeTable rope = context_parallel_rope(cp_rank_, cp_size_, S_full, cfg_.head_dim, cfg_.rope_theta);
  // On the main stream (a legacy-stream copy of pageable memory may still be in flight when it returns, unordered with
  // the non-blocking streams), after what earlier micro-batches read; done before the host vectors go.
  CUDA_CHECK(cudaMemcpyAsync(rope_cos_, rope.cos.data(), rope.cos.size() * sizeof(float), cudaMemcpyHostToDevice, ctx_->stream));
  CUDA_CHECK(cudaMemcpyAsync(rope_sin_, rope.sin.data(), rope.sin.size() * sizeof(float), cudaMemcpyHostToDevice, ctx_->stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
  rope_seq_ = S_full;
}

void Attention::forward(LayerActs& a, const MicroDims& d) {
  const cudaStream_t st = ctx_->stream;
  const bf16* v = a.qkv + d.qd + d.kvd;  // v's columns of the fused projection, row stride qkv_dim
#ifdef QWEN3_HAVE_CUDNN
  if (use_cudnn_ && cp_size_ > 1) return cp_forward(a, d);
  if (use_cudnn_) {
    const SdpaShape shape{d.B, d.S, d.heads, d.kv_heads, d.head_dim, d.qd, d.kvd, d.qkv_dim, d.qd};
    if (static_cast<std::int64_t>(cudnn_->workspace_bytes(shape)) > workspace_bytes_)
      throw InternalError("cuDNN attention workspace too small");
    cudnn_->forward(a.q, a.k, v, a.attn, a.lse, shape, workspace_, st);
    ctx_->mark("attention fwd");
    return;
  }
#endif
  copy_columns(v, d.qkv_dim, a.v, d.kvd, d.T, d.kvd, st);
  ctx_->mark("copy v");
  attention_forward(a.q, a.k, a.v, a.attn, a.lse, d.ashape, st);
  ctx_->mark("attention fwd");
}

void Attention::backward(LayerActs& a, const MicroDims& d) {
  const cudaStream_t st = ctx_->stream;
  const Scratch& s = scratch_;
  bf16* dv = s.dqkv + d.qd + d.kvd;
#ifdef QWEN3_HAVE_CUDNN
  if (use_cudnn_ && cp_size_ > 1) return cp_backward(a, d);
  if (use_cudnn_) {
    const SdpaShape shape{d.B, d.S, d.heads, d.kv_heads, d.head_dim, d.qd, d.kvd, d.qkv_dim, d.qd};
    cudnn_->backward(a.q, a.k, a.qkv + d.qd + d.kvd, a.attn, s.dattn, a.lse, s.dq, s.dk, dv, shape, workspace_, st);
    ctx_->mark("attention bwd");
    return;
  }
#endif
  attention_backward(a.q, a.k, a.v, a.attn, a.lse, s.dattn, s.dq, s.dk, s.dv, workspace_, d.ashape, st);
  ctx_->mark("attention bwd");
  copy_columns(s.dv, d.kvd, dv, d.qkv_dim, d.T, d.kvd, st);
  ctx_->mark("copy dv");
}

}  // namespace qwen3::cuda
