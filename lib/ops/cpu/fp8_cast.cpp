// CPU FP8 casts (see fp8_cast.h).
#include "ops/cpu/fp8_cast.h"

#include <cmath>
#include <limits>

namespace qwen3::cpu {
namespace {
template <typename T>
double amax_of(const T* x, std::int64_t n) {
  double m = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(x[i]));
    if (std::isnan(a)) return std::numeric_limits<double>::quiet_NaN();
    m = a > m ? a : m;
  }
  return m;
}
}  // namespace

double fp8_amax(const act_t* x, std::int64_t n) { return amax_of(x, n); }
double fp8_amax(const float* x, std::int64_t n) { return amax_of(x, n); }

void fp8_round_trip(act_t* x, std::int64_t n, float scale, Fp8Format format) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = fp8_round_trip(x[i], scale, format);
}

std::vector<float> fp8_round_trip(const float* w, std::int64_t n, float scale, Fp8Format format) {
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<float>(fp8_round_trip(w[i], scale, format));
  return out;
}

}  // namespace qwen3::cpu
