// The Qwen3 decoder layer's blocks on the CUDA ops (see qwen3_blocks.h).
#include "train/cuda_engine/qwen3_blocks.h"

#include "ops/cuda/elementwise.h"
#include "ops/cuda/qk_norm_rope.h"

namespace qwen3::cuda {

void Qwen3Blocks::attention_block_forward(std::int64_t l, LayerActs& a, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  sp_.norm_gathered(a.x_in, p.input_norm, a.h_in, a.rstd_in, d);
  ctx_.gemm.forward(a.h_in, ctx_.W(p.q_proj), a.qkv, nullptr, d.T, d.H, d.qkv_dim, ctx_.stream);  // q|k|v in one GEMM
  ctx_.mark("gemm qkv fwd");
  qk_norm_rope_forward(a.qkv, ctx_.W(p.q_norm), a.q, a.rstd_q, d.qshape, ctx_.stream);
  ctx_.mark("qk norm+rope fwd");
  qk_norm_rope_forward(a.qkv + d.qd, ctx_.W(p.k_norm), a.k, a.rstd_k, d.kshape, ctx_.stream);
  ctx_.mark("qk norm+rope fwd");
  attention_.forward(a, d);
  sp_.row_parallel(a.attn, p.o_proj, d.qd, a.x_in, a.x_mid, "gemm o fwd", d);
}

void Qwen3Blocks::mlp_block_forward(std::int64_t l, LayerActs& a, bf16* next, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  sp_.norm_gathered(a.x_mid, p.post_norm, a.h_mid, a.rstd_mid, d);
  ctx_.gemm.forward(a.h_mid, ctx_.W(p.gate_proj), a.gate_up, nullptr, d.T, d.H, 2 * d.I, ctx_.stream);  // gate|up
  ctx_.mark("gemm gate_up fwd");
  swiglu_forward(a.gate_up, s_.act, d.T, d.I, ctx_.stream);
  ctx_.mark("swiglu fwd");
  sp_.row_parallel(s_.act, p.down_proj, d.I, a.x_mid, next, "gemm down fwd", d);
}

void Qwen3Blocks::layer_forward(std::int64_t l, LayerActs& a, bf16* next, const MicroDims& d) {
  attention_block_forward(l, a, d);
  mlp_block_forward(l, a, next, d);
}

void Qwen3Blocks::recompute_selective(std::int64_t l, LayerActs& a, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  sp_.norm_gathered(a.x_in, p.input_norm, a.h_in, a.rstd_in, d);
  qk_norm_rope_forward(a.qkv, ctx_.W(p.q_norm), a.q, a.rstd_q, d.qshape, ctx_.stream);
  qk_norm_rope_forward(a.qkv + d.qd, ctx_.W(p.k_norm), a.k, a.rstd_k, d.kshape, ctx_.stream);
  sp_.norm_gathered(a.x_mid, p.post_norm, a.h_mid, a.rstd_mid, d);
  ctx_.mark("(recompute) norms and q, k");
}

void Qwen3Blocks::mlp_block_backward(std::int64_t l, LayerActs& a, bool accumulate, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  const cudaStream_t st = ctx_.stream;
  const bf16* dy = sp_.dy();
  ctx_.gemm.backward_data(dy, ctx_.W(p.down_proj), s_.dact, d.T, d.I, d.H, st);
  ctx_.mark("gemm down bwd data");
  swiglu_backward(a.gate_up, s_.dact, s_.dgate_up, d.T, d.I, st, s_.act);  // also recomputes the SwiGLU product
  ctx_.mark("swiglu bwd");
  ctx_.gemm.backward_data(s_.dgate_up, ctx_.W(p.gate_proj), s_.dh, d.T, d.H, 2 * d.I, false, st);
  ctx_.mark("gemm gate_up bwd data");
  sp_.block_tail(a.x_mid, p.post_norm, a.rstd_mid, true, [&] {
    ctx_.gemm.backward_weight(dy, s_.act, ctx_.G(p.down_proj), d.T, d.I, d.H, accumulate, st);
    ctx_.mark("gemm down bwd weight");
    ctx_.gemm.backward_weight(s_.dgate_up, a.h_mid, ctx_.G(p.gate_proj), d.T, d.H, 2 * d.I, accumulate, st);  // gate, up
    ctx_.mark("gemm gate_up bwd weight");
  }, d);
}

void Qwen3Blocks::attention_block_backward(std::int64_t l, LayerActs& a, bool more, bool accumulate, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  const cudaStream_t st = ctx_.stream;
  const bf16* dy = sp_.dy();
  ctx_.gemm.backward_data(dy, ctx_.W(p.o_proj), s_.dattn, d.T, d.qd, d.H, st);
  ctx_.mark("gemm o bwd data");
  attention_.backward(a, d);
  qk_norm_rope_backward(a.qkv, ctx_.W(p.q_norm), a.rstd_q, s_.dq, s_.dqkv, ctx_.G(p.q_norm), d.qshape, st);
  ctx_.mark("qk norm+rope bwd");
  qk_norm_rope_backward(a.qkv + d.qd, ctx_.W(p.k_norm), a.rstd_k, s_.dk, s_.dqkv + d.qd, ctx_.G(p.k_norm), d.kshape, st);
  ctx_.mark("qk norm+rope bwd");
  ctx_.gemm.backward_data(s_.dqkv, ctx_.W(p.q_proj), s_.dh, d.T, d.H, d.qkv_dim, false, st);
  ctx_.mark("gemm qkv bwd data");
  sp_.block_tail(a.x_in, p.input_norm, a.rstd_in, more, [&] {
    ctx_.gemm.backward_weight(dy, a.attn, ctx_.G(p.o_proj), d.T, d.qd, d.H, accumulate, st);
    ctx_.mark("gemm o bwd weight");
    ctx_.gemm.backward_weight(s_.dqkv, a.h_in, ctx_.G(p.q_proj), d.T, d.H, d.qkv_dim, accumulate, st);  // q, k, v
    ctx_.mark("gemm qkv bwd weight");
  }, d);
}

void Qwen3Blocks::layer_backward(std::int64_t l, LayerActs& a, bool more, bool accumulate, const MicroDims& d) {
  mlp_block_backward(l, a, accumulate, d);
  attention_block_backward(l, a, more, accumulate, d);
}

}  // namespace qwen3::cuda
