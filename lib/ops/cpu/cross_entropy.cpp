// CPU reference cross-entropy (see cross_entropy.h).
#include "ops/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

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

LossSum cross_entropy_vocab_parallel(const act_t* logits, const std::int32_t* labels, act_t* dlogits, std::int64_t T,
                                     std::int64_t V, std::int64_t v0, double grad_scale, const RowReduce& reduce_max,
                                     const RowReduce& reduce_sum) {
  std::vector<double> m(static_cast<std::size_t>(T)), z(static_cast<std::size_t>(T)), target(static_cast<std::size_t>(T));
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < T; ++t) {
    const act_t* row = logits + t * V;
    double mx = row[0];
    for (std::int64_t i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
    m[t] = mx;
    const std::int64_t local = static_cast<std::int64_t>(labels[t]) - v0;
    target[t] = labels[t] != kIgnoreLabel && local >= 0 && local < V ? row[local] : 0.0;
  }
  reduce_max(m.data(), m.size());
  reduce_sum(target.data(), target.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < T; ++t) {
    const act_t* row = logits + t * V;
    double s = 0;
    for (std::int64_t i = 0; i < V; ++i) s += std::exp(row[i] - m[t]);
    z[t] = s;
  }
  reduce_sum(z.data(), z.size());
  LossSum total;
  for (std::int64_t t = 0; t < T; ++t) {
    if (labels[t] == kIgnoreLabel) continue;
    total.sum += m[t] + std::log(z[t]) - target[t];
    total.count += 1;
  }
  if (dlogits) {
#pragma omp parallel for schedule(static)
    for (std::int64_t t = 0; t < T; ++t) {
      act_t* drow = dlogits + t * V;
      const act_t* row = logits + t * V;
      if (labels[t] == kIgnoreLabel) {
        std::fill(drow, drow + V, 0.0);
        continue;
      }
      const double lse = m[t] + std::log(z[t]);
      const std::int64_t local = static_cast<std::int64_t>(labels[t]) - v0;
      for (std::int64_t i = 0; i < V; ++i)
        drow[i] = (std::exp(row[i] - lse) - (i == local ? 1.0 : 0.0)) * grad_scale;
    }
  }
  return total;
}

}  // namespace qwen3::cpu
