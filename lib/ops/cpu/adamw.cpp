// CPU float32 reference AdamW (see adamw.h). Order of operations follows torch.optim.AdamW (single-tensor path).
#include "ops/cpu/adamw.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/bf16.h"

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

namespace {

struct F32Coefficients {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, decay, step_size, bias_correction2_sqrt, eps, grad_scale;
};

// One block of adamw_step_f32, compiled for each instruction set (the loop vectorises: no branches, sqrt without
// errno: this file builds with -fno-math-errno).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void adamw_block(float* __restrict w, float* __restrict m, float* __restrict v, const float* __restrict g,
                 std::uint16_t* __restrict wb, std::int64_t n, const F32Coefficients k) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float grad = g[i] * k.grad_scale;
    const float mi = k.beta1 * m[i] + k.one_minus_beta1 * grad;
    const float vi = k.beta2 * v[i] + k.one_minus_beta2 * grad * grad;
    const float wi = w[i] * k.decay - k.step_size * mi / (std::sqrt(vi) / k.bias_correction2_sqrt + k.eps);
    m[i] = mi;
    v[i] = vi;
    w[i] = wi;
    wb[i] = bf16_bits(wi);
  }
}

}  // namespace

void adamw_step_f32(float* w, float* m, float* v, const float* g, std::uint16_t* w_bf16, std::int64_t n,
                    const AdamWStep& s) {
  const auto f = [](double x) { return static_cast<float>(x); };
  const F32Coefficients k{f(s.beta1), f(s.beta2), 1.0f - f(s.beta1), 1.0f - f(s.beta2),
                          1.0f - f(s.lr) * f(s.weight_decay),
                          f(s.lr) / f(1.0 - std::pow(s.beta1, static_cast<double>(s.step))),
                          f(std::sqrt(1.0 - std::pow(s.beta2, static_cast<double>(s.step)))), f(s.eps), f(s.grad_scale)};
  constexpr std::int64_t kBlock = 1 << 14;
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < n; b += kBlock) {
    const std::int64_t e = std::min(n, b + kBlock);
    adamw_block(w + b, m + b, v + b, g + b, w_bf16 + b, e - b, k);
  }
}

}  // namespace qwen3::cpu
