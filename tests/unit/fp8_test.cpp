// --precision fp8's host pieces (ops/fp8.h, ops/cpu/fp8_cast.h): the E4M3 and E5M2 codes, round-to-nearest-even with
// saturation, the power-of-two scale rule, and the CPU reference's round trips. Exact: no tolerance anywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "config/model_config.h"
#include "model/cpu_qwen3.h"
#include "model/fp8_layout.h"
#include "model/init.h"
#include "ops/cpu/fp8_cast.h"
#include "ops/fp8.h"

using namespace qwen3;
using cpu::fp8_decode;
using cpu::fp8_encode;

namespace {
constexpr Fp8Format kFormats[] = {Fp8Format::e4m3, Fp8Format::e5m2};
const char* name(Fp8Format f) { return f == Fp8Format::e4m3 ? "e4m3" : "e5m2"; }
bool finite_code(std::uint8_t c, Fp8Format f) { return std::isfinite(fp8_decode(c, f)); }
}  // namespace

TEST(Fp8, EveryFiniteCodeDecodesAndEncodesBackToItself) {
  for (Fp8Format f : kFormats) {
    int finite = 0;
    for (int c = 0; c < 256; ++c) {
      const auto code = static_cast<std::uint8_t>(c);
      if (!finite_code(code, f)) continue;
      ++finite;
      EXPECT_EQ(fp8_encode(fp8_decode(code, f), f), code) << name(f) << " code " << c;
    }
    EXPECT_EQ(finite, f == Fp8Format::e4m3 ? 254 : 248) << name(f);  // E4M3: ±NaN only; E5M2: ±inf and 6 NaNs
  }
  EXPECT_EQ(fp8_decode(0x7e, Fp8Format::e4m3), 448.0f);
  EXPECT_EQ(fp8_decode(0x7b, Fp8Format::e5m2), 57344.0f);
  EXPECT_EQ(fp8_decode(0x01, Fp8Format::e4m3), std::ldexp(1.0f, -9));   // the smallest subnormal
  EXPECT_EQ(fp8_decode(0x01, Fp8Format::e5m2), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isinf(fp8_decode(0x7c, Fp8Format::e5m2)));
}

TEST(Fp8, RoundsHalfToEvenAndSaturatesEverythingAboveTheLargestValue) {
  for (Fp8Format f : kFormats) {
    const float largest = fp8_spec(f).largest;
    // Between every pair of adjacent positive finite values: just below, at and just above the midpoint.
    for (int c = 0; c + 1 < 128; ++c) {
      const auto lo = static_cast<std::uint8_t>(c), hi = static_cast<std::uint8_t>(c + 1);
      if (!finite_code(hi, f)) break;
      const float a = fp8_decode(lo, f), b = fp8_decode(hi, f), mid = 0.5f * (a + b);
      EXPECT_EQ(fp8_encode(std::nextafter(mid, a), f), lo) << name(f) << " below the midpoint of " << c;
      EXPECT_EQ(fp8_encode(std::nextafter(mid, b), f), hi) << name(f) << " above the midpoint of " << c;
      EXPECT_EQ(fp8_encode(mid, f), (c % 2 == 0) ? lo : hi) << name(f) << " the midpoint of " << c << " (to even)";
      EXPECT_EQ(fp8_encode(-mid, f), static_cast<std::uint8_t>(0x80 | ((c % 2 == 0) ? lo : hi))) << name(f);
    }
    for (float v : {largest * 1.01f, largest * 4.0f, 1e30f, INFINITY})
      EXPECT_EQ(fp8_decode(fp8_encode(v, f), f), largest) << name(f) << " " << v;
    EXPECT_EQ(fp8_decode(fp8_encode(-INFINITY, f), f), -largest) << name(f);
    EXPECT_TRUE(std::isnan(fp8_decode(fp8_encode(NAN, f), f))) << name(f);
    EXPECT_EQ(fp8_encode(1e-30f, f), 0) << name(f) << ": far below the smallest subnormal";
  }
}

TEST(Fp8, TheScaleIsTheLargestPowerOfTwoThatKeepsTheAmaxInRange) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> exp(-40, 40);
  for (Fp8Format f : kFormats) {
    const float largest = fp8_spec(f).largest;
    for (int i = 0; i < 10000; ++i) {
      const float amax = static_cast<float>(std::pow(2.0, exp(rng)));
      const float s = fp8_scale(amax, f);
      int e = 0;
      EXPECT_EQ(std::frexp(s, &e), 0.5f) << "a power of two: " << s;
      EXPECT_LE(static_cast<double>(amax) * s, largest) << name(f) << " amax " << amax;
      EXPECT_GT(static_cast<double>(amax) * s * 2, largest) << name(f) << " amax " << amax;
    }
    EXPECT_EQ(fp8_scale(largest, f), 1.0f);
    EXPECT_EQ(fp8_scale(0.0f, f), 1.0f);
    EXPECT_TRUE(std::isnan(fp8_scale(INFINITY, f)));
    EXPECT_TRUE(std::isnan(fp8_scale(NAN, f)));
  }
}

