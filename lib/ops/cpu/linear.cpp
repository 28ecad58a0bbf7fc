// CPU reference projection (see linear.h). Activations are float64 (types.h).
#include "ops/cpu/linear.h"

#include <vector>

namespace qwen3::cpu {

void linear_forward(const act_t* x, const float* w, act_t* y, std::int64_t T, std::int64_t in, std::int64_t out) {
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < T; ++t) {
    const act_t* xt = x + t * in;
    for (std::int64_t o = 0; o < out; ++o) {
      const float* wo = w + o * in;
      double acc = 0;
      for (std::int64_t i = 0; i < in; ++i) acc += static_cast<double>(xt[i]) * wo[i];
      y[t * out + o] = acc;
    }
  }
}

void linear_backward(const act_t* x, const float* w, const act_t* dy, act_t* dx, float* dw, std::int64_t T,
                     std::int64_t in, std::int64_t out, bool accumulate_dx) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (std::int64_t t = 0; t < T; ++t) {
      const act_t* dyt = dy + t * out;
      for (std::int64_t i = 0; i < in; ++i) {
        double acc = 0;
        for (std::int64_t o = 0; o < out; ++o) acc += static_cast<double>(dyt[o]) * w[o * in + i];
        dx[t * in + i] = accumulate_dx ? dx[t * in + i] + acc : acc;
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t o = 0; o < out; ++o) {
    std::vector<double> acc(static_cast<std::size_t>(in), 0.0);  // row o of dW, summed over tokens
    for (std::int64_t t = 0; t < T; ++t) {
      const double d = dy[t * out + o];
      const act_t* xt = x + t * in;
      for (std::int64_t i = 0; i < in; ++i) acc[i] += d * xt[i];
    }
    for (std::int64_t i = 0; i < in; ++i) dw[o * in + i] += static_cast<float>(acc[i]);
  }
}

}  // namespace qwen3::cpu
