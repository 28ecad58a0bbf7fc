// --precision fp8's CUDA pieces against the host model (ops/fp8.h): the amax and cast kernels bit for bit (both
// formats, row-major and transposed copies, zero padding, the dequantisation factor), the amax the producing kernels
// (RMSNorm, SwiGLU and their backward) take of what they write, and the FP8 GEMMs against the
// product of the same FP8 values in fp64. Tolerances (‖gpu − ref‖/‖ref‖): bf16 outputs 1e-2 (one bf16 rounding is
// ≤ 2^-8 relative), fp32 outputs 1e-4 (fp32 accumulation order only: the operands are exact). Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <tuple>

#ifdef QWEN3_HAVE_CUDA
#include "cuda_test_util.h"
#include "gpu/gemm.h"
#include "model/fp8_layout.h"
#include "ops/cpu/fp8_cast.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/fp8_cast.h"
#include "ops/cuda/rmsnorm.h"
#include "ops/fp8.h"

using namespace qwen3;
using namespace qwen3::test;
using bf16 = __nv_bfloat16;

namespace {
// fp32 outputs: Hopper's FP8 tensor cores accumulate in fewer bits than fp32 between cuBLASLt's promotions to fp32
// registers (the data and weight gradients run without fast accumulation and still carry it): 1.04e-4 measured at a
// contraction of 1,008 and 1,024 on an H100 (2026-12-07), so 5e-4; an operand or scale read wrong is off by far more.
constexpr double kBf16Tol = 1e-2, kF32Tol = 5e-4;

// The host model of one cast: codes [rows, ld] (or transposed [cols, ld]) with zero padding.
std::vector<std::uint8_t> host_cast(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, float s,
                                    Fp8Format f, bool transposed, std::int64_t ld) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>((transposed ? cols : rows) * ld), 0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::uint8_t code = cpu::fp8_encode(x[static_cast<std::size_t>(r * cols + c)] * s, f);
      out[static_cast<std::size_t>(transposed ? c * ld + r : r * ld + c)] = code;
    }
  return out;
}

// Values spanning many binades (so that subnormals, saturation-free extremes and ties all occur), bf16-exact.
std::vector<float> wide_values(std::size_t n) {
  std::vector<float> v = random_bf16_values(n);
  std::uniform_int_distribution<int> e(-12, 6);
  for (auto& x : v) x = bf16_round(std::ldexp(x, e(cuda_rng())));
  return v;
}

// An FP8 operand's values as the GEMM reads them: code / s, as [rows, cols] of a [rows, ld] layout.
std::vector<double> dequantised(const std::vector<std::uint8_t>& codes, std::int64_t rows, std::int64_t cols,
                                std::int64_t ld, float s, Fp8Format f) {
  std::vector<double> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(r * cols + c)] = cpu::fp8_decode(codes[static_cast<std::size_t>(r * ld + c)], f) / s;
  return out;
}

// c[m, n] = Σ_k a[m, k]·b[n, k]
std::vector<double> product(const std::vector<double>& a, const std::vector<double>& b, std::int64_t m, std::int64_t n,
                            std::int64_t k) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t q = 0; q < k; ++q) s += a[static_cast<std::size_t>(i * k + q)] * b[static_cast<std::size_t>(j * k + q)];
      c[static_cast<std::size_t>(i * n + j)] = s;
    }
  return c;
}

// An operand cast on the device: the codes of its row-major and transposed copies (each cast alone when `apart`, as
// the forward's inputs and the weight gradient's transposed inputs are; else both in one pass) and its scale.
struct Cast {
  std::vector<std::uint8_t> rows, cols;
  float scale_inv;
};
Cast device_cast(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, Fp8Format f, bool apart = false) {
  DeviceBuffer<bf16> xd(x.size());
  xd.upload(to_bf16(x));
  const std::int64_t rows_ld = fp8_padded(cols), cols_ld = fp8_padded(rows);
  DeviceBuffer<std::uint8_t> r(static_cast<std::size_t>(rows * rows_ld)), c(static_cast<std::size_t>(cols * cols_ld));
  DeviceBuffer<float> amax(1), inv(1);
  cuda::fp8_amax(xd.get(), rows * cols, amax.get(), nullptr);
  if (apart) {
    cuda::fp8_cast(xd.get(), rows, cols, amax.get(), f, {r.get(), rows_ld, nullptr, 0}, inv.get(), nullptr);
    cuda::fp8_cast(xd.get(), rows, cols, amax.get(), f, {nullptr, 0, c.get(), cols_ld}, inv.get(), nullptr);
  } else {
    cuda::fp8_cast(xd.get(), rows, cols, amax.get(), f, {r.get(), rows_ld, c.get(), cols_ld}, inv.get(), nullptr);
  }
  return {r.download(), c.download(), inv.download()[0]};
}
// The bits of bf16 values (NaN-safe equality of two downloads).
std::vector<std::uint16_t> as_bits(const std::vector<bf16>& v) {
  std::vector<std::uint16_t> b(v.size());
  std::memcpy(b.data(), v.data(), v.size() * sizeof(std::uint16_t));
  return b;
}
}  // namespace

