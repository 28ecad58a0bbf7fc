// CPU reference RMSNorm (see rmsnorm.h).
#include "ops/cpu/rmsnorm.h"

#include <cmath>
#include <vector>

namespace qwen3::cpu {

void rmsnorm_forward(const act_t* x, const float* w, act_t* y, act_t* rstd, std::int64_t rows, std::int64_t dim, double eps) {
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) {
    const act_t* xr = x + r * dim;
    double ss = 0;
    for (std::int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const double s = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    rstd[r] = s;
    for (std::int64_t i = 0; i < dim; ++i) y[r * dim + i] = xr[i] * s * w[i];
  }
}

void rmsnorm_backward(const act_t* x, const float* w, const act_t* rstd, const act_t* dy, act_t* dx, float* dw,
                      std::int64_t rows, std::int64_t dim) {
  std::vector<double> dw_acc(static_cast<std::size_t>(dim), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const act_t* xr = x + r * dim;
    const act_t* dyr = dy + r * dim;
    const double s = rstd[r];
    double dot = 0;  // Σ dy·w·x
    for (std::int64_t i = 0; i < dim; ++i) {
      dot += static_cast<double>(dyr[i]) * w[i] * xr[i];
      dw_acc[i] += static_cast<double>(dyr[i]) * xr[i] * s;
    }
    const double k = s * s * s * dot / static_cast<double>(dim);
    for (std::int64_t i = 0; i < dim; ++i) dx[r * dim + i] = s * dyr[i] * w[i] - xr[i] * k;
  }
  for (std::int64_t i = 0; i < dim; ++i) dw[i] += static_cast<float>(dw_acc[i]);
}

}  // namespace qwen3::cpu
