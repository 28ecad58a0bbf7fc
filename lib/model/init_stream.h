// The per-element formula of the deterministic initialisation (model/init.h), written once for the host and the
// GPU: element i of a tensor is a normal draw from the tensor's splitmix64 stream, computed from i alone (the stream's
// state after n draws is start + n·γ), so any block of any shard is computed without the rest, in parallel, with the
// same values everywhere (Box–Muller in double precision; the GPU's double log/sqrt/sin/cos differ from the host's by
// an ulp of a double at most, far below the float the value is rounded to).
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define QWEN3_HOST_DEVICE __host__ __device__
#else
#define QWEN3_HOST_DEVICE
#endif

namespace qwen3 {

inline constexpr std::uint64_t kInitGamma = 0x9e3779b97f4a7c15ULL;  // splitmix64's increment

// The stream of tensor `index` of the full parameter table: one per tensor, so sharded initialisations agree.
QWEN3_HOST_DEVICE inline std::uint64_t init_stream_start(std::uint64_t seed, std::uint64_t index) {
  return seed * 0x100000001b3ULL + index;
}

// splitmix64's output for an already advanced state (core/random.h: splitmix64 = advance, then this).
QWEN3_HOST_DEVICE inline std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Element i (row-major over the whole tensor) ~ N(0, std²): elements 2q and 2q+1 share draws 2q and 2q+1 of the
// stream (Box–Muller's cosine and sine).
QWEN3_HOST_DEVICE inline float init_normal_element(std::uint64_t start, std::int64_t i, double std) {
  const std::uint64_t q = static_cast<std::uint64_t>(i / 2);
  const std::uint64_t s1 = start + (2 * q + 1) * kInitGamma, s2 = s1 + kInitGamma;
  const double u1 = (static_cast<double>(splitmix64_mix(s1) >> 11) + 0.5) * 0x1.0p-53;
  const double u2 = (static_cast<double>(splitmix64_mix(s2) >> 11) + 0.5) * 0x1.0p-53;
  const double r = sqrt(-2.0 * log(u1)), a = 2.0 * 3.141592653589793 * u2;
  return static_cast<float>(std * r * (i % 2 == 0 ? cos(a) : sin(a)));
}

}  // namespace qwen3