TEST(CudaFp8, TheCastsMatchTheHostModelBitForBit) {
  QWEN3_REQUIRE_GPU();
  // Edge sub-tiles only (7 × 1000, 1000 × 24), whole 32 × 32 sub-tiles only (64 × 64; 96 × 160, a block's 64 × 128
  // tile partly outside), whole ones among edges (333 × 40, 200 × 520: the 16-byte paths), and rows that no 16-byte
  // load can start (130 × 132: element by element throughout).
  for (auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{333, 40}, {64, 64}, {96, 160}, {7, 1000}, {1000, 24},
                            {200, 520}, {130, 132}}) {
    for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
      const auto x = wide_values(static_cast<std::size_t>(rows * cols));
      double amax = 0;
      for (float v : x) amax = std::max(amax, static_cast<double>(std::fabs(v)));
      const float s = fp8_scale(static_cast<float>(amax), f);
      for (bool apart : {false, true}) {
        const Cast got = device_cast(x, rows, cols, f, apart);
        SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (f == Fp8Format::e4m3 ? " e4m3" : " e5m2") +
                     (apart ? ", each copy alone" : ", both copies in one pass"));
        EXPECT_EQ(got.rows, host_cast(x, rows, cols, s, f, false, fp8_padded(cols)));
        EXPECT_EQ(got.cols, host_cast(x, rows, cols, s, f, true, fp8_padded(rows)));
        EXPECT_EQ(got.scale_inv, 1.0f / s);
      }
    }
  }
}

// The amax exactly (bf16 magnitudes are floats): whole 16-byte loads and a tail (n = 1,000,003), and a start no
// 16-byte load can take (x + 1).
TEST(CudaFp8, TheAmaxIsTheLargestMagnitudeExactly) {
  QWEN3_REQUIRE_GPU();
  const auto x = wide_values(1000003);
  DeviceBuffer<bf16> xd(x.size());
  xd.upload(to_bf16(x));
  DeviceBuffer<float> amax(1);
  for (std::size_t skip : {std::size_t{0}, std::size_t{1}}) {
    float want = 0;
    for (std::size_t i = skip; i < x.size(); ++i) want = std::max(want, std::fabs(x[i]));
    cuda::fp8_amax(xd.get() + skip, static_cast<std::int64_t>(x.size() - skip), amax.get(), nullptr);
    EXPECT_EQ(amax.download()[0], want) << "from element " << skip;
  }
}

TEST(CudaFp8, AnAmaxOfNanOrInfinityMakesEveryValueNan) {
  QWEN3_REQUIRE_GPU();
  for (float bad : {NAN, INFINITY}) {
    std::vector<float> x = random_bf16_values(100);
    x[37] = bad;
    const Cast got = device_cast(x, 10, 10, Fp8Format::e4m3);
    EXPECT_TRUE(std::isnan(got.scale_inv)) << bad;
    for (std::int64_t r = 0; r < 10; ++r)
      for (std::int64_t c = 0; c < 10; ++c)
        EXPECT_TRUE(std::isnan(cpu::fp8_decode(got.rows[static_cast<std::size_t>(r * 16 + c)], Fp8Format::e4m3))) << bad;
  }
}

