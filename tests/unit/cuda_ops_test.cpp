// Every CUDA op against its CPU reference (ops/cpu) on fresh random bf16-representable inputs, forward and backward.
// Tolerances (‖gpu − ref‖/‖ref‖): bf16 outputs 1e-2 (one bf16 rounding is ≤ 2^-8 relative), fp32 outputs of
// bf16 inputs 1e-4 (fp32 accumulation order only), AdamW fp32 state 1e-5. Skipped where no GPU is present.
#include <gtest/gtest.h>

#include <cstring>

#ifdef QWEN3_HAVE_CUDA
#include "gpu/gemm.h"
#include "cuda_test_util.h"
#include "ops/cpu/adamw.h"
#include "ops/cpu/bf16.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cpu/embedding.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cpu/rope.h"
#include "ops/cpu/swiglu.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/init.h"
#include "config/model_config.h"
#include "model/init.h"
#include "model/init_stream.h"
#include "model/param_table.h"
#include "ops/cuda/optimizer.h"
#include "ops/cuda/qk_norm_rope.h"
#include "ops/cuda/rmsnorm.h"

using namespace qwen3;
using namespace qwen3::test;
using bf16 = __nv_bfloat16;

namespace {
constexpr double kBf16Tol = 1e-2, kF32Tol = 1e-4;
std::vector<double> dvec(const std::vector<float>& v) { return {v.begin(), v.end()}; }
}  // namespace

TEST(CudaOps, RmsNormForwardBackward) {
  QWEN3_REQUIRE_GPU();
  // dim % 8 == 0 takes the vector paths (forward: a row in registers, up to 8,192; backward: dx and dw fused up to
  // 6,144, then a warp per row and a column reduction for dw), other dims the scalar one: every register size (64,
  // 1024; 2048; 4096; 5120, 6144), the fused backward's largest block (6144), and rows past both (8448).
  for (auto [rows, dim] : {std::pair<std::int64_t, std::int64_t>{37, 64}, {130, 2048}, {5, 5120}, {4100, 1024}, {11, 50},
                           {9, 4096}, {3, 6144}, {3, 8448}}) {
    auto x = random_bf16_values(rows * dim), w = random_bf16_values(dim, 0.3), dy = random_bf16_values(rows * dim);
    for (auto& v : w) v = bf16_round(1.0f + v);
    DeviceBuffer<bf16> dx_in(rows * dim), dw_in(dim), dy_out(rows * dim);
    DeviceBuffer<float> rstd(rows), dyf(rows * dim), dxf(rows * dim), dw(dim);
    dx_in.upload(to_bf16(x));
    dw_in.upload(to_bf16(w));
    dyf.upload(dy);
    cudaMemset(dw.get(), 0, dim * sizeof(float));
    cuda::rmsnorm_forward(dx_in.get(), dw_in.get(), dy_out.get(), rstd.get(), rows, dim, 1e-6f, nullptr);
    cuda::rmsnorm_backward(dx_in.get(), dw_in.get(), rstd.get(), dyf.get(), dxf.get(), dw.get(), rows, dim, false, nullptr);
    std::vector<double> xr = dvec(x), y(rows * dim), r(rows), dx(rows * dim), dyr = dvec(dy);
    std::vector<float> dwr(dim, 0.0f);
    cpu::rmsnorm_forward(xr.data(), w.data(), y.data(), r.data(), rows, dim, 1e-6);
    cpu::rmsnorm_backward(xr.data(), w.data(), r.data(), dyr.data(), dx.data(), dwr.data(), rows, dim);
    EXPECT_LT(rel_error(widen(dy_out.download()), y), kBf16Tol) << rows << "x" << dim;
    EXPECT_LT(rel_error(widen(rstd.download()), r), 1e-5);
    EXPECT_LT(rel_error(widen(dxf.download()), dx), kF32Tol);
    EXPECT_LT(rel_error(widen(dw.download()), dvec(dwr)), kF32Tol);
    // Accumulating into dx (the residual stream's gradient) with the bf16 copy written in the same pass: dx doubles.
    DeviceBuffer<bf16> dx_copy(rows * dim);
    cuda::rmsnorm_backward(dx_in.get(), dw_in.get(), rstd.get(), dyf.get(), dxf.get(), dw.get(), rows, dim, true, nullptr,
                           dx_copy.get());
    std::vector<double> dx2(dx.size());
    for (std::size_t i = 0; i < dx.size(); ++i) dx2[i] = 2 * dx[i];
    EXPECT_LT(rel_error(widen(dxf.download()), dx2), kF32Tol) << rows << "x" << dim;
    EXPECT_LT(rel_error(widen(dx_copy.download()), dx2), kBf16Tol) << rows << "x" << dim;
    std::vector<double> dw2(dim);
    for (std::int64_t i = 0; i < dim; ++i) dw2[i] = 2.0 * dwr[i];
    EXPECT_LT(rel_error(widen(dw.download()), dw2), kF32Tol);
  }
}

