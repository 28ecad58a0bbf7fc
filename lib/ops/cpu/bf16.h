// float32 → bfloat16 on the CPU, rounding to nearest even as CUDA's __float2bfloat16 (ops/cuda/elementwise.h's
// cast_f32_to_bf16) does; NaN stays a (quiet) NaN. The host optimizer (--offload-optimizer) rounds the bf16 compute
// weights with it.
#pragma once
#include <cstdint>
#include <cstring>

namespace qwen3::cpu {

inline std::uint16_t bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

// out[i] = bf16_bits(in[i]) for i < n, over OpenMP's threads.
void to_bf16(const float* in, std::uint16_t* out, std::int64_t n);

}  // namespace qwen3::cpu