// The amax a producing kernel takes as it writes its output equals fp8_amax's of that output, exactly, on the vector
// path (width a multiple of 8; 300 rows: a last block with rows past the end) and the scalar one (width 1,000), and is
// NaN when the output holds a NaN; asking for it changes no output bit.
TEST(CudaFp8, TheProducersAmaxIsTheAmaxOfWhatTheyWrite) {
  QWEN3_REQUIRE_GPU();
  const std::int64_t rows = 300;
  DeviceBuffer<float> got(1), want(1);
  // amax of out[n] as the kernel gave it (got) and as fp8_amax reads it back (want)
  auto check = [&](const char* what, std::int64_t width, const bf16* out, std::int64_t n) {
    cuda::fp8_amax(out, n, want.get(), nullptr);
    const float g = got.download()[0], w = want.download()[0];
    if (std::isnan(w)) {
      EXPECT_TRUE(std::isnan(g)) << what << " width " << width;
    } else {
      EXPECT_EQ(g, w) << what << " width " << width;
      EXPECT_GT(w, 0.0f) << what;
    }
  };
  for (std::int64_t width : {std::int64_t{1024}, std::int64_t{1000}}) {
    for (bool nan : {false, true}) {
      SCOPED_TRACE(nan ? "a NaN in the input" : "finite");
      const std::int64_t n = rows * width;
      auto xv = random_bf16_values(static_cast<std::size_t>(n), 3.0);
      if (nan) xv[static_cast<std::size_t>(n / 2 + 3)] = NAN;
      DeviceBuffer<bf16> x(n), w(width), y(n), y0(n), dxb(n), dxb0(n);
      x.upload(to_bf16(xv));
      w.upload(to_bf16(random_bf16_values(static_cast<std::size_t>(width), 1.0)));
      DeviceBuffer<float> rstd(rows), dy(n), dx(n), dw(width);
      dy.upload(random_bf16_values(static_cast<std::size_t>(n), 1e-2));
      cuda::rmsnorm_forward(x.get(), w.get(), y0.get(), rstd.get(), rows, width, 1e-6f, nullptr);
      cuda::rmsnorm_forward(x.get(), w.get(), y.get(), rstd.get(), rows, width, 1e-6f, nullptr, got.get());
      EXPECT_EQ(as_bits(y.download()), as_bits(y0.download())) << "rmsnorm forward";
      check("rmsnorm forward", width, y.get(), n);
      cuda::rmsnorm_backward(x.get(), w.get(), rstd.get(), dy.get(), dx.get(), dw.get(), rows, width, false, nullptr,
                             dxb0.get());
      cuda::rmsnorm_backward(x.get(), w.get(), rstd.get(), dy.get(), dx.get(), dw.get(), rows, width, false, nullptr,
                             dxb.get(), got.get());
      EXPECT_EQ(as_bits(dxb.download()), as_bits(dxb0.download())) << "rmsnorm backward";
      check("rmsnorm backward's bf16 copy", width, dxb.get(), n);
      // SwiGLU over [rows, 2·width] (the same x read as gate|up of half the rows) and its backward.
      DeviceBuffer<bf16> a(n / 2), a0(n / 2), dgu(n), dgu0(n);
      cuda::swiglu_forward(x.get(), a0.get(), rows / 2, width, nullptr);
      cuda::swiglu_forward(x.get(), a.get(), rows / 2, width, nullptr, got.get());
      EXPECT_EQ(as_bits(a.download()), as_bits(a0.download())) << "swiglu forward";
      check("swiglu forward", width, a.get(), n / 2);
      cuda::swiglu_backward(x.get(), y.get(), dgu0.get(), rows / 2, width, nullptr);
      cuda::swiglu_backward(x.get(), y.get(), dgu.get(), rows / 2, width, nullptr, nullptr, got.get());
      EXPECT_EQ(as_bits(dgu.download()), as_bits(dgu0.download())) << "swiglu backward";
      check("swiglu backward", width, dgu.get(), n);
    }
  }
}

