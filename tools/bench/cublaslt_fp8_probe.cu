// Which cuBLASLt FP8 GEMM configurations run on this GPU: for shapes from 72 × 333 × 48 to 2048 × 6144 × 4096 (m × n ×
// k, "TN", E4M3 A), each variant — our settings, no fast accumulation, no scales, C apart from D, C null, fp32 output,
// E5M2 B, β = 1, scale pointers 16-byte aligned, A 16 bytes into its buffer — asks the heuristic for 8 algorithms and
// runs each once on zeros. Prints how many ran. Found on an H100 (2026-12-07, cuBLASLt 13.1): with a scale pointer 4
// bytes off every algorithm returns CUBLAS_STATUS_NOT_SUPPORTED; with both aligned all run (docs/fp8.md).
// Build and run: nvcc -O1 -arch=sm_90 -o fp8probe tools/bench/cublaslt_fp8_probe.cu -lcublasLt && ./fp8probe
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdint>
#define CK(x) do { auto s_ = (x); if (s_ != 0) printf("  %s -> %d\n", #x, (int)s_); } while (0)
struct V { const char* name; bool fast, scales, inplace, cnull, fp32out, scalemode; cudaDataType_t bt; float beta = 0; int scale_gap = 1; int a_off = 0; };
int main() {
  cublasLtHandle_t h; CK(cublasLtCreate(&h));
  printf("cublasLt version %zu cudart %zu\n", cublasLtGetVersion(), cublasLtGetCudartVersion());
  void *A, *B, *C, *D, *ws; float* sc; size_t big = 256ull << 20;
  cudaMalloc(&A, big); cudaMalloc(&B, big); cudaMalloc(&C, big); cudaMalloc(&D, big); cudaMalloc(&ws, 32 << 20); cudaMalloc(&sc, 64);
  cudaMemset(A, 0, big); cudaMemset(B, 0, big); float one[8] = {1, 1, 1, 1, 1, 1, 1, 1}; cudaMemcpy(sc, one, 32, cudaMemcpyHostToDevice);
  const int64_t shapes[][3] = {{72, 333, 48}, {80, 336, 48}, {80, 333, 48}, {72, 336, 48}, {80, 20, 48}, {80, 40, 48}, {1024, 64, 256}, {4096, 4096, 2048}, {2048, 4096, 4096}, {2048, 6144, 4096}};
  const V vs[] = {{"ours", 1, 1, 1, 0, 0, 0, CUDA_R_8F_E4M3}, {"no-fast", 0, 1, 1, 0, 0, 0, CUDA_R_8F_E4M3},
                  {"no-scales", 1, 0, 1, 0, 0, 0, CUDA_R_8F_E4M3}, {"C!=D", 1, 1, 0, 0, 0, 0, CUDA_R_8F_E4M3},
                  {"C=null", 1, 1, 0, 1, 0, 0, CUDA_R_8F_E4M3}, {"fp32out", 0, 1, 1, 0, 1, 0, CUDA_R_8F_E5M2},
                  {"fp32out-C!=D", 0, 1, 0, 0, 1, 0, CUDA_R_8F_E5M2}, {"scalemode0", 1, 1, 1, 0, 0, 1, CUDA_R_8F_E4M3},
                  {"e5m2-bf16", 0, 1, 1, 0, 0, 0, CUDA_R_8F_E5M2}, {"beta1-C!=D", 1, 1, 0, 0, 0, 0, CUDA_R_8F_E4M3, 1.0f},
                  {"fp32-beta1", 0, 1, 1, 0, 1, 0, CUDA_R_8F_E5M2, 1.0f},
                  {"scales16", 1, 1, 1, 0, 0, 0, CUDA_R_8F_E4M3, 0.0f, 4}, {"scales16-fp32", 0, 1, 1, 0, 1, 0, CUDA_R_8F_E5M2, 0.0f, 4},
                  {"A+16", 1, 1, 1, 0, 0, 0, CUDA_R_8F_E4M3, 0.0f, 4, 16}, {"A+16-s1", 1, 1, 1, 0, 0, 0, CUDA_R_8F_E4M3, 0.0f, 1, 16}};
  for (auto& s : shapes) for (auto& v : vs) {
    int64_t m = s[0], n = s[1], k = s[2];
    cublasLtMatmulDesc_t op; CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (v.scales) {
      const float* a = sc; const float* b = sc + v.scale_gap;
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a, sizeof a));
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b, sizeof b));
    }
    if (v.scalemode) { int32_t md = 0; CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &md, sizeof md)); CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &md, sizeof md)); }
    int8_t fast = v.fast; CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
    cudaDataType_t cd = v.fp32out ? CUDA_R_32F : CUDA_R_16BF;
    cublasLtMatrixLayout_t la, lb, lc, ld;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, k, m, k)); CK(cublasLtMatrixLayoutCreate(&lb, v.bt, k, n, k));
    CK(cublasLtMatrixLayoutCreate(&lc, cd, m, n, m)); CK(cublasLtMatrixLayoutCreate(&ld, cd, m, n, m));
    cublasLtMatmulPreference_t pref; CK(cublasLtMatmulPreferenceCreate(&pref)); size_t wsb = 32 << 20;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    cublasLtMatmulHeuristicResult_t r[8] = {}; int found = 0;
    auto hs = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, ld, pref, 8, r, &found);
    float alpha = 1, beta = v.beta; int ok = 0, first = -1;
    for (int i = 0; i < found; ++i) {
      auto st = cublasLtMatmul(h, op, &alpha, (char*)A + v.a_off, la, B, lb, &beta, v.cnull ? nullptr : (v.inplace ? D : C), lc, D, ld, &r[i].algo, ws, wsb, 0);
      if (st == 0) ++ok; if (i == 0) first = st;
    }
    auto e = cudaDeviceSynchronize();
    printf("%5ld %5ld %5ld %-13s heuristic %d found %d, runs ok %d/%d (first %d) cuda %d\n", (long)m, (long)n, (long)k, v.name, (int)hs, found, ok, found, first, (int)e);
    cublasLtMatmulPreferenceDestroy(pref); cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc); cublasLtMatrixLayoutDestroy(ld); cublasLtMatmulDescDestroy(op);
  }
  return 0;
}
