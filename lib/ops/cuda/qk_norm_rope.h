// CUDA per-head q/k RMSNorm fused with rotate-half RoPE, forward and backward
// (reference: ops/cpu/rmsnorm.h over [T·heads, head_dim] followed by ops/cpu/rope.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

struct QkShape {
  std::int64_t batch, seq, heads, head_dim;
  float theta, eps;
  std::int64_t x_row_stride;  // elements between consecutive tokens of x and dx (a column slice of the fused
                              // q|k|v projection output); heads·head_dim when contiguous
  // Optional device tables cos/sin[seq][head_dim/2] (ops/cpu/rope.h's rope_table, uploaded): used when non-null,
  // otherwise the angles are computed in the kernel the same way (float32 inv_freq and position·inv_freq).
  const float* rope_cos = nullptr;
  const float* rope_sin = nullptr;
};

// x[B·S tokens, row stride x_row_stride][heads, D] (projection output) → y[B, S, heads, D] = rope(rmsnorm(x)·w)
// bf16 (contiguous), rstd[B·S·heads] fp32.
void qk_norm_rope_forward(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, float* rstd,
                          const QkShape& s, cudaStream_t stream);

// dy[B, S, heads, D] (gradient after RoPE, contiguous) → dx (gradient of the projection output, laid out as x,
// row stride x_row_stride), dw[D] fp32 +=.
void qk_norm_rope_backward(const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                           const __nv_bfloat16* dy, __nv_bfloat16* dx, float* dw, const QkShape& s, cudaStream_t stream);

}  // namespace qwen3::cuda
