// CPU reference (float64 activations, float32 parameters; types.h): token embedding lookup, forward (gather) and backward (scatter-add).
#pragma once
#include <cstdint>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

// x[T, H] = table[ids[t], :]
void embedding_forward(const std::int32_t* ids, const float* table, act_t* x, std::int64_t tokens, std::int64_t hidden);
// dtable[ids[t], :] += dx[t, :]
void embedding_backward(const std::int32_t* ids, const act_t* dx, float* dtable, std::int64_t tokens, std::int64_t hidden);

}  // namespace qwen3::cpu
