// CPU reference (float64 activations, float32 parameters; types.h): dense projection y = x·Wᵀ (PyTorch Linear layout, W is [out, in]), forward and backward.
#pragma once
#include <cstdint>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

// y[T, out] = x[T, in] · W[out, in]ᵀ
void linear_forward(const act_t* x, const float* w, act_t* y, std::int64_t tokens, std::int64_t in, std::int64_t out);

// dx[T, in] (+)= dy[T, out] · W[out, in]  (accumulate_dx: add into dx instead of overwriting)
// dW[out, in] += dy[T, out]ᵀ · x[T, in]   (always accumulates: gradients add across micro-batches)
void linear_backward(const act_t* x, const float* w, const act_t* dy, act_t* dx, float* dw, std::int64_t tokens,
                     std::int64_t in, std::int64_t out, bool accumulate_dx = false);

}  // namespace qwen3::cpu
