// CPU float32 reference AdamW (see adamw.h). Order of operations follows torch.optim.AdamW (single-tensor path).
#include "ops/cpu/adamw.h"

#include <cmath>

namespace qwen3::cpu {

void adamw_step(float* w, float* m, float* v, const float* g, std::int64_t n, const AdamWStep& s) {
  const double bc1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
  const double bc2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
  const double step_size = s.lr / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const double grad = static_cast<double>(g[i]) * s.grad_scale;
    double wi = static_cast<double>(w[i]) * (1.0 - s.lr * s.weight_decay);
    const double mi = s.beta1 * m[i] + (1.0 - s.beta1) * grad;
    const double vi = s.beta2 * v[i] + (1.0 - s.beta2) * grad * grad;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    wi -= step_size * mi / (std::sqrt(vi) / bc2_sqrt + s.eps);
    w[i] = static_cast<float>(wi);
  }
}

}  // namespace qwen3::cpu
