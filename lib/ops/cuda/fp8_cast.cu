// FP8 amax and casts (see fp8_cast.h). Memory-bound passes, so each moves 16 bytes per load where the layout allows:
// - amax: 8 bf16 per load, one atomic per block;
// - a cast to the row-major copy only: 8 values per thread, loaded as 16 bytes and stored as 8;
// - a cast with the transposed copy: a warp per 32 × 32 sub-tile, transposed in registers (byte permutes), so that both
//   copies are written along their rows in runs of 32 contiguous bytes; a sub-tile wholly inside x (and 16-byte-aligned
//   layouts) loads 16 bytes four times and stores 8 (rows) and 4 (transposed) bytes per thread, the edge sub-tiles and
//   the zero padding element by element. (64 × 64 tiles through shared memory, byte by byte, ran at 1.9 TB/s on an
//   H100.)
// Every path converts each value with the same instruction (cvt.rn.satfinite), so the codes are the same whichever
// path writes them (CudaFp8 tests: bit for bit against the host model).
#include <algorithm>
#include <cstdint>

#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/fp8_cast.h"
#include "ops/cuda/fp8_tile.cuh"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kVec = 8;  // bf16 values per 16-byte load
// A cast with the transposed copy: each warp a 32 × 32 sub-tile, a block's 8 warps 2 down and 4 across.
constexpr int kWarpTile = kFp8WarpTile, kWarpsAcross = 4;
constexpr int kTileRows = kWarpTile * (kThreads / 32 / kWarpsAcross), kTileCols = kWarpTile * kWarpsAcross;

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

// The row-major copy alone, 8 values a chunk, two chunks a thread and iteration (both loads issued before either
// store): x [rows, cols], out [rows, ld]; cols and ld multiples of 8. Without padding (ld == cols) a chunk's place is
// its index; else its row and column come from a division.
__global__ void cast_rows_kernel(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols,
                                 const float* __restrict__ amax, Fp8Format f, std::uint8_t* __restrict__ out,
                                 std::int64_t ld, float* __restrict__ scale_inv) {
  const float s = fp8_scale_and_publish(amax, f, scale_inv);
  const std::int64_t per_row = ld / kVec, chunks = rows * per_row;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  auto padding = [&](std::int64_t i) { return ld != cols && (i % per_row) * kVec >= cols; };  // zeros, whatever s is
  auto load = [&](std::int64_t i) -> uint4 {  // chunk i's 8 values
    if (ld == cols) return *reinterpret_cast<const uint4*>(x + i * kVec);
    return padding(i) ? uint4{0, 0, 0, 0} : *reinterpret_cast<const uint4*>(x + i / per_row * cols + i % per_row * kVec);
  };
  auto store = [&](std::int64_t i, uint4 v) {  // chunk i starts at i·8 of out (ld = per_row·8)
    *reinterpret_cast<uint2*>(out + i * kVec) = padding(i) ? uint2{0, 0} : to_fp8x8(v, s, f);
  };
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < chunks; i += 2 * stride) {
    const std::int64_t j = i + stride;
    const uint4 a = load(i), b = j < chunks ? load(j) : uint4{0, 0, 0, 0};
    store(i, a);
    if (j < chunks) store(j, b);
  }
}

// A warp's 32 × 32 sub-tile wholly inside x, in registers: lane (g = lane % 4, h = lane / 4) casts rows R + 4h … + 3,
// columns C + 8g … + 7 (four 16-byte loads), writes each row's 8 codes (8-byte stores: 32 contiguous bytes for the 4
// lanes of a row) and, transposed by byte permutes, each column's 4 codes (4-byte stores: 32 contiguous bytes for the 8
// lanes of a column). No shared memory; every access is a run of 32 contiguous bytes (one sector when the leading
// dimension is a multiple of 32, two halves of sectors when it is 16 more than one).
__device__ void cast_warp_tile_vector(const bf16* __restrict__ x, std::int64_t cols, std::int64_t R, std::int64_t C,
                                      float s, Fp8Format f, const Fp8Copies& out) {
  const int lane = threadIdx.x & 31, g = lane & 3, h = lane >> 2;
  const std::int64_t r = R + 4 * h, c = C + 8 * g;
  uint2 code[4];  // row r + i: bytes 0-3 of .x columns c … c + 3, of .y columns c + 4 … c + 7
#pragma unroll
  for (int i = 0; i < 4; ++i) code[i] = to_fp8x8(*reinterpret_cast<const uint4*>(x + (r + i) * cols + c), s, f);
  if (out.rows)
#pragma unroll
    for (int i = 0; i < 4; ++i) *reinterpret_cast<uint2*>(out.rows + (r + i) * out.rows_ld + c) = code[i];
  if (out.cols) store_fp8_tile_transposed(code, out.cols, out.cols_ld, R, C);
}