// The SwiGLU backward that writes its recomputed product as the down projection's transposed E4M3 operand
// (swiglu_backward_fp8t) gives what the two steps it replaces give — swiglu_backward's gradient of gate|up and its
// amax, and fp8_cast's transposed copy of the product it rewrites, scaled by the forward's amax — bit for bit: whole 32
// × 32 sub-tiles (64 × 64, 4096 × 256), a block's tile partly outside (96 × 160), edges and padding tokens (37 × 48,
// 333 × 40), and widths no 16-byte load can take (130 × 50: element by element). The copy's buffer starts as garbage,
// so that a padding byte left unwritten shows.
TEST(CudaFp8, TheSwiGluBackwardWritesDownsTransposedOperandAsTheCastWould) {
  QWEN3_REQUIRE_GPU();
  for (auto [rows, inter] : {std::pair<std::int64_t, std::int64_t>{64, 64}, {4096, 256}, {96, 160}, {37, 48}, {333, 40},
                             {130, 50}}) {
    SCOPED_TRACE(std::to_string(rows) + " tokens x " + std::to_string(inter));
    const std::int64_t n = rows * inter, ld = fp8_padded(rows);
    DeviceBuffer<bf16> gu(2 * n), da(n), a(n), a_fwd(n), dgu0(2 * n), dgu(2 * n);
    gu.upload(to_bf16(random_bf16_values(static_cast<std::size_t>(2 * n), 2.0)));
    da.upload(to_bf16(random_bf16_values(static_cast<std::size_t>(n), 1e-2)));
    DeviceBuffer<float> a_amax(1), inv0(1), inv(1), g_amax0(1), g_amax(1);
    DeviceBuffer<std::uint8_t> cols0(static_cast<std::size_t>(inter * ld)), cols(static_cast<std::size_t>(inter * ld));
    cols.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(inter * ld), 0xab));
    cuda::swiglu_forward(gu.get(), a_fwd.get(), rows, inter, nullptr, a_amax.get());
    // the two steps: the backward rewriting a in bf16, then the transposed cast with the forward's amax
    cuda::swiglu_backward(gu.get(), da.get(), dgu0.get(), rows, inter, nullptr, a.get(), g_amax0.get());
    cuda::fp8_cast(a.get(), rows, inter, a_amax.get(), Fp8Format::e4m3, {nullptr, 0, cols0.get(), ld}, inv0.get(),
                   nullptr);
    // the fused one
    cuda::swiglu_backward_fp8t(gu.get(), da.get(), dgu.get(), rows, inter, a_amax.get(), cols.get(), ld, inv.get(),
                               nullptr, g_amax.get());
    EXPECT_EQ(as_bits(dgu.download()), as_bits(dgu0.download()));
    EXPECT_EQ(g_amax.download()[0], g_amax0.download()[0]);
    EXPECT_EQ(cols.download(), cols0.download());
    EXPECT_EQ(inv.download()[0], inv0.download()[0]);
  }
}

// The delayed-scaling SwiGLU tests' cases: tokens × intermediate size (whole and partial 64 × 128 tiles, rows not a
// multiple of a block's), and the previous amax as a fraction of the tensor's (0.3: its largest values saturate).
constexpr std::tuple<std::int64_t, std::int64_t, float> kDelayedSwigluCases[] = {
    {64, 64, 0.7f}, {4096, 256, 0.7f}, {96, 160, 0.3f}, {37, 48, 0.7f}, {333, 40, 0.3f}, {130, 50, 0.7f}};

// Delayed scaling: the SwiGLU backward writes gate|up's gradient as its two E5M2 operands, scaled from a previous
// amax (one binade of margin), bit for bit as swiglu_backward's bf16 gradient cast with that scale (fp8_cast of an
// amax of 2·previous; a previous amax below half the gradient's saturates its largest values alike), and folds the
// gradient's amax into the running one without resetting it.
TEST(CudaFp8, TheSwiGluBackwardWritesGateUpsGradientInFp8FromThePreviousAmax) {
  QWEN3_REQUIRE_GPU();
  for (auto [rows, inter, factor] : kDelayedSwigluCases) {
    SCOPED_TRACE(std::to_string(rows) + " tokens x " + std::to_string(inter) + ", previous amax " +
                 std::to_string(factor) + " of the gradient's");
    const std::int64_t n = rows * inter, ld = fp8_padded(rows), gld = fp8_padded(2 * inter);
    DeviceBuffer<bf16> gu(2 * n), da(n), a(n), a_fwd(n), dgu0(2 * n);
    gu.upload(to_bf16(random_bf16_values(static_cast<std::size_t>(2 * n), 2.0)));
    da.upload(to_bf16(random_bf16_values(static_cast<std::size_t>(n), 1e-2)));
    DeviceBuffer<float> a_amax(1), inv0(1), inv(1), g_amax0(1), g_inv0(1), history(2), g_inv(1), twice(1);
    DeviceBuffer<std::uint8_t> at0(static_cast<std::size_t>(inter * ld)), at(static_cast<std::size_t>(inter * ld));
    DeviceBuffer<std::uint8_t> rows0(static_cast<std::size_t>(rows * gld)), rows1(static_cast<std::size_t>(rows * gld));
    DeviceBuffer<std::uint8_t> cols0(static_cast<std::size_t>(2 * inter * ld)), cols1(static_cast<std::size_t>(2 * inter * ld));
    rows1.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(rows * gld), 0xab));
    cols1.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(2 * inter * ld), 0xab));
    cuda::swiglu_forward(gu.get(), a_fwd.get(), rows, inter, nullptr, a_amax.get());
    // the steps it replaces: the bf16 backward, the down operand's cast, gate|up's cast with the delayed scale
    cuda::swiglu_backward(gu.get(), da.get(), dgu0.get(), rows, inter, nullptr, a.get(), g_amax0.get());
    cuda::fp8_cast(a.get(), rows, inter, a_amax.get(), Fp8Format::e4m3, {nullptr, 0, at0.get(), ld}, inv0.get(), nullptr);
    const float amax = g_amax0.download()[0], previous = amax * factor, running = amax * 0.25f;
    twice.upload({2.0f * previous});  // fp8_delayed_scale(previous) = fp8_scale(2 · previous)
    cuda::fp8_cast(dgu0.get(), rows, 2 * inter, twice.get(), Fp8Format::e5m2, {rows0.get(), gld, cols0.get(), ld},
                   g_inv0.get(), nullptr);
    // the fused one, its history {previous, running}: the running amax only grows
    history.upload({previous, running});
    const cuda::SwigluGradFp8 out{rows1.get(), gld, cols1.get(), history.get(), history.get() + 1, g_inv.get()};
    cuda::swiglu_backward_fp8t(gu.get(), da.get(), nullptr, rows, inter, a_amax.get(), at.get(), ld, inv.get(), nullptr,
                               nullptr, &out);
    EXPECT_EQ(at.download(), at0.download());
    EXPECT_EQ(inv.download()[0], inv0.download()[0]);
    EXPECT_EQ(rows1.download(), rows0.download());
    EXPECT_EQ(cols1.download(), cols0.download());
    EXPECT_EQ(g_inv.download()[0], g_inv0.download()[0]);
    EXPECT_EQ(history.download(), (std::vector<float>{previous, amax}));
  }
}