TEST(CudaOps, QkNormRopeForwardBackward) {
  QWEN3_REQUIRE_GPU();
  // x is a column slice of a wider row (the fused q|k|v output): stride = heads·D + extra.
  struct Case { std::int64_t B, S, heads, D, extra; double theta; };
  for (const bool table : {false, true})  // angles computed in the kernel, or read from uploaded cos/sin tables
  for (const Case c : {Case{2, 33, 4, 16, 32, 1e6}, Case{1, 300, 8, 128, 0, 1e6}, Case{3, 17, 2, 8, 24, 1e4}}) {
    const std::int64_t T = c.B * c.S, rows = T * c.heads, n = rows * c.D, ld = c.heads * c.D + c.extra;
    auto wide = random_bf16_values(T * ld), w = random_bf16_values(c.D, 0.3), dy = random_bf16_values(n);
    for (auto& v : w) v = bf16_round(1.0f + v);
    std::vector<float> x(n);  // the contiguous view the reference sees
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t j = 0; j < c.heads * c.D; ++j) x[t * c.heads * c.D + j] = wide[t * ld + j];
    DeviceBuffer<bf16> xd(T * ld), wd(c.D), y(n), dyd(n), dx(T * ld);
    DeviceBuffer<float> rstd(rows), dw(c.D);
    xd.upload(to_bf16(wide));
    wd.upload(to_bf16(w));
    dyd.upload(to_bf16(dy));
    cudaMemset(dw.get(), 0, c.D * sizeof(float));
    const auto host_table = cpu::rope_table(c.S, c.D, c.theta);
    DeviceBuffer<float> cosd(host_table.cos.size()), sind(host_table.sin.size());
    cosd.upload(host_table.cos);
    sind.upload(host_table.sin);
    const cuda::QkShape s{c.B, c.S, c.heads, c.D, static_cast<float>(c.theta), 1e-6f, ld, table ? cosd.get() : nullptr,
                          table ? sind.get() : nullptr};
    cuda::qk_norm_rope_forward(xd.get(), wd.get(), y.get(), rstd.get(), s, nullptr);
    cuda::qk_norm_rope_backward(xd.get(), wd.get(), rstd.get(), dyd.get(), dx.get(), dw.get(), s, nullptr);
    // Reference: rmsnorm over head_dim, then RoPE; backward in reverse.
    std::vector<double> xr = dvec(x), yr(n), r(rows), g = dvec(dy), dxr(n);
    std::vector<float> dwr(c.D, 0.0f);
    cpu::rmsnorm_forward(xr.data(), w.data(), yr.data(), r.data(), rows, c.D, 1e-6);
    const auto table = cpu::rope_table(c.S, c.D, c.theta);
    cpu::rope_forward(yr.data(), table, c.B, c.S, c.heads, c.D);
    cpu::rope_backward(g.data(), table, c.B, c.S, c.heads, c.D);
    cpu::rmsnorm_backward(xr.data(), w.data(), r.data(), g.data(), dxr.data(), dwr.data(), rows, c.D);
    const auto dx_wide = dx.download();
    std::vector<double> dx_got(n);
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t j = 0; j < c.heads * c.D; ++j) dx_got[t * c.heads * c.D + j] = __bfloat162float(dx_wide[t * ld + j]);
    EXPECT_LT(rel_error(widen(y.download()), yr), kBf16Tol) << "D=" << c.D;
    EXPECT_LT(rel_error(dx_got, dxr), kBf16Tol) << "D=" << c.D;
    EXPECT_LT(rel_error(widen(dw.download()), dvec(dwr)), kF32Tol) << "D=" << c.D;
  }
}

