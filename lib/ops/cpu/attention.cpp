// CPU reference causal GQA attention (see attention.h). Accumulates in double.
#include "ops/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace qwen3::cpu {
namespace {
inline std::int64_t qidx(const AttentionShape& s, std::int64_t b, std::int64_t t, std::int64_t h) {
  return ((b * s.seq + t) * s.heads + h) * s.head_dim;
}
inline std::int64_t kvidx(const AttentionShape& s, std::int64_t b, std::int64_t t, std::int64_t g) {
  return ((b * s.keys() + t) * s.kv_heads + g) * s.head_dim;
}
double dot(const act_t* a, const act_t* b, std::int64_t n) {
  double acc = 0;
  for (std::int64_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
  return acc;
}
}  // namespace

void attention_forward(const act_t* q, const act_t* k, const act_t* v, act_t* out, act_t* lse, const AttentionShape& s) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const std::int64_t group = s.heads / s.kv_heads;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t g = h / group;
      std::vector<double> p(static_cast<std::size_t>(s.keys())), acc(static_cast<std::size_t>(s.head_dim));
      for (std::int64_t t = 0; t < s.seq; ++t) {
        const act_t* qt = q + qidx(s, b, t, h);
        const std::int64_t last = s.pos(t);  // causal: keys 0..last
        double m = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j <= last; ++j) {
          p[j] = dot(qt, k + kvidx(s, b, j, g), s.head_dim) * scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        for (std::int64_t j = 0; j <= last; ++j) sum += (p[j] = std::exp(p[j] - m));
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::int64_t j = 0; j <= last; ++j) {
          const act_t* vj = v + kvidx(s, b, j, g);
          for (std::int64_t d = 0; d < s.head_dim; ++d) acc[d] += p[j] * vj[d];
        }
        act_t* ot = out + qidx(s, b, t, h);
        for (std::int64_t d = 0; d < s.head_dim; ++d) ot[d] = acc[d] / sum;
        lse[(b * s.heads + h) * s.seq + t] = m + std::log(sum);
      }
    }
}

void attention_backward(const act_t* q, const act_t* k, const act_t* v, const act_t* out, const act_t* lse,
                        const act_t* dout, act_t* dq, act_t* dk, act_t* dv, const AttentionShape& s) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const std::int64_t group = s.heads / s.kv_heads;
  const std::int64_t hd = s.head_dim;
  // Query heads of one group write the same dk/dv rows: parallelise over (batch, kv head) so writes never race.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t g = 0; g < s.kv_heads; ++g) {
      std::vector<double> dk_acc(static_cast<std::size_t>(s.keys() * hd), 0.0), dv_acc(dk_acc.size(), 0.0);
      std::vector<double> dq_acc(static_cast<std::size_t>(hd));
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h)
        for (std::int64_t t = 0; t < s.seq; ++t) {
          const act_t* qt = q + qidx(s, b, t, h);
          const act_t* dot_ = dout + qidx(s, b, t, h);
          const double row_lse = lse[(b * s.heads + h) * s.seq + t];
          const double delta = dot(dot_, out + qidx(s, b, t, h), hd);  // Σ_j P·dP = dO·O
          std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
          for (std::int64_t j = 0; j <= s.pos(t); ++j) {
            const act_t* kj = k + kvidx(s, b, j, g);
            const act_t* vj = v + kvidx(s, b, j, g);
            const double p = std::exp(dot(qt, kj, hd) * scale - row_lse);
            const double dp = dot(dot_, vj, hd);
            const double ds = p * (dp - delta) * scale;
            for (std::int64_t d = 0; d < hd; ++d) {
              dq_acc[d] += ds * kj[d];
              dk_acc[j * hd + d] += ds * qt[d];
              dv_acc[j * hd + d] += p * dot_[d];
            }
          }
          act_t* dqt = dq + qidx(s, b, t, h);
          for (std::int64_t d = 0; d < hd; ++d) dqt[d] = dq_acc[d];
        }
      for (std::int64_t j = 0; j < s.keys(); ++j)
        for (std::int64_t d = 0; d < hd; ++d) {
          dk[kvidx(s, b, j, g) + d] = dk_acc[j * hd + d];
          dv[kvidx(s, b, j, g) + d] = dv_acc[j * hd + d];
        }
    }
}

}  // namespace qwen3::cpu
