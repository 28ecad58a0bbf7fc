// Deterministic initialisation (see init.h): splitmix64 + Box-Muller, so the result does not depend on the C++ library.
#include "model/init.h"

#include <cmath>
#include <numbers>

#include "core/random.h"

namespace qwen3 {
namespace {
constexpr std::uint64_t kGamma = 0x9e3779b97f4a7c15ULL;  // splitmix64's increment
double to_uniform01(std::uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }
}  // namespace

// Element pair (2q, 2q+1) of a tensor takes draws 2q and 2q+1 of the tensor's splitmix64 stream. splitmix64's state
// after n draws is start + n·γ, so each pair is computed from its index alone and the pairs run in parallel with the
// same values as a sequential walk.
void init_tensor(const ParamTable& table, std::size_t p, std::uint64_t seed, double std, float* dst) {
  const auto& e = table.entries()[p];
  if (e.shape.size() < 2) {
    for (std::int64_t i = 0; i < e.numel; ++i) dst[i] = 1.0f;
    return;
  }
  const std::uint64_t start = seed * 0x100000001b3ULL + p;  // one stream per tensor: sharded inits agree
  const std::int64_t pairs = (e.numel + 1) / 2;
#pragma omp parallel for schedule(static)
  for (std::int64_t q = 0; q < pairs; ++q) {
    std::uint64_t s1 = start + static_cast<std::uint64_t>(2 * q) * kGamma;
    std::uint64_t s2 = s1 + kGamma;
    const double r = std::sqrt(-2.0 * std::log(to_uniform01(splitmix64(s1))));
    const double a = 2.0 * std::numbers::pi * to_uniform01(splitmix64(s2));
    dst[2 * q] = static_cast<float>(std * r * std::cos(a));
    if (2 * q + 1 < e.numel) dst[2 * q + 1] = static_cast<float>(std * r * std::sin(a));
  }
}

void init_tensor_block(const ParamTable& table, std::size_t p, std::uint64_t seed, double std, std::int64_t row0,
                       std::int64_t rows, std::int64_t col0, std::int64_t cols, float* dst) {
  const auto& e = table.entries()[p];
  if (e.shape.size() < 2) {
    for (std::int64_t i = 0; i < rows * cols; ++i) dst[i] = 1.0f;
    return;
  }
  const std::int64_t width = e.numel / e.shape[0];
  const std::uint64_t start = seed * 0x100000001b3ULL + p;
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::int64_t i = (row0 + r) * width + col0 + c, q = i / 2;  // element i is half of pair q
      std::uint64_t s1 = start + static_cast<std::uint64_t>(2 * q) * kGamma;
      std::uint64_t s2 = s1 + kGamma;
      const double rad = std::sqrt(-2.0 * std::log(to_uniform01(splitmix64(s1))));
      const double a = 2.0 * std::numbers::pi * to_uniform01(splitmix64(s2));
      dst[r * cols + c] = static_cast<float>(std * rad * (i % 2 == 0 ? std::cos(a) : std::sin(a)));
    }
}

void init_weights(const ParamTable& table, std::uint64_t seed, double std, float* w) {
  for (std::size_t p = 0; p < table.entries().size(); ++p) init_tensor(table, p, seed, std, w + table.entries()[p].offset);
}

}  // namespace qwen3
