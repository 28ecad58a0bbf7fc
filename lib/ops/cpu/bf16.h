// float32 → bfloat16 on the CPU, rounding to nearest even as CUDA's __float2bfloat16 (ops/cuda/elementwise.h's
// cast_f32_to_bf16) does; NaN stays a (quiet) NaN. The host optimizer (--offload-optimizer, ops/cpu/adamw.h) rounds
// the bf16 compute weights with it, and --export-hf's bf16 safetensors (io/safetensors.cpp) their weights.
#pragma once
#include <cstdint>
#include <cstring>

namespace qwen3::cpu {

// Branch-free, so that loops over it vectorise.
inline std::uint16_t bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const std::uint32_t nan = (u >> 16) | 0x40u, rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

}  // namespace qwen3::cpu
