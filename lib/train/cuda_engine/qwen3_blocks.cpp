// The Qwen3 decoder layer's blocks on the CUDA ops (see qwen3_blocks.h).
#include "train/cuda_engine/qwen3_blocks.h"

#include "ops/cuda/elementwise.h"
#include "ops/cuda/qk_norm_rope.h"

namespace qwen3::cuda {

void Qwen3Blocks::attention_block_forward(std::int64_t l, LayerActs& a, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  sp_.norm_gathered(a.x_in, p.input_norm, a.h_in, a.rstd_in, d, lin_.produce_input_amax(a, Fp8Linear::qkv));
  lin_.forward(a.h_in, l, Fp8Linear::qkv, a, a.qkv, nullptr, d.T);  // q|k|v in one GEMM
  ctx_.mark("gemm qkv fwd");
  qk_norm_rope_forward(a.qkv, ctx_.W(p.q_norm), a.q, a.rstd_q, d.qshape, ctx_.stream);
  ctx_.mark("qk norm+rope fwd");
  qk_norm_rope_forward(a.qkv + d.qd, ctx_.W(p.k_norm), a.k, a.rstd_k, d.kshape, ctx_.stream);
  ctx_.mark("qk norm+rope fwd");
  attention_.forward(a, d);
  sp_.row_parallel(a.attn, l, Fp8Linear::o, a, a.x_in, a.x_mid, "gemm o fwd", d);
}

void Qwen3Blocks::mlp_block_forward(std::int64_t l, LayerActs& a, bf16* next, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  sp_.norm_gathered(a.x_mid, p.post_norm, a.h_mid, a.rstd_mid, d, lin_.produce_input_amax(a, Fp8Linear::gate_up));
  lin_.forward(a.h_mid, l, Fp8Linear::gate_up, a, a.gate_up, nullptr, d.T);  // gate|up
  ctx_.mark("gemm gate_up fwd");
  if (const SwigluFwdFp8* f8 = lin_.produce_input_fp8(l, a, d.T))  // delayed scaling: down's E4M3 operand only
    swiglu_forward_fp8(a.gate_up, d.T, d.I, *f8, ctx_.stream);
  else
    swiglu_forward(a.gate_up, s_.act, d.T, d.I, ctx_.stream, lin_.produce_input_amax(a, Fp8Linear::down));
  ctx_.mark("swiglu fwd");
  sp_.row_parallel(s_.act, l, Fp8Linear::down, a, a.x_mid, next, "gemm down fwd", d);
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
  const auto dy = lin_.grad(sp_.dy(), l, Fp8Linear::down, 0, d.T);
  lin_.backward_data(dy, l, s_.dact, d.T);
  ctx_.mark("gemm down bwd data");
  if (lin_.fp8()) {  // the recomputed SwiGLU product goes out as down's transposed FP8 weight-gradient operand only
    const auto t = lin_.produce_input_t(a, Fp8Linear::down, d.T);
    const SwigluGradFp8* g8 = lin_.produce_grad_fp8(l, 1, d.T);  // delayed scaling: gate|up's gradient in E5M2 too
    swiglu_backward_fp8t(a.gate_up, s_.dact, g8 ? nullptr : s_.dgate_up, d.T, d.I, t.amax, t.cols, t.ld, t.inv, st,
                         g8 ? nullptr : lin_.produce_grad_amax(1), g8);
  } else {
    swiglu_backward(a.gate_up, s_.dact, s_.dgate_up, d.T, d.I, st, s_.act,  // also recomputes the SwiGLU product
                    lin_.produce_grad_amax(1));
  }
  ctx_.mark("swiglu bwd");
  const auto dgate_up = lin_.grad(s_.dgate_up, l, Fp8Linear::gate_up, 1, d.T);
  lin_.backward_data(dgate_up, l, s_.dh, d.T, false);
  ctx_.mark("gemm gate_up bwd data");
  sp_.block_tail(a.x_mid, p.post_norm, a.rstd_mid, true, [&] {
    // down's first: in FP8 its operand is the SwiGLU backward's copy in the cast buffer that gate|up's cast rewrites
    lin_.backward_weight(dy, s_.act, l, a, d.T, accumulate);
    ctx_.mark("gemm down bwd weight");
    lin_.backward_weight(dgate_up, a.h_mid, l, a, d.T, accumulate);  // gate, up
    ctx_.mark("gemm gate_up bwd weight");
  }, d);
}

void Qwen3Blocks::attention_block_backward(std::int64_t l, LayerActs& a, bool more, bool accumulate, const MicroDims& d) {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  const cudaStream_t st = ctx_.stream;
  const auto dy = lin_.grad(sp_.dy(), l, Fp8Linear::o, 0, d.T);
  lin_.backward_data(dy, l, s_.dattn, d.T);
  ctx_.mark("gemm o bwd data");
  attention_.backward(a, d);
  qk_norm_rope_backward(a.qkv, ctx_.W(p.q_norm), a.rstd_q, s_.dq, s_.dqkv, ctx_.G(p.q_norm), d.qshape, st);
  ctx_.mark("qk norm+rope bwd");
  qk_norm_rope_backward(a.qkv + d.qd, ctx_.W(p.k_norm), a.rstd_k, s_.dk, s_.dqkv + d.qd, ctx_.G(p.k_norm), d.kshape, st);
  ctx_.mark("qk norm+rope bwd");
  const auto dqkv = lin_.grad(s_.dqkv, l, Fp8Linear::qkv, 1, d.T);
  lin_.backward_data(dqkv, l, s_.dh, d.T, false);
  ctx_.mark("gemm qkv bwd data");
  sp_.block_tail(a.x_in, p.input_norm, a.rstd_in, more, [&] {
    lin_.backward_weight(dy, a.attn, l, a, d.T, accumulate);
    ctx_.mark("gemm o bwd weight");
    lin_.backward_weight(dqkv, a.h_in, l, a, d.T, accumulate);  // q, k, v
    ctx_.mark("gemm qkv bwd weight");
  }, d);
}

void Qwen3Blocks::layer_backward(std::int64_t l, LayerActs& a, bool more, bool accumulate, const MicroDims& d) {
  mlp_block_backward(l, a, accumulate, d);
  attention_block_backward(l, a, more, accumulate, d);
}

}  // namespace qwen3::cuda
