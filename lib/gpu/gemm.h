// bf16 GEMMs through cuBLASLt (fp32 accumulate), in the row-major terms the model uses:
//   forward   y[T, out]  = x[T, in]·W[out, in]ᵀ   (+ optional residual r[T, out] in the epilogue)
//   data grad dx[T, in]  = dy[T, out]·W[out, in]  (fp32 or bf16 out, overwrite or accumulate)
//   weight grad dW[out, in] += dy[T, out]ᵀ·x[T, in] (fp32, accumulating across micro-batches)
// and the same three with FP8 operands (--precision fp8, ops/fp8.h): cuBLASLt's FP8 kernels on sm_90 take both
// operands K-major, so the data gradient reads Wᵀ and the weight gradient dyᵀ and xᵀ, transposed copies that the
// casts write (ops/cuda/fp8_cast.h); E4M3 weights and activations, E5M2 gradients, fp32 accumulation, each operand
// dequantised by its 1/s in the GEMM (A/B scale pointers). The forward accumulates fast (as Transformer Engine's
// fprop), the two backward GEMMs promote partial sums to fp32 exactly (its dgrad and wgrad).
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace qwen3::cuda {

// A GEMM's operand types: bf16, or FP8 with their scale pointers (A/B), and fast accumulation (FP8 only).
struct GemmTypes {
  cudaDataType_t a = CUDA_R_16BF, b = CUDA_R_16BF;
  const float *a_scale = nullptr, *b_scale = nullptr;
  bool fast_accum = false;
};

class Gemm {
 public:
  // autotune: time the heuristic's candidates per shape and keep the fastest (false: its first one).
  Gemm(void* workspace, std::size_t workspace_bytes, bool autotune = true);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y = x·Wᵀ (+ residual when non-null; residual may alias nothing or equal y).
  void forward(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, const __nv_bfloat16* residual,
               std::int64_t tokens, std::int64_t in, std::int64_t out, cudaStream_t stream);
  // dx (fp32) = dy·W, or += when accumulate.
  void backward_data(const __nv_bfloat16* dy, const __nv_bfloat16* w, float* dx, std::int64_t tokens, std::int64_t in,
                     std::int64_t out, bool accumulate, cudaStream_t stream);
  // dx (bf16) = dy·W.
  void backward_data(const __nv_bfloat16* dy, const __nv_bfloat16* w, __nv_bfloat16* dx, std::int64_t tokens,
                     std::int64_t in, std::int64_t out, cudaStream_t stream);
  // dW (fp32) += dyᵀ·x when accumulate, else dW = dyᵀ·x (the first micro-batch after zeroing).
  void backward_weight(const __nv_bfloat16* dy, const __nv_bfloat16* x, float* dw, std::int64_t tokens, std::int64_t in,
                       std::int64_t out, bool accumulate, cudaStream_t stream);
  // An FP8 operand: codes row-major with leading dimension ld (the contraction dimension, zero-padded to a multiple of
  // 16: fp8_cast.h) and its dequantisation factor 1/s on the device.
  struct Fp8 {
    const std::uint8_t* data;
    const float* scale_inv;
    std::int64_t ld;
  };
  // y = x·Wᵀ (+ residual): x E4M3 [T, ld], w E4M3 [out, ld] (ld ≥ in, the same for both).
  void forward(Fp8 x, Fp8 w, __nv_bfloat16* y, const __nv_bfloat16* residual, std::int64_t tokens, std::int64_t out,
               cudaStream_t stream);
  // dx = dy·W (fp32: or += when accumulate; bf16: =): dy E5M2 [T, ld], wt = Wᵀ E4M3 [in, ld] (ld ≥ out).
  void backward_data(Fp8 dy, Fp8 wt, float* dx, std::int64_t tokens, std::int64_t in, bool accumulate,
                     cudaStream_t stream);
  void backward_data(Fp8 dy, Fp8 wt, __nv_bfloat16* dx, std::int64_t tokens, std::int64_t in, cudaStream_t stream);
  // dW (fp32) (+)= dyᵀ·x: dyt = dyᵀ E5M2 [out, ld], xt = xᵀ E4M3 [in, ld] (ld ≥ T).
  void backward_weight(Fp8 dyt, Fp8 xt, float* dw, std::int64_t in, std::int64_t out, bool accumulate,
                       cudaStream_t stream);
  // Run later GEMMs on at most n SMs (0: all), leaving the rest to collectives that overlap them on another stream
  // (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET); the algorithm is chosen per target.
  void set_sm_count_target(int n) { sm_count_ = n; }

 private:
  // Column-major D[m, n] = α·op(A)·op(B) + β·C, A/B of types t, C/D of type cd.
  void run(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const void* a, std::int64_t lda,
           const void* b, std::int64_t ldb, const void* c, void* d, std::int64_t ldd, cudaDataType_t cd, float beta,
           cudaStream_t stream, const GemmTypes& t = GemmTypes{});
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  std::size_t workspace_bytes_;
  using Key = std::tuple<bool, bool, std::int64_t, std::int64_t, std::int64_t, int, bool, int, int, int, bool>;
  std::map<Key, cublasLtMatmulAlgo_t> algos_;  // chosen algorithm per (shape, β ≠ 0, SM target, A/B types, fast)
  int sm_count_ = 0;
  bool autotune_ = true;                       // time the heuristic's candidates (else its first one)
};

}  // namespace qwen3::cuda