// Delayed scaling: the SwiGLU forward writes down's input only as its E4M3 operand, scaled from a previous amax (no
// margin), bit for bit as swiglu_forward's bf16 product cast with that scale (saturating alike above it), with
// the product's own amax (the weight gradient's copy is scaled by it) and that amax folded into the running one.
TEST(CudaFp8, TheSwiGluForwardWritesDownsInputInFp8FromThePreviousAmax) {
  QWEN3_REQUIRE_GPU();
  for (auto [rows, inter, factor] : kDelayedSwigluCases) {
    SCOPED_TRACE(std::to_string(rows) + " tokens x " + std::to_string(inter) + ", previous amax " +
                 std::to_string(factor) + " of the product's");
    const std::int64_t n = rows * inter, ld = fp8_padded(inter);
    DeviceBuffer<bf16> gu(2 * n), a(n);
    gu.upload(to_bf16(random_bf16_values(static_cast<std::size_t>(2 * n), 2.0)));
    DeviceBuffer<float> a_amax(1), source(1), inv0(1), inv(1), amax(1), history(2);
    DeviceBuffer<std::uint8_t> rows0(static_cast<std::size_t>(rows * ld)), rows1(static_cast<std::size_t>(rows * ld));
    rows1.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(rows * ld), 0xab));
    cuda::swiglu_forward(gu.get(), a.get(), rows, inter, nullptr, a_amax.get());
    const float product = a_amax.download()[0], previous = product * factor;
    source.upload({previous});  // fp8_delayed_scale(previous, e4m3) = fp8_scale(previous): no margin
    cuda::fp8_cast(a.get(), rows, inter, source.get(), Fp8Format::e4m3, {rows0.get(), ld, nullptr, 0}, inv0.get(), nullptr);
    history.upload({previous, product * 0.25f});
    amax.upload({123.0f});  // overwritten
    const cuda::SwigluFwdFp8 out{rows1.get(), ld, history.get(), history.get() + 1, inv.get(), amax.get()};
    cuda::swiglu_forward_fp8(gu.get(), rows, inter, out, nullptr);
    EXPECT_EQ(rows1.download(), rows0.download());
    EXPECT_EQ(inv.download()[0], inv0.download()[0]);
    EXPECT_EQ(amax.download()[0], product);
    EXPECT_EQ(history.download(), (std::vector<float>{previous, product}));
  }
}