TEST(Fp8, TheCpuRoundTripKeepsTheAmaxAndStaysWithinHalfAStep) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> d(0.0, 3.0);
  for (Fp8Format f : kFormats) {
    std::vector<double> x(4096);
    for (auto& v : x) v = static_cast<float>(d(rng));
    const double amax = cpu::fp8_amax(x.data(), static_cast<std::int64_t>(x.size()));
    const float s = fp8_scale(static_cast<float>(amax), f);
    std::vector<double> q = x;
    cpu::fp8_round_trip(q.data(), static_cast<std::int64_t>(q.size()), s, f);
    const double step = std::ldexp(1.0, -fp8_spec(f).mantissa_bits);  // relative spacing of normal values
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double tol = std::max(std::fabs(x[i]) * step / 2, std::ldexp(1.0, 1 - fp8_spec(f).bias - fp8_spec(f).mantissa_bits) / s / 2);
      EXPECT_LE(std::fabs(q[i] - x[i]), tol * (1 + 1e-12)) << name(f) << " " << x[i];
    }
    EXPECT_EQ(cpu::fp8_amax(q.data(), static_cast<std::int64_t>(q.size())) <= amax * (1 + step), true);
  }
  const double with_nan[] = {1.0, NAN, 2.0};
  EXPECT_TRUE(std::isnan(cpu::fp8_amax(with_nan, 3)));
}

// Delayed scaling in the CPU reference (--fp8-scaling delayed): the first step casts gate|up's output gradient by its
// own amax, as current scaling does (the same gradients, bit for bit), and keeps that amax as the layer's history;
// the next step scales the gradient from it (one binade of margin). Power-of-two scales round every value the same
// relative way inside the format's normal range, so the two scalings differ only where a value leaves it: here the
// second step's gradient is 1,000 times the first's (its loss scaled), which the history's scale saturates.
TEST(Fp8, DelayedScalingCastsGateUpsGradientFromThePreviousStepsAmax) {
  const ModelConfig c = model_preset("tiny");
  constexpr std::int64_t S = 64;
  std::vector<std::int32_t> ids;  // S + 1 tokens: the inputs and, one later, their labels
  for (std::int64_t i = 0; i <= S; ++i) ids.push_back(static_cast<std::int32_t>(i * 7 % c.vocab_size));
  MicroBatch mb;
  mb.tokens = ids.data(), mb.labels = ids.data() + 1, mb.batch = 1, mb.seq = S;
  struct Steps {
    std::vector<float> first, second;
    std::vector<double> history;
  };
  auto two_steps = [&](bool delayed) {
    CpuQwen3 m(c);
    m.set_fp8(true, delayed);
    const auto n = static_cast<std::size_t>(m.params().total_elements());
    std::vector<float> w(n);
    init_weights(m.params(), 1, 0.02, w.data());
    Steps s{std::vector<float>(n, 0.0f), std::vector<float>(n, 0.0f), {}};
    m.forward_backward(w.data(), s.first.data(), mb, 1.0 / S);
    m.end_fp8_step(nullptr);
    s.history = m.fp8_history().previous;
    m.forward_backward(w.data(), s.second.data(), mb, 1000.0 / S);
    return s;
  };
  const Steps current = two_steps(false), delayed = two_steps(true);
  EXPECT_EQ(current.first, delayed.first);
  EXPECT_TRUE(current.history.empty());
  // per layer, gate|up's gradient and down's input (Fp8Layout::Produced)
  ASSERT_EQ(delayed.history.size(), static_cast<std::size_t>(c.num_layers * Fp8Layout::kProduced));
  for (double a : delayed.history) EXPECT_GT(a, 0.0);
  const ParamTable t(c);
  const auto& gate = t.entries()[t.layers[0].gate_proj];
  double apart = 0.0;
  for (std::int64_t i = gate.offset; i < gate.offset + gate.numel; ++i)
    apart = std::max(apart, std::abs(double{current.second[static_cast<std::size_t>(i)]} - delayed.second[static_cast<std::size_t>(i)]));
  EXPECT_GT(apart, 0.0) << "the second step's gate gradient was not cast from the history";
}
