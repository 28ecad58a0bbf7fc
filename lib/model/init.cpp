// Deterministic initialisation (see init.h): splitmix64 + Box-Muller, so the result does not depend on the C++ library.
#include "model/init.h"

#include <cmath>
#include <numbers>

#include "core/random.h"

namespace qwen3 {
namespace {
double uniform01(std::uint64_t& s) { return (static_cast<double>(splitmix64(s) >> 11) + 0.5) * 0x1.0p-53; }
}  // namespace

void init_weights(const ParamTable& table, std::uint64_t seed, double std, float* w) {
  for (std::size_t p = 0; p < table.entries().size(); ++p) {
    const auto& e = table.entries()[p];
    float* dst = w + e.offset;
    if (e.shape.size() < 2) {
      for (std::int64_t i = 0; i < e.numel; ++i) dst[i] = 1.0f;
      continue;
    }
    std::uint64_t state = seed * 0x100000001b3ULL + p;  // one stream per tensor: sharded inits agree
    for (std::int64_t i = 0; i < e.numel; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(uniform01(state)));
      const double a = 2.0 * std::numbers::pi * uniform01(state);
      dst[i] = static_cast<float>(std * r * std::cos(a));
      if (i + 1 < e.numel) dst[i + 1] = static_cast<float>(std * r * std::sin(a));
    }
  }
}

}  // namespace qwen3