TEST(CudaOps, SwigluForwardBackwardOnTheFusedGateUpLayout) {
  QWEN3_REQUIRE_GPU();
  for (const std::int64_t I : {333, 336}) {  // scalar path, vector path (I % 8 == 0)
  const std::int64_t rows = 301, n = rows * I;
  auto gu = random_bf16_values(2 * n, 2.0), da = random_bf16_values(n);
  DeviceBuffer<bf16> gud(2 * n), a(n), dad(n), dgu(2 * n);
  gud.upload(to_bf16(gu));
  dad.upload(to_bf16(da));
  cuda::swiglu_forward(gud.get(), a.get(), rows, I, nullptr);
  DeviceBuffer<bf16> a2(n);  // the backward's recomputed forward product
  cuda::swiglu_backward(gud.get(), dad.get(), dgu.get(), rows, I, nullptr, a2.get());
  std::vector<double> gr(n), ur(n), dar = dvec(da), ar(n), dgr(n), dur(n);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < I; ++c) gr[r * I + c] = gu[r * 2 * I + c], ur[r * I + c] = gu[r * 2 * I + I + c];
  cpu::swiglu_forward(gr.data(), ur.data(), ar.data(), n);
  cpu::swiglu_backward(gr.data(), ur.data(), dar.data(), dgr.data(), dur.data(), n);
  std::vector<double> dref(2 * n);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < I; ++c) dref[r * 2 * I + c] = dgr[r * I + c], dref[r * 2 * I + I + c] = dur[r * I + c];
  EXPECT_LT(rel_error(widen(a.download()), ar), kBf16Tol) << "I=" << I;
  EXPECT_LT(rel_error(widen(a2.download()), ar), kBf16Tol) << "I=" << I;
  EXPECT_LT(rel_error(widen(dgu.download()), dref), kBf16Tol) << "I=" << I;
  }
}

TEST(CudaOps, CopyColumns) {
  QWEN3_REQUIRE_GPU();
  struct Case { std::int64_t src_ld, src_off, dst_ld, dst_off; };
  for (const Case k : {Case{100, 30, 56, 8}, Case{104, 32, 56, 8}}) {  // scalar path, vector path (all multiples of 8)
    const std::int64_t rows = 77, cols = 40;
    auto src = random_bf16_values(rows * k.src_ld);
    DeviceBuffer<bf16> s(rows * k.src_ld), d(rows * k.dst_ld);
    s.upload(to_bf16(src));
    cuda::copy_columns(s.get() + k.src_off, k.src_ld, d.get() + k.dst_off, k.dst_ld, rows, cols, nullptr);
    const auto got = d.download();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(__bfloat162float(got[r * k.dst_ld + k.dst_off + c]), src[r * k.src_ld + k.src_off + c]) << r << "," << c;
  }
}

TEST(CudaOps, EmbeddingForwardBackwardWithRepeatedIds) {
  QWEN3_REQUIRE_GPU();
  const std::int64_t V = 300, H = 96, T = 257;
  auto table = random_bf16_values(V * H);
  std::vector<std::int32_t> ids(T);
  std::uniform_int_distribution<int> pick(0, 19);  // few distinct ids: many repeats
  for (auto& i : ids) i = pick(cuda_rng()) * 13;
  auto dx = random_bf16_values(T * H);
  DeviceBuffer<std::int32_t> idd(T);
  DeviceBuffer<bf16> td(V * H), x(T * H);
  DeviceBuffer<float> dxd(T * H), dt(V * H);
  idd.upload(ids);
  td.upload(to_bf16(table));
  dxd.upload(dx);
  cudaMemset(dt.get(), 0, V * H * sizeof(float));
  cuda::embedding_forward(idd.get(), td.get(), x.get(), T, H, nullptr);
  cuda::embedding_backward(idd.get(), dxd.get(), dt.get(), T, H, nullptr);
  std::vector<double> xr(T * H), dxr = dvec(dx);
  std::vector<float> dtr(V * H, 0.0f);
  cpu::embedding_forward(ids.data(), table.data(), xr.data(), T, H);
  cpu::embedding_backward(ids.data(), dxr.data(), dtr.data(), T, H);
  EXPECT_EQ(rel_error(widen(x.download()), xr), 0.0);
  EXPECT_LT(rel_error(widen(dt.download()), dvec(dtr)), 1e-6);
}

