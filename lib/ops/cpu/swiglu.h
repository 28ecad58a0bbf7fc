// CPU reference (float64 activations, float32 parameters; types.h): SwiGLU activation a = silu(gate) · up, forward and backward.
#pragma once
#include <cstdint>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

// a[n] = gate·sigmoid(gate)·up   (n = tokens·intermediate)
void swiglu_forward(const act_t* gate, const act_t* up, act_t* a, std::int64_t n);
// dgate[n] = da·up·σ(g)·(1 + g·(1 − σ(g))),  dup[n] = da·silu(g)
void swiglu_backward(const act_t* gate, const act_t* up, const act_t* da, act_t* dgate, act_t* dup, std::int64_t n);

}  // namespace qwen3::cpu
