// cuBLASLt GEMM wrapper (see gemm.h). Row-major X[r, c] is column-major Xᵀ[c, r] with ld = c.
#include "gpu/gemm.h"

#include <string>

#include "core/error.h"
#include "gpu/check.h"

namespace qwen3::cuda {
namespace {
struct LtObjects {  // descriptors of one call, destroyed on scope exit
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtObjects() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};
// The fastest of the heuristic's `found` candidates, each run twice (the second past lazy module loading) and timed
// on `stream`; the first candidate when none runs.
cublasLtMatmulAlgo_t fastest(cublasLtHandle_t handle, const LtObjects& o, const cublasLtMatmulHeuristicResult_t* results,
                             int found, const void* A, const void* B, const void* C, void* D, float beta, void* workspace,
                             std::size_t workspace_bytes, cudaStream_t stream) {
  const float alpha = 1.0f;
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  cublasLtMatmulAlgo_t best = results[0].algo;
  float best_ms = 0;
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    for (int rep = 0; rep < 2 && st == CUBLAS_STATUS_SUCCESS; ++rep) {
      CUDA_CHECK(cudaEventRecord(start, stream));
      st = cublasLtMatmul(handle, o.op, &alpha, A, o.a, B, o.b, &beta, C, o.c, D, o.d, &results[i].algo, workspace,
                          workspace_bytes, stream);
      CUDA_CHECK(cudaEventRecord(stop, stream));
      CUDA_CHECK(cudaEventSynchronize(stop));
    }
    if (st != CUBLAS_STATUS_SUCCESS) continue;
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (best_ms == 0 || ms < best_ms) {
      best_ms = ms;
      best = results[i].algo;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

// A failed call as its arguments: shape, operations, leading dimensions and types (cuBLASLt says only "not supported").
std::string describe(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t lda, std::int64_t ldb,
                     std::int64_t ldd, cudaDataType_t cd, float beta, bool separate_c, const GemmTypes& t) {
  const auto type = [](cudaDataType_t d) -> std::string {
    switch (d) {
      case CUDA_R_16BF: return "bf16";
      case CUDA_R_32F: return "fp32";
      case CUDA_R_8F_E4M3: return "e4m3";
      case CUDA_R_8F_E5M2: return "e5m2";
      default: return "type " + std::to_string(static_cast<int>(d));
    }
  };
  return std::string("cublasLtMatmul ") + (ta ? "T" : "N") + (tb ? "T" : "N") + " m " + std::to_string(m) + " n " +
         std::to_string(n) + " k " + std::to_string(k) + ", ld " + std::to_string(lda) + "/" + std::to_string(ldb) + "/" +
         std::to_string(ldd) + ", A " + type(t.a) + " B " + type(t.b) + " C/D " + type(cd) + ", beta " +
         std::to_string(beta) + (separate_c ? ", C apart from D" : "") + (t.a_scale ? ", scaled" : "") +
         (t.fast_accum ? ", fast accumulation" : "");
}
}  // namespace

Gemm::Gemm(void* workspace, std::size_t workspace_bytes, bool autotune)
    : workspace_(workspace), workspace_bytes_(workspace_bytes), autotune_(autotune) {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Gemm::~Gemm() {
  if (handle_) cublasLtDestroy(handle_);
}

void Gemm::run(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const void* A, std::int64_t lda,
               const void* B, std::int64_t ldb, const void* C, void* D, std::int64_t ldd, cudaDataType_t cd, float beta,
               cudaStream_t stream, const GemmTypes& t) {
  if (m == 0 || n == 0) return;
  LtObjects o;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&o.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(o.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(o.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  if (sm_count_ > 0) {
    const std::int32_t sms = sm_count_;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(o.op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sms, sizeof sms));
  }
  if (t.a_scale) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(o.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &t.a_scale, sizeof t.a_scale));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(o.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &t.b_scale, sizeof t.b_scale));
    const std::int8_t fast = t.fast_accum ? 1 : 0;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(o.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
  }
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&o.a, t.a, ta ? k : m, ta ? m : k, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&o.b, t.b, tb ? n : k, tb ? k : n, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&o.c, cd, m, n, ldd));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&o.d, cd, m, n, ldd));
  // Algorithm per shape: cuBLASLt's heuristic proposes up to kCandidates; when this call can be repeated without
  // changing its result (β = 0, or C distinct from D), each candidate is timed once on this stream and the fastest
  // kept. Accumulating calls (C == D, β ≠ 0) reuse the choice made for the same shape, else take the first proposal.
  const Key key{ta, tb, m, n, k, static_cast<int>(cd), beta != 0.0f, sm_count_, t.a, t.b, t.fast_accum};
  const Key shape_key{ta, tb, m, n, k, static_cast<int>(cd), false, sm_count_, t.a, t.b, t.fast_accum};
  const float alpha = 1.0f;
  auto it = algos_.find(key);
  if (it == algos_.end()) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&o.pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(o.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                                      sizeof workspace_bytes_));
    constexpr int kCandidates = 8;
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, o.op, o.a, o.b, o.c, o.d, o.pref, kCandidates, results, &found));
    if (found == 0)
      throw InternalError("cuBLASLt has no algorithm for a " + std::to_string(m) + "×" + std::to_string(n) + "×" +
                          std::to_string(k) + (t.a_scale ? " FP8" : " bf16") + " GEMM");
    cublasLtMatmulAlgo_t best = results[0].algo;
    const bool repeatable = beta == 0.0f || (C != nullptr && C != D);
    const auto same_shape = algos_.find(shape_key);
    if (beta != 0.0f && !repeatable && same_shape != algos_.end()) {
      best = same_shape->second;
    } else if (repeatable && found > 1 && autotune_) {
      best = fastest(handle_, o, results, found, A, B, C ? C : D, D, beta, workspace_, workspace_bytes_, stream);
    }
    it = algos_.emplace(key, best).first;
    if (beta == 0.0f) algos_.emplace(shape_key, best);
  }
  const cublasStatus_t st = cublasLtMatmul(handle_, o.op, &alpha, A, o.a, B, o.b, &beta, C ? C : D, o.c, D, o.d,
                                           &it->second, workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS)
    throw_cublas_error(st, describe(ta, tb, m, n, k, lda, ldb, ldd, cd, beta, C != nullptr && C != D, t).c_str(),
                       __FILE__, __LINE__);
}