TEST(CudaOps, CrossEntropyWithIgnoredRows) {
  QWEN3_REQUIRE_GPU();
  for (std::int64_t V : {300, 512, 151936}) {  // scalar path, vector paths
    const std::int64_t T = 9;
    auto logits = random_bf16_values(T * V, 3.0);
    std::vector<std::int32_t> labels(T);
    std::uniform_int_distribution<std::int64_t> pick(0, V - 1);
    for (auto& l : labels) l = static_cast<std::int32_t>(pick(cuda_rng()));
    labels[4] = cpu::kIgnoreLabel;
    const double scale = 1.0 / 8;
    DeviceBuffer<bf16> ld(T * V);
    DeviceBuffer<std::int32_t> lab(T);
    DeviceBuffer<float> loss(T);
    ld.upload(to_bf16(logits));
    lab.upload(labels);
    cuda::cross_entropy_forward_backward(ld.get(), lab.get(), loss.get(), T, V, static_cast<float>(scale), nullptr);
    std::vector<double> lr = dvec(logits), dl(T * V);
    const auto ref = cpu::cross_entropy(lr.data(), labels.data(), dl.data(), T, V, scale);
    double got = 0;
    for (float v : loss.download()) got += v;
    EXPECT_NEAR(got, ref.sum, 1e-4 * ref.sum) << "V=" << V;
    EXPECT_LT(rel_error(widen(ld.download()), dl), kBf16Tol) << "V=" << V;
  }
}

TEST(CudaOps, GemmForwardAndBothBackwardsMatchLinear) {
  QWEN3_REQUIRE_GPU();
  for (auto [T, in, out] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{64, 48, 80}, {333, 256, 1024}, {8, 64, 512}}) {
    auto x = random_bf16_values(T * in), w = random_bf16_values(out * in, 0.05), dy = random_bf16_values(T * out);
    auto resid = random_bf16_values(T * out);
    DeviceBuffer<bf16> xd(T * in), wd(out * in), y(T * out), r(T * out), dyd(T * out), dxb(T * in);
    DeviceBuffer<float> dxf(T * in), dw(out * in);
    DeviceBuffer<char> ws(32 << 20);
    xd.upload(to_bf16(x));
    wd.upload(to_bf16(w));
    r.upload(to_bf16(resid));
    dyd.upload(to_bf16(dy));
    std::vector<float> dw0 = random_bf16_values(out * in);  // weight gradients accumulate onto what is there
    dw.upload(dw0);
    cuda::Gemm gemm(ws.get(), 32 << 20);
    gemm.forward(xd.get(), wd.get(), y.get(), r.get(), T, in, out, nullptr);
    gemm.backward_data(dyd.get(), wd.get(), dxf.get(), T, in, out, false, nullptr);
    gemm.backward_data(dyd.get(), wd.get(), dxb.get(), T, in, out, nullptr);
    gemm.backward_weight(dyd.get(), xd.get(), dw.get(), T, in, out, true, nullptr);
    DeviceBuffer<float> dw_fresh(out * in);  // β = 0: overwritten, whatever was there
    dw_fresh.upload(random_bf16_values(out * in));
    gemm.backward_weight(dyd.get(), xd.get(), dw_fresh.get(), T, in, out, false, nullptr);
    std::vector<double> xr = dvec(x), yr(T * out), dyr = dvec(dy), dxr(T * in);
    std::vector<float> dwr = dw0;
    cpu::linear_forward(xr.data(), w.data(), yr.data(), T, in, out);
    for (std::int64_t i = 0; i < T * out; ++i) yr[i] += resid[i];
    cpu::linear_backward(xr.data(), w.data(), dyr.data(), dxr.data(), dwr.data(), T, in, out);
    EXPECT_LT(rel_error(widen(y.download()), yr), kBf16Tol);
    EXPECT_LT(rel_error(widen(dxf.download()), dxr), kF32Tol);
    EXPECT_LT(rel_error(widen(dxb.download()), dxr), kBf16Tol);
    EXPECT_LT(rel_error(widen(dw.download()), dvec(dwr)), kF32Tol);
    std::vector<float> dw_only(out * in, 0.0f);
    cpu::linear_backward(xr.data(), w.data(), dyr.data(), dxr.data(), dw_only.data(), T, in, out);
    EXPECT_LT(rel_error(widen(dw_fresh.download()), dvec(dw_only)), kF32Tol);
  }
}

