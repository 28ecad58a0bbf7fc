// CPU reference of --precision fp8's casts (formats and scale rule: ops/fp8.h): a tensor's amax, and its values as an
// FP8 GEMM reads them — each rounded through the format with scale s and multiplied back by 1/s.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/cpu/types.h"
#include "ops/fp8.h"

namespace qwen3::cpu {

// max |x[i]| (NaN when one is NaN).
double fp8_amax(const act_t* x, std::int64_t n);
double fp8_amax(const float* x, std::int64_t n);

// x[i] ← its round trip through `format` with scale s (in place).
void fp8_round_trip(act_t* x, std::int64_t n, float scale, Fp8Format format);
// w's round trip, as float (exact: an FP8 value times a power of two).
std::vector<float> fp8_round_trip(const float* w, std::int64_t n, float scale, Fp8Format format);

}  // namespace qwen3::cpu