void Gemm::forward(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, const __nv_bfloat16* residual,
                   std::int64_t T, std::int64_t in, std::int64_t out, cudaStream_t stream) {
  // yᵀ[out, T] = (Wᵀ)ᵀ·xᵀ: A = W as column-major [in, out], transposed; B = x as column-major [in, T].
  run(true, false, out, T, in, w, in, x, in, residual, y, out, CUDA_R_16BF, residual ? 1.0f : 0.0f, stream);
}

void Gemm::backward_data(const __nv_bfloat16* dy, const __nv_bfloat16* w, float* dx, std::int64_t T, std::int64_t in,
                         std::int64_t out, bool accumulate, cudaStream_t stream) {
  // dxᵀ[in, T] = Wᵀ[in, out]·dyᵀ[out, T]: A = W column-major [in, out]; B = dy column-major [out, T].
  run(false, false, in, T, out, w, in, dy, out, nullptr, dx, in, CUDA_R_32F, accumulate ? 1.0f : 0.0f, stream);
}

void Gemm::backward_data(const __nv_bfloat16* dy, const __nv_bfloat16* w, __nv_bfloat16* dx, std::int64_t T,
                         std::int64_t in, std::int64_t out, cudaStream_t stream) {
  run(false, false, in, T, out, w, in, dy, out, nullptr, dx, in, CUDA_R_16BF, 0.0f, stream);
}

void Gemm::backward_weight(const __nv_bfloat16* dy, const __nv_bfloat16* x, float* dw, std::int64_t T, std::int64_t in,
                           std::int64_t out, bool accumulate, cudaStream_t stream) {
  // dWᵀ[in, out] += xᵀ[in, T]·dy[T, out]: A = x column-major [in, T]; B = dy column-major [out, T], transposed.
  run(false, true, in, out, T, x, in, dy, out, nullptr, dw, in, CUDA_R_32F, accumulate ? 1.0f : 0.0f, stream);
}

// ---- FP8 (see gemm.h): every operand K-major, so each call is cuBLASLt's "TN" ----

void Gemm::forward(Fp8 x, Fp8 w, __nv_bfloat16* y, const __nv_bfloat16* residual, std::int64_t T, std::int64_t out,
                   cudaStream_t stream) {
  // yᵀ[out, T] = (W as column-major [ld, out])ᵀ·(x as column-major [ld, T]).
  run(true, false, out, T, x.ld, w.data, w.ld, x.data, x.ld, residual, y, out, CUDA_R_16BF, residual ? 1.0f : 0.0f, stream,
      {CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, w.scale_inv, x.scale_inv, true});
}

void Gemm::backward_data(Fp8 dy, Fp8 wt, float* dx, std::int64_t T, std::int64_t in, bool accumulate,
                         cudaStream_t stream) {
  // dxᵀ[in, T] = (Wᵀ as column-major [ld, in])ᵀ·(dy as column-major [ld, T]).
  run(true, false, in, T, dy.ld, wt.data, wt.ld, dy.data, dy.ld, nullptr, dx, in, CUDA_R_32F, accumulate ? 1.0f : 0.0f,
      stream, {CUDA_R_8F_E4M3, CUDA_R_8F_E5M2, wt.scale_inv, dy.scale_inv, false});
}

void Gemm::backward_data(Fp8 dy, Fp8 wt, __nv_bfloat16* dx, std::int64_t T, std::int64_t in, cudaStream_t stream) {
  run(true, false, in, T, dy.ld, wt.data, wt.ld, dy.data, dy.ld, nullptr, dx, in, CUDA_R_16BF, 0.0f, stream,
      {CUDA_R_8F_E4M3, CUDA_R_8F_E5M2, wt.scale_inv, dy.scale_inv, false});
}

void Gemm::backward_weight(Fp8 dyt, Fp8 xt, float* dw, std::int64_t in, std::int64_t out, bool accumulate,
                           cudaStream_t stream) {
  // dWᵀ[in, out] (+)= (xᵀ as column-major [ld, in])ᵀ·(dyᵀ as column-major [ld, out]).
  run(true, false, in, out, xt.ld, xt.data, xt.ld, dyt.data, dyt.ld, nullptr, dw, in, CUDA_R_32F, accumulate ? 1.0f : 0.0f,
      stream, {CUDA_R_8F_E4M3, CUDA_R_8F_E5M2, xt.scale_inv, dyt.scale_inv, false});
}

}  // namespace qwen3::cuda