TEST(CudaOps, AdamWMatchesReferenceAndRefreshesBf16Copy) {
  QWEN3_REQUIRE_GPU();
  const std::int64_t a = 70000, b = 333;  // a 2-D tensor spanning two chunks, then a 1-D one
  const std::int64_t n = a + b;
  auto w = random_bf16_values(n, 0.05), g = random_bf16_values(n, 1e-3);
  std::vector<float> m(n), v(n);
  for (std::int64_t i = 0; i < n; ++i) m[i] = 1e-4f * g[i], v[i] = 1e-7f * std::abs(g[i]);
  DeviceBuffer<float> wd(n), md(n), vd(n), gd(n);
  DeviceBuffer<bf16> wb(n);
  wd.upload(w), md.upload(m), vd.upload(v), gd.upload(g);
  const auto chunks = cuda::make_adamw_chunks({{0, a, 1}, {a, n, 0}});
  DeviceBuffer<cuda::AdamWChunk> cd(chunks.size());
  cd.upload(chunks);
  const int step = 3;
  const double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wdk = 0.1, clip = 0.5;
  cuda::AdamWArgs args{static_cast<float>(lr), static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(eps),
                       static_cast<float>(wdk), static_cast<float>(1 - std::pow(b1, step)),
                       static_cast<float>(std::sqrt(1 - std::pow(b2, step))), static_cast<float>(clip)};
  cuda::adamw_step(wd.get(), md.get(), vd.get(), gd.get(), wb.get(), cd.get(), static_cast<int>(chunks.size()), args, nullptr);
  auto wr = w, mr = m, vr = v;
  cpu::adamw_step(wr.data(), mr.data(), vr.data(), g.data(), a, {lr, b1, b2, eps, wdk, step, clip});
  cpu::adamw_step(wr.data() + a, mr.data() + a, vr.data() + a, g.data() + a, b, {lr, b1, b2, eps, 0.0, step, clip});
  const auto got = wd.download();
  EXPECT_LT(rel_error(widen(got), dvec(wr)), 1e-6);
  EXPECT_LT(rel_error(widen(md.download()), dvec(mr)), 1e-5);
  EXPECT_LT(rel_error(widen(vd.download()), dvec(vr)), 1e-5);
  // The update itself (w1 − w0), which the check above would hide behind the weights.
  std::vector<double> du(n), dr(n);
  for (std::int64_t i = 0; i < n; ++i) du[i] = got[i] - w[i], dr[i] = wr[i] - w[i];
  EXPECT_LT(rel_error(du, dr), 1e-4);
  EXPECT_LT(rel_error(widen(wb.download()), widen(got)), kBf16Tol);
  // The host optimizer's float32 step (--offload-optimizer) gives the same bits: weights, moments, the bf16 copy.
  auto wf = w, mf = m, vf = v;
  std::vector<std::uint16_t> bf(n);
  cpu::adamw_step_f32(wf.data(), mf.data(), vf.data(), g.data(), bf.data(), a, {lr, b1, b2, eps, wdk, step, clip});
  cpu::adamw_step_f32(wf.data() + a, mf.data() + a, vf.data() + a, g.data() + a, bf.data() + a, b,
                      {lr, b1, b2, eps, 0.0, step, clip});
  const auto md_host = md.download(), vd_host = vd.download();
  const auto wb_host = wb.download();
  int differ = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, &wb_host[i], 2);
    differ += got[i] != wf[i] || md_host[i] != mf[i] || vd_host[i] != vf[i] || bits != bf[i];
  }
  EXPECT_EQ(differ, 0) << "of " << n;
}

