// FP8 amax and casts (see fp8_cast.h). Memory-bound passes, so each moves 16 bytes per load where the layout allows:
// - amax: 8 bf16 per load, one atomic per block;
// - a cast to the row-major copy only: 8 values per thread, loaded as 16 bytes and stored as 8;
// - a cast with the transposed copy: 64 × 64 tiles through shared memory, so that both copies are written along their
//   rows; a tile wholly inside x (and 16-byte-aligned layouts) loads 16 bytes and stores 8 (rows) and 16 (transposed)
//   per thread, the edge tiles and the zero padding element by element.
// Every path converts each value with the same instruction (cvt.rn.satfinite), so the codes are the same whichever
// path writes them (CudaFp8 tests: bit for bit against the host model).
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/fp8_cast.h"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kTile = 64;
constexpr int kVec = 8;  // bf16 values per 16-byte load

__global__ void amax_kernel(const bf16* __restrict__ x, std::int64_t n, bool vector, unsigned* __restrict__ amax_bits) {
  unsigned m = 0;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t vecs = vector ? n / kVec : 0;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  for (std::int64_t i = first; i < vecs; i += stride) {
    const uint4 v = xv[i];
    m = max(m, max(max(magnitude_bits2(v.x), magnitude_bits2(v.y)), max(magnitude_bits2(v.z), magnitude_bits2(v.w))));
  }
  for (std::int64_t i = vecs * kVec + first; i < n; i += stride) m = max(m, magnitude_bits(x[i]));
  publish_amax(m, amax_bits);
}

__device__ __forceinline__ std::uint8_t to_fp8(float v, Fp8Format f) {
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2);
}

// The 8 codes of 8 bf16 values (one 16-byte load), packed in load order.
__device__ __forceinline__ uint2 to_fp8x8(uint4 v, float s, Fp8Format f) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
  unsigned out[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const unsigned short bits = static_cast<unsigned short>(w[i / 2] >> (16 * (i % 2)));
    out[i / 4] |= static_cast<unsigned>(to_fp8(to_f(__ushort_as_bfloat16(bits)) * s, f)) << (8 * (i % 4));
  }
  return {out[0], out[1]};
}

__device__ __forceinline__ float scale_and_publish(const float* amax, Fp8Format f, float* scale_inv) {
  const float s = fp8_scale(*amax, f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *scale_inv = 1.0f / s;  // exact: s is 2^k (or NaN)
  return s;
}

// The row-major copy alone, 8 values a thread: x [rows, cols], out [rows, ld]; cols and ld multiples of 8.
__global__ void cast_rows_kernel(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols,
                                 const float* __restrict__ amax, Fp8Format f, std::uint8_t* __restrict__ out,
                                 std::int64_t ld, float* __restrict__ scale_inv) {
  const float s = scale_and_publish(amax, f, scale_inv);
  const std::int64_t per_row = ld / kVec, chunks = rows * per_row;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < chunks;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / per_row, c = (i % per_row) * kVec;
    const uint2 codes = c < cols ? to_fp8x8(*reinterpret_cast<const uint4*>(x + r * cols + c), s, f) : uint2{0, 0};
    *reinterpret_cast<uint2*>(out + r * ld + c) = codes;
  }
}

// One tile wholly inside x: 16-byte loads, 8-byte row-major stores, 16-byte transposed stores.
__device__ void cast_tile_vector(const bf16* __restrict__ x, std::int64_t cols, std::int64_t r0, std::int64_t c0, float s,
                                 Fp8Format f, const Fp8Copies& out, std::uint8_t (*tile)[kTile + 4]) {
  for (int i = threadIdx.x; i < kTile * kTile / kVec; i += blockDim.x) {
    const int r = i / (kTile / kVec), c = (i % (kTile / kVec)) * kVec;
    const uint2 codes = to_fp8x8(*reinterpret_cast<const uint4*>(x + (r0 + r) * cols + c0 + c), s, f);
    const unsigned w[2] = {codes.x, codes.y};
#pragma unroll
    for (int j = 0; j < kVec; ++j) tile[r][c + j] = static_cast<std::uint8_t>(w[j / 4] >> (8 * (j % 4)));
    if (out.rows) *reinterpret_cast<uint2*>(out.rows + (r0 + r) * out.rows_ld + c0 + c) = codes;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kTile * kTile / 16; i += blockDim.x) {  // a transposed row's 16 bytes a thread
    const int c = i / (kTile / 16), r = (i % (kTile / 16)) * 16;
    unsigned w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int j = 0; j < 16; ++j) w[j / 4] |= static_cast<unsigned>(tile[r + j][c]) << (8 * (j % 4));
    *reinterpret_cast<uint4*>(out.cols + (c0 + c) * out.cols_ld + r0 + r) = uint4{w[0], w[1], w[2], w[3]};
  }
}

