// CPU reference projection (see linear.h). Activations are float64 (types.h).
#include "ops/cpu/linear.h"

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
    for (std::int64_t i = 0; i < in; ++i) {
      double acc = 0;
      for (std::int64_t t = 0; t < T; ++t) acc += static_cast<double>(dy[t * out + o]) * x[t * in + i];
      dw[o * in + i] += static_cast<float>(acc);
    }
  }
}

}  // namespace qwen3::cpu
