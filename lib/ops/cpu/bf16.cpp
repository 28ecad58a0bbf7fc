// float32 → bfloat16 (see bf16.h).
#include "ops/cpu/bf16.h"

namespace qwen3::cpu {

void to_bf16(const float* in, std::uint16_t* out, std::int64_t n) {
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_bits(in[i]);
}

}  // namespace qwen3::cpu
