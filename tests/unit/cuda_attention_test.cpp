// The CUDA fused causal GQA attention (ops/cuda/attention.h) against the float64 CPU reference (ops/cpu/attention.h)
// on fresh random bf16 inputs (the seed is printed with any failure). Every output is poisoned with NaN bytes before
// the launch, so an element the kernels never write fails the comparison. Skipped where no CUDA device is present.
//
// Tolerances, as relative errors ‖gpu − ref‖ / ‖ref‖ over a whole tensor:
//   out, dq, dk, dv ≤ 2e-2: bf16 operands and results, with P and dS rounded to bf16 before the tensor-core
//                           products (one bf16 rounding is 2^-9 ≈ 2e-3; the kernels land near 2–3e-3);
//   lse             ≤ 1e-3: fp32 row statistics.
#ifdef QWEN3_HAVE_CUDA

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/attention.h"
#include "ops/cuda/attention.h"

namespace {

constexpr double kTolBf16 = 2e-2;
constexpr double kTolLse = 1e-3;

void cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Host-side bf16 as raw bits, round to nearest even (no dependence on host conversion intrinsics).
std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
double from_bf16(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Device buffer of n elements of T, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t n) : n_(n) { cuda_ok(cudaMalloc(&p_, bytes()), "cudaMalloc"); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  std::size_t bytes() const { return n_ * sizeof(T) > 0 ? n_ * sizeof(T) : 1; }
  void poison() const { cuda_ok(cudaMemset(p_, 0xFF, bytes()), "cudaMemset"); }  // NaN in bf16 and fp32
  void upload(const std::vector<T>& h) const {
    cuda_ok(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cuda_ok(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return h;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

struct Case {
  const char* name;
  std::int64_t batch, seq, heads, kv_heads, head_dim;
};

std::vector<double> widen(const std::vector<std::uint16_t>& b) {
  std::vector<double> d(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) d[i] = from_bf16(b[i]);
  return d;
}
using qwen3::test::rel_error;  // ‖got − ref‖ / ‖ref‖; +inf for a non-finite (still poisoned) element
using qwen3::test::widen;      // fp32 downloads; the bf16 bit patterns above have their own overload

std::vector<std::uint16_t> random_bf16(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = to_bf16(dist(rng));
  return v;
}

const __nv_bfloat16* bf(const DeviceArray<std::uint16_t>& a) { return reinterpret_cast<const __nv_bfloat16*>(a.get()); }
__nv_bfloat16* bf_out(const DeviceArray<std::uint16_t>& a) { return reinterpret_cast<__nv_bfloat16*>(a.get()); }

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      cudaGetLastError();  // clear the error for later tests
      GTEST_SKIP() << "no CUDA device";
    }
    cuda_ok(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

class CudaAttentionShapes : public CudaAttentionTest, public ::testing::WithParamInterface<Case> {};

TEST_P(CudaAttentionShapes, MatchesCpuReference) {
  const Case c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", case " + c.name);
  std::mt19937_64 rng(seed);
  const std::size_t nq = static_cast<std::size_t>(c.batch * c.seq * c.heads * c.head_dim);
  const std::size_t nkv = static_cast<std::size_t>(c.batch * c.seq * c.kv_heads * c.head_dim);
  const std::size_t nlse = static_cast<std::size_t>(c.batch * c.heads * c.seq);
  const auto q = random_bf16(nq, rng), k = random_bf16(nkv, rng), v = random_bf16(nkv, rng);
  const auto dout = random_bf16(nq, rng);

  // Reference from the same bf16-rounded values, in float64.
  const qwen3::cpu::AttentionShape cs{c.batch, c.seq, c.heads, c.kv_heads, c.head_dim};
  const auto qd = widen(q), kd = widen(k), vd = widen(v), dod = widen(dout);
  std::vector<double> out_ref(nq), lse_ref(nlse), dq_ref(nq), dk_ref(nkv), dv_ref(nkv);
  qwen3::cpu::attention_forward(qd.data(), kd.data(), vd.data(), out_ref.data(), lse_ref.data(), cs);
  qwen3::cpu::attention_backward(qd.data(), kd.data(), vd.data(), out_ref.data(), lse_ref.data(), dod.data(),
                                 dq_ref.data(), dk_ref.data(), dv_ref.data(), cs);

  const qwen3::cuda::AttentionShape s{c.batch, c.seq, c.heads, c.kv_heads, c.head_dim};
  DeviceArray<std::uint16_t> d_q(nq), d_k(nkv), d_v(nkv), d_out(nq), d_dout(nq), d_dq(nq), d_dk(nkv), d_dv(nkv);
  DeviceArray<float> d_lse(nlse);
  DeviceArray<unsigned char> d_ws(qwen3::cuda::attention_backward_workspace_bytes(s));
  d_q.upload(q);
  d_k.upload(k);
  d_v.upload(v);
  d_dout.upload(dout);

  d_out.poison();
  d_lse.poison();
  qwen3::cuda::attention_forward(bf(d_q), bf(d_k), bf(d_v), bf_out(d_out), d_lse.get(), s, stream_);
  cuda_ok(cudaStreamSynchronize(stream_), "forward");
  const double e_out = rel_error(widen(d_out.download()), out_ref);
  const double e_lse = rel_error(widen(d_lse.download()), lse_ref);
  EXPECT_LE(e_out, kTolBf16) << "out";
  EXPECT_LE(e_lse, kTolLse) << "lse";

  // The backward reads the GPU's own out and lse, as in training.
  d_dq.poison();
  d_dk.poison();
  d_dv.poison();
  d_ws.poison();
  qwen3::cuda::attention_backward(bf(d_q), bf(d_k), bf(d_v), bf(d_out), d_lse.get(), bf(d_dout), bf_out(d_dq),
                                  bf_out(d_dk), bf_out(d_dv), d_ws.get(), s, stream_);
  cuda_ok(cudaStreamSynchronize(stream_), "backward");
  qwen3::test::expect_attention_grads(e_out, e_lse, widen(d_dq.download()), dq_ref, widen(d_dk.download()), dk_ref,
                                      widen(d_dv.download()), dv_ref, kTolBf16);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttentionShapes,
    ::testing::Values(Case{"RaggedD16", 2, 67, 4, 2, 16},         // fallback path, ragged, GQA 2:1
                      Case{"SmallD8", 1, 37, 6, 2, 8},            // fallback path, GQA 3:1
                      Case{"TensorCoreD64", 1, 256, 4, 2, 64},    // tensor cores, whole tiles
                      Case{"RaggedD128Mqa", 1, 300, 4, 1, 128},   // ragged last tiles, one kv head for four
                      Case{"D128NoGqa", 2, 128, 8, 8, 128},       // batch 2, heads == kv_heads
                      Case{"LongD128", 1, 1024, 2, 1, 128}),      // many key tiles per query tile
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// Query 0 sees only key 0, so its output is exactly v[0] of its kv head (P = 1) and its lse the scaled score q0·k0.
TEST_F(CudaAttentionTest, FirstQueryRowIsFirstValueRow) {
  for (const std::int64_t dim : {16, 128}) {  // both paths
    const unsigned seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed) + ", head_dim " + std::to_string(dim));
    std::mt19937_64 rng(seed);
    const qwen3::cuda::AttentionShape s{1, 70, 4, 2, dim};
    const std::size_t nq = 70 * 4 * dim, nkv = 70 * 2 * dim;
    const auto q = random_bf16(nq, rng), k = random_bf16(nkv, rng), v = random_bf16(nkv, rng);
    DeviceArray<std::uint16_t> d_q(nq), d_k(nkv), d_v(nkv), d_out(nq);
    DeviceArray<float> d_lse(4 * 70);
    d_q.upload(q);
    d_k.upload(k);
    d_v.upload(v);
    d_out.poison();
    d_lse.poison();
    qwen3::cuda::attention_forward(bf(d_q), bf(d_k), bf(d_v), bf_out(d_out), d_lse.get(), s, stream_);
    cuda_ok(cudaStreamSynchronize(stream_), "forward");
    const auto out = d_out.download();
    const auto lse = d_lse.download();
    for (std::int64_t h = 0; h < 4; ++h) {
      const std::int64_t g = h / 2;
      double score = 0;
      for (std::int64_t d = 0; d < dim; ++d) {
        const double o = from_bf16(out[h * dim + d]), ref = from_bf16(v[g * dim + d]);
        EXPECT_LE(std::fabs(o - ref), std::ldexp(std::fabs(ref), -8)) << "head " << h << " d " << d;
        score += from_bf16(q[h * dim + d]) * from_bf16(k[g * dim + d]);
      }
      score /= std::sqrt(static_cast<double>(dim));
      EXPECT_NEAR(lse[h * 70], score, 1e-3 * (1 + std::fabs(score))) << "head " << h;
    }
  }
}

}  // namespace

#endif  // QWEN3_HAVE_CUDA
