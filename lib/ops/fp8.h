// FP8 for --precision fp8: the two formats, the per-tensor scale, and the host's exact model of the cast that the
// CUDA kernels (ops/cuda/fp8_cast.h) do with the hardware's cvt.rn.satfinite. Host and device share the scale rule,
// so a CPU test pins the kernels bit for bit and the CPU reference (model/cpu_qwen3.cpp) trains with the same casts.
//
// Formats (OCP FP8, as cuda_fp8.h): E4M3 (bias 7, no infinities, S.1111.111 is NaN, largest 448) for weights and
// activations in the forward; E5M2 (bias 15, IEEE-like, largest 57,344) for gradients in the backward — the wider
// range for the values whose spread is widest (Transformer Engine's HYBRID recipe, torchao's default).
//
// Scaling: current per-tensor scaling. The scale s of a tensor is the largest power of two with amax·s ≤ the
// format's largest value, from the amax of the tensor being cast (reduced over the ranks that hold parts of it). A
// power of two makes x·s and the GEMM's dequantisation 1/s exact, so the cast rounds once, and host and device agree
// without sharing a division (torchao's round_scales_to_power_of_2 and MX formats do the same). amax 0: s = 1. A
// non-finite amax gives s = NaN, which makes every value cast with it NaN: the diverged tensor reaches the loss or
// the gradient norm, and the run stops there as a diverged run (train/trainer), never casting inf to a finite value.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define QWEN3_HD __host__ __device__
#else
#define QWEN3_HD
#endif

namespace qwen3 {

enum class Fp8Format : std::uint8_t { e4m3, e5m2 };

// FP8 GEMM operands' contraction dimension is padded with zeros to a multiple of this (16-byte rows for cuBLASLt).
inline constexpr std::int64_t kFp8Align = 16;
inline constexpr std::int64_t fp8_padded(std::int64_t n) { return (n + kFp8Align - 1) / kFp8Align * kFp8Align; }

struct Fp8Spec {
  int mantissa_bits, bias;
  float largest;      // largest finite value
  int largest_exp2;   // largest = 0.875 · 2^largest_exp2
};

QWEN3_HD inline Fp8Spec fp8_spec(Fp8Format f) {
  return f == Fp8Format::e4m3 ? Fp8Spec{3, 7, 448.0f, 9} : Fp8Spec{2, 15, 57344.0f, 16};
}

// The scale's exponent k (s = 2^k): the largest k with amax·2^k ≤ largest. amax = m·2^e with m in [0.5, 1), and
// largest = 0.875·2^P, so k = P − e when m ≤ 0.875, else P − 1 − e; kept within fp32's normal exponents.
QWEN3_HD inline int fp8_scale_exp2(float amax, Fp8Format f) {
  int e = 0;
  const float m = frexpf(amax, &e);
  const int p = fp8_spec(f).largest_exp2;
  int k = (m <= 0.875f ? p : p - 1) - e;
  k = k > 126 ? 126 : k;
  return k < -126 ? -126 : k;
}

// s for a tensor of largest magnitude amax (≥ 0, or NaN/inf: see above).
QWEN3_HD inline float fp8_scale(float amax, Fp8Format f) {
  if (!(amax < INFINITY)) return NAN;  // NaN or inf
  if (amax == 0.0f) return 1.0f;
  return ldexpf(1.0f, fp8_scale_exp2(amax, f));
}

// Delayed scaling (--fp8-scaling delayed, docs/fp8.md): s for a tensor from the largest amax of the same tensor over
// the previous optimizer step. E5M2 (gradients) with one binade of margin (Transformer Engine's margin = 1: values up
// to twice that amax keep their codes), which its ~2^31 range affords; E4M3 (inputs) with none (TE's default), its
// normal range being ~2^16: a binade of margin moved the tiny model's gradient norm 1.7% at its third step (CPU
// reference), none 4e-11. Values beyond the scale's range saturate.
QWEN3_HD inline float fp8_delayed_scale(float previous_amax, Fp8Format f) {
  return fp8_scale((f == Fp8Format::e5m2 ? 2.0f : 1.0f) * previous_amax, f);
}
// Whether a previous amax can scale: positive and finite. A tensor that was all zeros (or not finite) the step before
// has no scale to lend: it is cast by its own amax, as current scaling does.
QWEN3_HD inline bool fp8_delayed_source(double previous_amax) { return previous_amax > 0.0 && previous_amax < INFINITY; }

namespace cpu {

// The FP8 code of v (already scaled), rounded to nearest even, saturating to ±largest (infinities too); NaN → NaN
// (0x7f with v's sign) — what cvt.rn.satfinite.{e4m3,e5m2}x2.f32 gives on sm_89 and later.
inline std::uint8_t fp8_encode(float v, Fp8Format f) {
  const Fp8Spec s = fp8_spec(f);
  const std::uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  if (std::isnan(v)) return static_cast<std::uint8_t>(sign | 0x7f);
  const double a = std::fabs(static_cast<double>(v));
  const int emin = 1 - s.bias;  // the smallest normal exponent
  int e = 0;
  std::frexp(a, &e);            // a = m·2^e, m in [0.5, 1): floor(log2 a) = e − 1
  const int exp = (a == 0.0 || e - 1 < emin) ? emin : e - 1;
  const double quantum = std::ldexp(1.0, exp - s.mantissa_bits);
  double r = std::nearbyint(a / quantum) * quantum;  // round half to even (the default rounding mode)
  if (r > s.largest) r = s.largest;
  if (r == 0.0) return sign;
  std::frexp(r, &e);
  const int rexp = e - 1;
  std::uint32_t bits;
  if (rexp < emin) {  // subnormal: exponent field 0
    bits = static_cast<std::uint32_t>(r / std::ldexp(1.0, emin - s.mantissa_bits));
  } else {
    const auto mant = static_cast<std::uint32_t>(r / std::ldexp(1.0, rexp - s.mantissa_bits)) - (1u << s.mantissa_bits);
    bits = (static_cast<std::uint32_t>(rexp + s.bias) << s.mantissa_bits) | mant;
  }
  return static_cast<std::uint8_t>(sign | bits);
}

// The value of an FP8 code.
inline float fp8_decode(std::uint8_t code, Fp8Format f) {
  const Fp8Spec s = fp8_spec(f);
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exp_bits = 7 - s.mantissa_bits;
  const int field = (code >> s.mantissa_bits) & ((1 << exp_bits) - 1);
  const int mant = code & ((1 << s.mantissa_bits) - 1);
  const int all_ones = (1 << exp_bits) - 1;
  if (f == Fp8Format::e4m3 && field == all_ones && mant == (1 << s.mantissa_bits) - 1) return NAN;
  if (f == Fp8Format::e5m2 && field == all_ones) return mant ? NAN : sign * INFINITY;
  if (field == 0) return sign * std::ldexp(static_cast<float>(mant), 1 - s.bias - s.mantissa_bits);
  return sign * std::ldexp(static_cast<float>(mant + (1 << s.mantissa_bits)), field - s.bias - s.mantissa_bits);
}

// The value a tensor element v takes through a cast with scale s and the GEMM's dequantisation 1/s.
inline double fp8_round_trip(double v, float scale, Fp8Format f) {
  const float scaled = static_cast<float>(v) * scale;
  return static_cast<double>(fp8_decode(fp8_encode(scaled, f), f)) / static_cast<double>(scale);
}

}  // namespace cpu
}  // namespace qwen3