TEST(CudaOps, Bf16CastEqualsTheHostRounding) {
  // The host optimizer (--offload-optimizer) rounds the weights it uploads with ops/cpu/bf16.h: bit for bit the
  // device cast's, on random values, halfway cases, tiny and huge values.
  QWEN3_REQUIRE_GPU();
  std::vector<float> x = random_bf16_values(100000, 3.0);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] *= 1.0f + 0x1p-9f * static_cast<float>(i % 7);  // off the bf16 grid
  for (float f : {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -1.0f - 0x1p-8f, 1e-40f, 3e38f, 0.0f, -0.0f}) x.push_back(f);
  const std::int64_t n = static_cast<std::int64_t>(x.size());
  DeviceBuffer<float> in(n);
  DeviceBuffer<bf16> out(n);
  in.upload(x);
  cuda::cast_f32_to_bf16(in.get(), out.get(), n, nullptr);
  const std::vector<bf16> got = out.download();
  int differ = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, &got[i], 2);
    differ += bits != cpu::bf16_bits(x[i]);
  }
  EXPECT_EQ(differ, 0);
}

TEST(CudaOps, SumOfSquaresInDouble) {
  QWEN3_REQUIRE_GPU();
  const std::int64_t n = 3000001;
  auto x = random_bf16_values(n);
  DeviceBuffer<float> xd(n);
  DeviceBuffer<double> partial(cuda::kNormBlocks), out(1);
  xd.upload(x);
  cuda::sum_squares(xd.get(), n, partial.get(), out.get(), nullptr);
  double ref = 0;
  for (float v : x) ref += static_cast<double>(v) * v;
  EXPECT_NEAR(out.download()[0], ref, 1e-9 * ref);
}

// Weight initialisation on the device against the host's (model/init.h), for a row block and a column block of a
// tensor with an odd width: every value within one float rounding (the GPU's double-precision log/sin/cos may differ
// from the host's in the last bit of a double, which rounding to float almost always hides).
TEST(CudaOps, InitNormalBlockEqualsTheHostInitialisation) {
  QWEN3_REQUIRE_GPU();
  const ModelConfig c = model_preset("tiny");
  const ParamTable table(c);
  const std::size_t index = table.layers[1].gate_proj;
  const auto& e = table.entries()[index];
  const std::int64_t rows = e.shape[0], width = e.numel / rows;
  struct Block { std::int64_t r0, nr, c0, nc; };
  for (const Block b : {Block{3, rows - 5, 0, width}, Block{0, rows, 7, width - 8}, Block{0, 1, 1, 3}}) {
    std::vector<float> want(static_cast<std::size_t>(b.nr * b.nc));
    init_tensor_block(table, index, 1234, 0.02, b.r0, b.nr, b.c0, b.nc, want.data());
    DeviceBuffer<float> got(want.size());
    cuda::init_normal_block(got.get(), b.nr, b.nc, b.r0, b.c0, width, init_stream_start(1234, index), 0.02, nullptr);
    const auto g = got.download();
    int differ = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(g[i], want[i], 1.2e-7 * std::fabs(want[i]) + 1e-30) << "element " << i;
      differ += g[i] != want[i];
    }
    EXPECT_LE(differ, static_cast<int>(want.size() / 1000) + 1) << "more than rare last-bit differences";
  }
  DeviceBuffer<float> ones(5);
  cuda::fill(ones.get(), 5, 1.0f, nullptr);
  for (float v : ones.download()) EXPECT_EQ(v, 1.0f);
}

#else
TEST(CudaOps, NotBuilt) { GTEST_SKIP() << "this build has no CUDA backend"; }
#endif