// An edge tile (or one of the padding): element by element, zeros outside x.
__device__ void cast_tile_scalar(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols, std::int64_t r0,
                                 std::int64_t c0, float s, Fp8Format f, const Fp8Copies& out,
                                 std::uint8_t (*tile)[kTile + 4]) {
  for (int i = threadIdx.x; i < kTile * kTile; i += blockDim.x) {
    const int r = i / kTile, c = i % kTile;
    const std::int64_t R = r0 + r, C = c0 + c;
    const std::uint8_t v = (R < rows && C < cols) ? to_fp8(to_f(x[R * cols + C]) * s, f) : 0;
    tile[r][c] = v;
    if (out.rows && R < rows && C < out.rows_ld) out.rows[R * out.rows_ld + C] = v;
  }
  if (!out.cols) return;
  __syncthreads();
  for (int i = threadIdx.x; i < kTile * kTile; i += blockDim.x) {
    const int c = i / kTile, r = i % kTile;
    const std::int64_t R = r0 + r, C = c0 + c;
    if (C < cols && R < out.cols_ld) out.cols[C * out.cols_ld + R] = tile[r][c];
  }
}

// vector: x, the copies and their leading dimensions allow the 16-byte path for tiles wholly inside x.
__global__ void cast_tiles_kernel(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols,
                                  const float* __restrict__ amax, Fp8Format f, Fp8Copies out, bool vector,
                                  float* __restrict__ scale_inv) {
  __shared__ std::uint8_t tile[kTile][kTile + 4];
  const float s = scale_and_publish(amax, f, scale_inv);
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * kTile, c0 = static_cast<std::int64_t>(blockIdx.x) * kTile;
  if (vector && out.cols && r0 + kTile <= rows && c0 + kTile <= cols)
    cast_tile_vector(x, cols, r0, c0, s, f, out, tile);
  else
    cast_tile_scalar(x, rows, cols, r0, c0, s, f, out, tile);
}

unsigned blocks_for(std::int64_t work) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((work + kThreads - 1) / kThreads, 4096)));
}
}  // namespace

void fp8_amax(const bf16* x, std::int64_t n, float* amax, cudaStream_t stream) {
  unsigned* bits = zeroed_amax(amax, stream);
  if (n == 0) return;
  const bool vector = aligned16(x);
  amax_kernel<<<blocks_for(vector ? n / kVec : n), kThreads, 0, stream>>>(x, n, vector, bits);
  CUDA_CHECK_LAUNCH("fp8 amax_kernel");
}

void fp8_cast(const bf16* x, std::int64_t rows, std::int64_t cols, const float* amax, Fp8Format format,
              const Fp8Copies& out, float* scale_inv, cudaStream_t stream) {
  const bool vector = aligned16(x) && cols % kVec == 0 && (!out.rows || (aligned16(out.rows) && out.rows_ld % kVec == 0)) &&
                      (!out.cols || (aligned16(out.cols) && out.cols_ld % 16 == 0));
  if (!out.cols && out.rows && vector) {
    cast_rows_kernel<<<blocks_for(rows * (out.rows_ld / kVec)), kThreads, 0, stream>>>(x, rows, cols, amax, format,
                                                                                      out.rows, out.rows_ld, scale_inv);
    CUDA_CHECK_LAUNCH("fp8 cast_rows_kernel");
    return;
  }
  const std::int64_t row_extent = out.cols ? std::max(rows, out.cols_ld) : rows;
  const std::int64_t col_extent = out.rows ? std::max(cols, out.rows_ld) : cols;
  if (row_extent == 0 || col_extent == 0) return;
  const dim3 grid(static_cast<unsigned>((col_extent + kTile - 1) / kTile), static_cast<unsigned>((row_extent + kTile - 1) / kTile));
  cast_tiles_kernel<<<grid, kThreads, 0, stream>>>(x, rows, cols, amax, format, out, vector, scale_inv);
  CUDA_CHECK_LAUNCH("fp8 cast_tiles_kernel");
}

}  // namespace qwen3::cuda
