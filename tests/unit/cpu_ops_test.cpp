// Every CPU reference op's backward against central finite differences of its forward, on fresh random inputs.
// Activations are float64 (ops/cpu/types.h), so input gradients agree to ~1e-7; weight gradients (float32
// parameters perturbed in float32) to ~1e-3.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "ops/cpu/adamw.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/bf16.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cpu/rope.h"
#include "ops/cpu/swiglu.h"

using namespace qwen3::cpu;

namespace {
std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());  // fresh inputs every run
  return r;
}
template <typename T>
std::vector<T> randn(std::size_t n, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(rng()));
  return v;
}
double rel(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]), n += b[i] * b[i];
  return std::sqrt(d / n);
}
// d(Σ r·f(x))/dx by central differences, for each element of x (T = double or float).
template <typename T>
std::vector<double> numeric_grad(std::vector<T>& x, const std::function<double()>& loss, double h) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const T keep = x[i];
    x[i] = static_cast<T>(keep + h);
    const double up = loss();
    const double hu = static_cast<double>(x[i]) - keep;
    x[i] = static_cast<T>(keep - h);
    const double down = loss();
    const double hd = keep - static_cast<double>(x[i]);
    x[i] = keep;
    g[i] = (up - down) / (hu + hd);
  }
  return g;
}
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }
}  // namespace

