// Helpers for CUDA kernel tests: skip without a device, device buffers, bf16 rounding, fresh random inputs.
#pragma once
#ifdef QWEN3_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "test_labels.h"

namespace qwen3::test {

inline bool cuda_device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

inline int cuda_device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// Only in tests labelled gpu (test_labels.h): elsewhere the test fails, on any host.
#define QWEN3_REQUIRE_GPU()                                                                  \
  do {                                                                                       \
    ::qwen3::test::expect_label({"gpu"}, "needs a GPU (QWEN3_REQUIRE_GPU)");                 \
    if (!::qwen3::test::cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host"; \
  } while (0)

// Fresh inputs every run; the seed is printed with any failure (SCOPED_TRACE by the caller).
inline std::mt19937_64& cuda_rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}

inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// Normal values already rounded to bf16, so host references see exactly what the device sees.
inline std::vector<float> random_bf16_values(std::size_t n, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_round(static_cast<float>(d(cuda_rng())));
  return v;
}

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(&p_, std::max<std::size_t>(1, n) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p_, 0xFF, std::max<std::size_t>(1, n) * sizeof(T)), cudaSuccess);  // poison: NaN for floats
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  void upload(const std::vector<T>& v) { EXPECT_EQ(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}
inline std::vector<double> widen(const std::vector<__nv_bfloat16>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}
template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
  return {v.begin(), v.end()};
}

// ‖a − b‖ / ‖b‖; NaN anywhere (an unwritten, poisoned element) gives +inf.
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    d += (a[i] - b[i]) * (a[i] - b[i]);
    n += b[i] * b[i];
  }
  return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}

// The attention tests' gradient check: dq, dk, dv against the reference within tol, errors recorded in the XML.
inline void expect_attention_grads(double e_out, double e_lse, const std::vector<double>& dq, const std::vector<double>& dq_ref,
                                   const std::vector<double>& dk, const std::vector<double>& dk_ref,
                                   const std::vector<double>& dv, const std::vector<double>& dv_ref, double tol) {
  const double e_dq = rel_error(dq, dq_ref), e_dk = rel_error(dk, dk_ref), e_dv = rel_error(dv, dv_ref);
  EXPECT_LE(e_dq, tol) << "dq";
  EXPECT_LE(e_dk, tol) << "dk";
  EXPECT_LE(e_dv, tol) << "dv";
  ::testing::Test::RecordProperty("rel_errors", "out " + std::to_string(e_out) + " lse " + std::to_string(e_lse) +
                                                    " dq " + std::to_string(e_dq) + " dk " + std::to_string(e_dk) +
                                                    " dv " + std::to_string(e_dv));
}

}  // namespace qwen3::test
#endif
