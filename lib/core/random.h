// splitmix64: the one small, platform-independent random generator for seeded inits and shuffles.
#pragma once
#include <cstdint>

namespace qwen3 {

// Advances state and returns the next 64 random bits (Steele, Lea & Flood 2014).
inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace qwen3
