// CPU reference cross-entropy (see cross_entropy.h).
#include "ops/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>

namespace qwen3::cpu {

LossSum cross_entropy(const act_t* logits, const std::int32_t* labels, act_t* dlogits, std::int64_t T, std::int64_t V,
                      double grad_scale) {
  LossSum total;
  double sum = 0;
  std::int64_t count = 0;
#pragma omp parallel for reduction(+ : sum, count) schedule(static)
  for (std::int64_t t = 0; t < T; ++t) {
    const act_t* row = logits + t * V;
    act_t* drow = dlogits ? dlogits + t * V : nullptr;
    const std::int32_t label = labels[t];
    if (label == kIgnoreLabel) {
      if (drow) std::fill(drow, drow + V, 0.0);
      continue;
    }
    double m = row[0];
    for (std::int64_t i = 1; i < V; ++i) m = std::max(m, static_cast<double>(row[i]));
    double z = 0;
    for (std::int64_t i = 0; i < V; ++i) z += std::exp(row[i] - m);
    const double lse = m + std::log(z);
    sum += lse - row[label];
    count += 1;
    if (drow) {
      for (std::int64_t i = 0; i < V; ++i) {
        const double p = std::exp(row[i] - lse);
        drow[i] = (p - (i == label ? 1.0 : 0.0)) * grad_scale;
      }
    }
  }
  total.sum = sum;
  total.count = count;
  return total;
}

}  // namespace qwen3::cpu
