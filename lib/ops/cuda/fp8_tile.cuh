// Device pieces of the FP8 casts (ops/cuda/fp8_cast.cu) that a producing kernel shares to write an FP8 copy itself:
// the conversion (one instruction, cvt.rn.satfinite, whichever kernel converts), the scale from an amax, and a warp's
// 32 × 32 sub-tile of codes stored transposed through byte permutes.
#pragma once
#include <cuda_fp8.h>

#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/fp8.h"

namespace qwen3::cuda {

// A warp's sub-tile of the casts with a transposed copy: 32 rows × 32 columns.
constexpr int kFp8WarpTile = 32;

__device__ __forceinline__ std::uint8_t to_fp8(float v, Fp8Format f) {
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2);
}

// The 8 codes of 8 bf16 values (one 16-byte load), packed in load order.
__device__ __forceinline__ uint2 to_fp8x8(uint4 v, float s, Fp8Format f) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
  unsigned out[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const unsigned short bits = static_cast<unsigned short>(w[i / 2] >> (16 * (i % 2)));
    out[i / 4] |= static_cast<unsigned>(to_fp8(to_f(__ushort_as_bfloat16(bits)) * s, f)) << (8 * (i % 4));
  }
  return {out[0], out[1]};
}

// s = fp8_scale(*amax, f); the grid's first thread writes *scale_inv = 1/s (exact: s is 2^k, or NaN).
__device__ __forceinline__ float fp8_scale_and_publish(const float* amax, Fp8Format f, float* scale_inv) {
  const float s = fp8_scale(*amax, f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *scale_inv = 1.0f / s;
  return s;
}

// A warp's sub-tile at (R, C) in registers: lane (g = lane % 4, h = lane / 4) holds rows R + 4h … + 3, columns
// C + 8g … + 7 as code[i] (row R + 4h + i: bytes 0-3 of .x columns C + 8g … + 3, of .y columns + 4 … + 7).
// Stores them transposed, cols[c · cols_ld + r], by byte permutes: each column's 4 codes a 4-byte store, 32
// contiguous bytes for the 8 lanes of a column.
__device__ __forceinline__ void store_fp8_tile_transposed(const uint2 (&code)[4], std::uint8_t* __restrict__ cols,
                                                          std::int64_t cols_ld, std::int64_t R, std::int64_t C) {
  const int lane = threadIdx.x & 31, g = lane & 3, h = lane >> 2;
  const std::int64_t r = R + 4 * h, c = C + 8 * g;
#pragma unroll
  for (int half = 0; half < 2; ++half) {  // columns c … c + 3, then c + 4 … c + 7
    const unsigned a = half ? code[0].y : code[0].x, b = half ? code[1].y : code[1].x;
    const unsigned cc = half ? code[2].y : code[2].x, d = half ? code[3].y : code[3].x;
    const unsigned ab_lo = __byte_perm(a, b, 0x5140), ab_hi = __byte_perm(a, b, 0x7362);  // a0 b0 a1 b1 | a2 b2 a3 b3
    const unsigned cd_lo = __byte_perm(cc, d, 0x5140), cd_hi = __byte_perm(cc, d, 0x7362);
    const unsigned col[4] = {__byte_perm(ab_lo, cd_lo, 0x5410), __byte_perm(ab_lo, cd_lo, 0x7632),  // a0 b0 c0 d0 …
                             __byte_perm(ab_hi, cd_hi, 0x5410), __byte_perm(ab_hi, cd_hi, 0x7632)};
#pragma unroll
    for (int j = 0; j < 4; ++j) *reinterpret_cast<unsigned*>(cols + (c + 4 * half + j) * cols_ld + r) = col[j];
  }
}

}  // namespace qwen3::cuda