TEST(CpuOps, LinearBackward) {
  const std::int64_t T = 5, in = 7, out = 4;
  auto x = randn<double>(T * in);
  auto w = randn<float>(out * in);
  auto r = randn<double>(T * out);
  std::vector<double> y(T * out), dx(T * in);
  std::vector<float> dw(out * in, 0.0f);
  auto loss = [&] { linear_forward(x.data(), w.data(), y.data(), T, in, out); return dot(r, y); };
  linear_backward(x.data(), w.data(), r.data(), dx.data(), dw.data(), T, in, out);
  EXPECT_LT(rel(dx, numeric_grad(x, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(widen(dw), numeric_grad(w, loss, 1e-2)), 1e-3);
}

TEST(CpuOps, RmsNormBackward) {
  const std::int64_t rows = 6, dim = 16;
  auto x = randn<double>(rows * dim);
  auto w = randn<float>(dim);
  auto r = randn<double>(rows * dim);
  std::vector<double> y(rows * dim), rstd(rows), dx(rows * dim);
  std::vector<float> dw(dim, 0.0f);
  auto loss = [&] { rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-6); return dot(r, y); };
  loss();
  rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data(), rows, dim);
  EXPECT_LT(rel(dx, numeric_grad(x, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(widen(dw), numeric_grad(w, loss, 1e-2)), 1e-3);
}

TEST(CpuOps, RopeBackwardIsTheTransposedRotation) {
  const std::int64_t B = 2, S = 9, H = 3, D = 8;
  auto x = randn<double>(B * S * H * D);
  auto r = randn<double>(x.size());
  const auto table = rope_table(S, D, 1e6);
  auto loss = [&] { auto y = x; rope_forward(y.data(), table, B, S, H, D); return dot(r, y); };
  auto dx = r;
  rope_backward(dx.data(), table, B, S, H, D);
  EXPECT_LT(rel(dx, numeric_grad(x, loss, 1e-5)), 1e-7);
  // Position 0 is the identity; the rotation preserves norms.
  auto y = x;
  rope_forward(y.data(), table, B, S, H, D);
  for (std::int64_t i = 0; i < H * D; ++i) EXPECT_DOUBLE_EQ(y[i], x[i]);
}

TEST(CpuOps, AttentionBackwardGroupedQueryCausal) {
  const AttentionShape s{2, 7, 4, 2, 8};
  auto q = randn<double>(s.batch * s.seq * s.heads * s.head_dim);
  auto k = randn<double>(s.batch * s.seq * s.kv_heads * s.head_dim);
  auto v = randn<double>(k.size());
  auto r = randn<double>(q.size());
  std::vector<double> out(q.size()), lse(s.batch * s.heads * s.seq), dq(q.size()), dk(k.size()), dv(v.size());
  auto loss = [&] { attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), s); return dot(r, out); };
  loss();
  attention_backward(q.data(), k.data(), v.data(), out.data(), lse.data(), r.data(), dq.data(), dk.data(), dv.data(), s);
  EXPECT_LT(rel(dq, numeric_grad(q, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(dk, numeric_grad(k, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(dv, numeric_grad(v, loss, 1e-5)), 1e-7);
  // Causality: the first position attends only to itself, so its output is its own value row.
  for (std::int64_t d = 0; d < s.head_dim; ++d) EXPECT_NEAR(out[d], v[d], 1e-12);
}

TEST(CpuOps, AttentionOfAQuerySubsetEqualsTheFullSequencesRows) {
  // Context parallelism's attention: queries at chosen positions (here the load-balanced chunks 1 and 2 of 4) against
  // every key give the full causal attention's rows at those positions; the backward's dq rows match, and its dk/dv
  // are the full backward's restricted to those queries (checked by finite differences).
  const AttentionShape full{2, 8, 4, 2, 8};
  const std::vector<std::int64_t> pos = {2, 3, 4, 5};
  AttentionShape part = full;
  part.seq = static_cast<std::int64_t>(pos.size());
  part.kv_seq = full.seq;
  part.q_pos = pos.data();
  const std::int64_t qrow = full.heads * full.head_dim;
  auto q = randn<double>(full.batch * full.seq * qrow);
  auto k = randn<double>(full.batch * full.seq * full.kv_heads * full.head_dim), v = randn<double>(k.size());
  std::vector<double> out(q.size()), lse(full.batch * full.heads * full.seq);
  attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), full);
  std::vector<double> qp(full.batch * part.seq * qrow);
  for (std::int64_t b = 0; b < full.batch; ++b)
    for (std::int64_t t = 0; t < part.seq; ++t)
      std::copy_n(q.begin() + (b * full.seq + pos[t]) * qrow, qrow, qp.begin() + (b * part.seq + t) * qrow);
  std::vector<double> outp(qp.size()), lsep(full.batch * full.heads * part.seq);
  attention_forward(qp.data(), k.data(), v.data(), outp.data(), lsep.data(), part);
  for (std::int64_t b = 0; b < full.batch; ++b)
    for (std::int64_t t = 0; t < part.seq; ++t)
      for (std::int64_t i = 0; i < qrow; ++i)
        EXPECT_NEAR(outp[(b * part.seq + t) * qrow + i], out[(b * full.seq + pos[t]) * qrow + i], 1e-12);
  auto r = randn<double>(qp.size());
  std::vector<double> dq(qp.size()), dk(k.size()), dv(v.size());
  auto loss = [&] { attention_forward(qp.data(), k.data(), v.data(), outp.data(), lsep.data(), part); return dot(r, outp); };
  loss();
  attention_backward(qp.data(), k.data(), v.data(), outp.data(), lsep.data(), r.data(), dq.data(), dk.data(), dv.data(), part);
  EXPECT_LT(rel(dq, numeric_grad(qp, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(dk, numeric_grad(k, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(dv, numeric_grad(v, loss, 1e-5)), 1e-7);
}

TEST(CpuOps, SwigluBackward) {
  const std::int64_t n = 40;
  auto g = randn<double>(n, 2.0), u = randn<double>(n), r = randn<double>(n);
  std::vector<double> a(n), dg(n), du(n);
  auto loss = [&] { swiglu_forward(g.data(), u.data(), a.data(), n); return dot(r, a); };
  swiglu_backward(g.data(), u.data(), r.data(), dg.data(), du.data(), n);
  EXPECT_LT(rel(dg, numeric_grad(g, loss, 1e-5)), 1e-7);
  EXPECT_LT(rel(du, numeric_grad(u, loss, 1e-5)), 1e-7);
}

TEST(CpuOps, CrossEntropyGradientAndIgnoredPositions) {
  const std::int64_t T = 6, V = 11;
  auto logits = randn<double>(T * V, 3.0);
  std::vector<std::int32_t> labels = {3, 0, kIgnoreLabel, 10, 5, kIgnoreLabel};
  auto loss = [&] { return cross_entropy(logits.data(), labels.data(), nullptr, T, V, 1.0).sum; };
  std::vector<double> d(T * V);
  const auto l = cross_entropy(logits.data(), labels.data(), d.data(), T, V, 1.0);
  EXPECT_EQ(l.count, 4);
  EXPECT_LT(rel(d, numeric_grad(logits, loss, 1e-5)), 1e-7);
  for (std::int64_t i = 0; i < V; ++i) EXPECT_EQ(d[2 * V + i], 0.0);
}

TEST(CpuOps, Bf16RoundsToNearestEven) {
  // bfloat16 keeps float32's top 16 bits: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and rounds to the even 1; a hair
  // above it rounds up; signs, infinities and the largest float (which rounds to infinity) as CUDA's __float2bfloat16.
  EXPECT_EQ(qwen3::cpu::bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(qwen3::cpu::bf16_bits(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(qwen3::cpu::bf16_bits(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(qwen3::cpu::bf16_bits(1.0f + 3 * 0x1p-8f), 0x3f82);  // halfway above an odd mantissa: up to even
  EXPECT_EQ(qwen3::cpu::bf16_bits(-2.0f), 0xc000);
  EXPECT_EQ(qwen3::cpu::bf16_bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(qwen3::cpu::bf16_bits(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(qwen3::cpu::bf16_bits(0.0f), 0x0000);
  const std::uint16_t nan = qwen3::cpu::bf16_bits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);
}

TEST(CpuOps, Float32AdamWEqualsTheReferenceToFloatRounding) {
  // The host optimizer's step (float32, vectorised, bf16 copy written) against the reference's (float64 inside), over
  // sizes that leave vector remainders, with weight decay and clipping; the update itself compared too, which the
  // weights would hide.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (std::int64_t n : {1, 7, 100003}) {
    std::vector<float> w(n), m(n), v(n), g(n);
    for (std::int64_t i = 0; i < n; ++i) {
      w[i] = 0.05f * nd(rng), g[i] = 1e-3f * nd(rng);
      m[i] = 1e-4f * g[i], v[i] = 1e-7f * std::abs(g[i]);
    }
    const AdamWStep s{1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5};
    auto wr = w, mr = m, vr = v, wf = w, mf = m, vf = v;
    std::vector<std::uint16_t> wb(n);
    adamw_step(wr.data(), mr.data(), vr.data(), g.data(), n, s);
    adamw_step_f32(wf.data(), mf.data(), vf.data(), g.data(), wb.data(), n, s);
    std::vector<double> du(n), dr(n);
    double werr = 0, wnorm = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      du[i] = wf[i] - w[i], dr[i] = wr[i] - w[i];
      werr += (wf[i] - wr[i]) * (wf[i] - wr[i]), wnorm += wr[i] * wr[i];
      ASSERT_EQ(wb[i], qwen3::cpu::bf16_bits(wf[i])) << i;
      ASSERT_NEAR(mf[i], mr[i], 1e-6f * std::abs(mr[i]) + 1e-12f) << i;
      ASSERT_NEAR(vf[i], vr[i], 1e-6f * std::abs(vr[i]) + 1e-18f) << i;
    }
    EXPECT_LT(std::sqrt(werr / wnorm), 1e-6) << n;
    EXPECT_LT(rel(du, dr), 1e-5) << n;
  }
}
