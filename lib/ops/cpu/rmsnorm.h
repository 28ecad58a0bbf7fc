// CPU reference (float64 activations, float32 parameters; types.h): RMSNorm over the last dimension (y = x / rms(x) · w), forward and backward.
// Used for the block norms ([T, H], weight [H]) and for Qwen3's per-head q/k norms ([T·heads, head_dim], weight [head_dim]).
#pragma once
#include <cstdint>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

// y[rows, dim] = x · rstd · w;  rstd[rows] = 1 / sqrt(mean(x²) + eps) is saved for the backward.
void rmsnorm_forward(const act_t* x, const float* w, act_t* y, act_t* rstd, std::int64_t rows, std::int64_t dim, double eps);

// dx[rows, dim] = rstd·(dy·w) − x·rstd³·mean(dy·w·x);  dw[dim] += Σ_rows dy·x·rstd.  dx may alias dy.
void rmsnorm_backward(const act_t* x, const float* w, const act_t* rstd, const act_t* dy, act_t* dx, float* dw,
                      std::int64_t rows, std::int64_t dim);

}  // namespace qwen3::cpu
