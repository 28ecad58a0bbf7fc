// CUDA casts to FP8 for --precision fp8 (formats and the scale rule: ops/fp8.h; host model: cpu::fp8_encode):
// a tensor's amax, and its cast with the scale that amax gives, to row-major and/or transposed FP8 copies whose
// contraction dimension is padded with zeros to kFp8Align elements (cuBLASLt's FP8 GEMMs want 16-byte rows).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/fp8.h"

namespace qwen3::cuda {

// amax[0] = max |x[i]| over n bf16 values, NaN when one is NaN (overwrites; ordered on the stream).
void fp8_amax(const __nv_bfloat16* x, std::int64_t n, float* amax, cudaStream_t stream);
// *into = max(*into, *amax) (both ≥ 0 or NaN; ordered on the stream): a tensor's amax folded into a running one.
void fp8_amax_fold(const float* amax, float* into, cudaStream_t stream);

// Where one cast writes: rows = x's layout [rows, rows_ld ≥ cols], cols = its transpose [cols, cols_ld ≥ rows]; either
// may be null. Padding (columns [cols, rows_ld) of rows, [rows, cols_ld) of cols) is written as zeros.
struct Fp8Copies {
  std::uint8_t* rows = nullptr;
  std::int64_t rows_ld = 0;
  std::uint8_t* cols = nullptr;
  std::int64_t cols_ld = 0;
};

// With s = fp8_scale(*amax, format): every copy[...] = fp8(x[r, c]·s), rounded to nearest even and saturated, and
// *scale_inv = 1/s (the GEMM's dequantisation). x: [rows, cols] bf16, row-major.
void fp8_cast(const __nv_bfloat16* x, std::int64_t rows, std::int64_t cols, const float* amax, Fp8Format format,
              const Fp8Copies& out, float* scale_inv, cudaStream_t stream);

}  // namespace qwen3::cuda
