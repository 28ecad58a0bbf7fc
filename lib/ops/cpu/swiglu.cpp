// CPU reference SwiGLU (see swiglu.h).
#include "ops/cpu/swiglu.h"

#include <cmath>

namespace qwen3::cpu {

void swiglu_forward(const act_t* gate, const act_t* up, act_t* a, std::int64_t n) {
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double sig = 1.0 / (1.0 + std::exp(-g));
    a[i] = g * sig * up[i];
  }
}

void swiglu_backward(const act_t* gate, const act_t* up, const act_t* da, act_t* dgate, act_t* dup, std::int64_t n) {
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double sig = 1.0 / (1.0 + std::exp(-g));
    const double d = da[i];
    dgate[i] = d * up[i] * sig * (1.0 + g * (1.0 - sig));
    dup[i] = d * g * sig;
  }
}

}  // namespace qwen3::cpu