TEST(CudaFp8, TheGemmsEqualTheProductOfTheirFp8Operands) {
  QWEN3_REQUIRE_GPU();
  // Shapes as the presets' linear layers give them, every dimension a multiple of 16 (what cuBLASLt's FP8 GEMMs take
  // for the output's: docs/fp8.md); the casts' padding of the contraction dimension is held by the cast tests above.
  for (auto [T, in, out] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{336, 48, 80}, {64, 256, 1024}, {1008, 1024, 512}}) {
    SCOPED_TRACE("T " + std::to_string(T) + " in " + std::to_string(in) + " out " + std::to_string(out));
    const auto x = random_bf16_values(T * in), w = random_bf16_values(out * in, 0.05), dy = random_bf16_values(T * out, 1e-3);
    const Cast xc = device_cast(x, T, in, Fp8Format::e4m3), wc = device_cast(w, out, in, Fp8Format::e4m3),
               gc = device_cast(dy, T, out, Fp8Format::e5m2);
    // Upload the codes (checked bit for bit above) and scales; run the three GEMMs.
    DeviceBuffer<std::uint8_t> xr(xc.rows.size()), xt(xc.cols.size()), wr(wc.rows.size()), wt(wc.cols.size()),
        gr(gc.rows.size()), gt(gc.cols.size());
    xr.upload(xc.rows), xt.upload(xc.cols), wr.upload(wc.rows), wt.upload(wc.cols), gr.upload(gc.rows), gt.upload(gc.cols);
    DeviceBuffer<float> s(3 * Fp8Layout::kSlot), dxf(T * in), dw(out * in);  // each factor 16-byte aligned, as cuBLASLt wants
    s.upload({xc.scale_inv, 0, 0, 0, wc.scale_inv, 0, 0, 0, gc.scale_inv, 0, 0, 0});
    DeviceBuffer<bf16> y(T * out), dxb(T * in);
    DeviceBuffer<char> ws(32 << 20);
    cuda::Gemm gemm(ws.get(), 32 << 20);
    const float *sx = s.get(), *sw = s.get() + Fp8Layout::kSlot, *sg = s.get() + 2 * Fp8Layout::kSlot;
    gemm.forward({xr.get(), sx, fp8_padded(in)}, {wr.get(), sw, fp8_padded(in)}, y.get(), nullptr, T, out, nullptr);
    gemm.backward_data({gr.get(), sg, fp8_padded(out)}, {wt.get(), sw, fp8_padded(out)}, dxf.get(), T, in, false, nullptr);
    gemm.backward_data({gr.get(), sg, fp8_padded(out)}, {wt.get(), sw, fp8_padded(out)}, dxb.get(), T, in, nullptr);
    gemm.backward_weight({gt.get(), sg, fp8_padded(T)}, {xt.get(), sx, fp8_padded(T)}, dw.get(), in, out, false, nullptr);
    // The same FP8 values in fp64.
    const auto xq = dequantised(xc.rows, T, in, fp8_padded(in), 1.0f / xc.scale_inv, Fp8Format::e4m3);
    const auto wq = dequantised(wc.rows, out, in, fp8_padded(in), 1.0f / wc.scale_inv, Fp8Format::e4m3);
    const auto gq = dequantised(gc.rows, T, out, fp8_padded(out), 1.0f / gc.scale_inv, Fp8Format::e5m2);
    std::vector<double> wqt(static_cast<std::size_t>(in * out)), gqt(static_cast<std::size_t>(out * T)),
        xqt(static_cast<std::size_t>(in * T));
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t i = 0; i < in; ++i) wqt[static_cast<std::size_t>(i * out + o)] = wq[static_cast<std::size_t>(o * in + i)];
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t o = 0; o < out; ++o) gqt[static_cast<std::size_t>(o * T + t)] = gq[static_cast<std::size_t>(t * out + o)];
      for (std::int64_t i = 0; i < in; ++i) xqt[static_cast<std::size_t>(i * T + t)] = xq[static_cast<std::size_t>(t * in + i)];
    }
    const auto y_ref = product(xq, wq, T, out, in), dx_ref = product(gq, wqt, T, in, out), dw_ref = product(gqt, xqt, out, in, T);
    EXPECT_LT(rel_error(widen(y.download()), y_ref), kBf16Tol) << "forward";
    EXPECT_LT(rel_error(widen(dxf.download()), dx_ref), kF32Tol) << "data gradient, fp32";
    EXPECT_LT(rel_error(widen(dxb.download()), dx_ref), kBf16Tol) << "data gradient, bf16";
    EXPECT_LT(rel_error(widen(dw.download()), dw_ref), kF32Tol) << "weight gradient";
  }
}
#endif
