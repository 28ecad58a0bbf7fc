// CUDA RMSNorm, forward and backward (reference: ops/cpu/rmsnorm.h). bf16 activations, fp32 statistics and gradients.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

// y[rows, dim] = x·rstd·w (bf16), rstd[rows] fp32. w is the bf16 compute copy of the weight. y_amax (optional):
// max |y| as fp8_amax would give it (NaN when one is NaN), taken in the same pass — FP8's current scaling.
void rmsnorm_forward(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, float* rstd, std::int64_t rows,
                     std::int64_t dim, float eps, cudaStream_t stream, float* y_amax = nullptr);

// dy[rows, dim] fp32 → dx fp32 (written, or added into when accumulate), dw[dim] fp32 += Σ dy·x·rstd.
// dx_bf16 (optional, [rows, dim]) receives a bf16 copy of the resulting dx in the same pass, and dx_bf16_amax
// (optional, with dx_bf16) that copy's amax, as rmsnorm_forward's y_amax.
void rmsnorm_backward(const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd, const float* dy, float* dx,
                      float* dw, std::int64_t rows, std::int64_t dim, bool accumulate, cudaStream_t stream,
                      __nv_bfloat16* dx_bf16 = nullptr, float* dx_bf16_amax = nullptr);

}  // namespace qwen3::cuda