// A sub-tile at an edge (or in the padding): element by element, zeros outside x; the row-major copy along rows, the
// transposed one along its rows.
__device__ void cast_warp_tile_scalar(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols, std::int64_t R,
                                      std::int64_t C, float s, Fp8Format f, const Fp8Copies& out) {
  const int lane = threadIdx.x & 31;
  auto code = [&](std::int64_t r, std::int64_t c) -> std::uint8_t {
    return (r < rows && c < cols) ? to_fp8(to_f(x[r * cols + c]) * s, f) : 0;
  };
  for (int i = lane; i < kWarpTile * kWarpTile; i += 32) {
    const std::int64_t r = R + i / kWarpTile, c = C + i % kWarpTile;
    if (out.rows && r < rows && c < out.rows_ld) out.rows[r * out.rows_ld + c] = code(r, c);
    const std::int64_t tc = C + i / kWarpTile, tr = R + i % kWarpTile;
    if (out.cols && tc < cols && tr < out.cols_ld) out.cols[tc * out.cols_ld + tr] = code(tr, tc);
  }
}

// Each warp casts one kWarpTile × kWarpTile sub-tile of the block's kTileRows × kTileCols, up to the extents (x and the
// copies' padding). vector: x, the copies and their leading dimensions allow the register path for sub-tiles wholly
// inside x.
__global__ void cast_tiles_kernel(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols,
                                  std::int64_t row_extent, std::int64_t col_extent, const float* __restrict__ amax,
                                  Fp8Format f, Fp8Copies out, bool vector, float* __restrict__ scale_inv) {
  const float s = fp8_scale_and_publish(amax, f, scale_inv);
  const int warp = threadIdx.x >> 5;
  const std::int64_t R = static_cast<std::int64_t>(blockIdx.y) * kTileRows + (warp / kWarpsAcross) * kWarpTile;
  const std::int64_t C = static_cast<std::int64_t>(blockIdx.x) * kTileCols + (warp % kWarpsAcross) * kWarpTile;
  if (R >= row_extent || C >= col_extent) return;
  if (vector && R + kWarpTile <= rows && C + kWarpTile <= cols)
    cast_warp_tile_vector(x, cols, R, C, s, f, out);
  else
    cast_warp_tile_scalar(x, rows, cols, R, C, s, f, out);
}

__global__ void amax_fold_kernel(const float* amax, float* into) {
  atomicMax(reinterpret_cast<unsigned*>(into), __float_as_uint(*amax));  // non-negative floats order as their bits
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

void fp8_amax_fold(const float* amax, float* into, cudaStream_t stream) {
  amax_fold_kernel<<<1, 1, 0, stream>>>(amax, into);
  CUDA_CHECK_LAUNCH("fp8 amax_fold_kernel");
}

void fp8_cast(const bf16* x, std::int64_t rows, std::int64_t cols, const float* amax, Fp8Format format,
              const Fp8Copies& out, float* scale_inv, cudaStream_t stream) {
  const bool vector = aligned16(x) && cols % kVec == 0 && (!out.rows || (aligned16(out.rows) && out.rows_ld % kVec == 0)) &&
                      (!out.cols || (aligned16(out.cols) && out.cols_ld % 16 == 0));
  if (!out.cols && out.rows && vector) {
    cast_rows_kernel<<<blocks_for((rows * (out.rows_ld / kVec) + 1) / 2), kThreads, 0, stream>>>(x, rows, cols, amax, format,
                                                                                      out.rows, out.rows_ld, scale_inv);
    CUDA_CHECK_LAUNCH("fp8 cast_rows_kernel");
    return;
  }
  const std::int64_t row_extent = out.cols ? std::max(rows, out.cols_ld) : rows;
  const std::int64_t col_extent = out.rows ? std::max(cols, out.rows_ld) : cols;
  if (row_extent == 0 || col_extent == 0) return;
  const dim3 grid(static_cast<unsigned>((col_extent + kTileCols - 1) / kTileCols),
                  static_cast<unsigned>((row_extent + kTileRows - 1) / kTileRows));
  cast_tiles_kernel<<<grid, kThreads, 0, stream>>>(x, rows, cols, row_extent, col_extent, amax, format, out, vector,
                                                   scale_inv);
  CUDA_CHECK_LAUNCH("fp8 cast_tiles_kernel");
}

}  // namespace qwen3::cuda
