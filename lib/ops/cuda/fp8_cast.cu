// FP8 amax and casts (see fp8_cast.h). The cast works on 64 × 64 tiles through shared memory, so that both the
// row-major and the transposed copy are written along their rows.
#include <cuda_fp8.h>

#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/fp8_cast.h"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kTile = 64;

// |x| of bf16 bits as an ordered integer: NaN above +inf above every finite value.
__device__ __forceinline__ unsigned magnitude_bits(bf16 x) { return __bfloat16_as_ushort(x) & 0x7fffu; }

__global__ void amax_kernel(const bf16* __restrict__ x, std::int64_t n, unsigned* __restrict__ amax_bits) {
  unsigned m = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    m = max(m, magnitude_bits(x[i]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0 && m) atomicMax(amax_bits, m << 16);  // bf16 bits to fp32 bits
}

__device__ __forceinline__ std::uint8_t to_fp8(float v, Fp8Format f) {
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2);
}

__global__ void cast_kernel(const bf16* __restrict__ x, std::int64_t rows, std::int64_t cols,
                            const float* __restrict__ amax, Fp8Format f, Fp8Copies out, float* __restrict__ scale_inv) {
  __shared__ std::uint8_t tile[kTile][kTile + 4];
  const float s = fp8_scale(*amax, f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *scale_inv = 1.0f / s;  // exact: s is 2^k (or NaN)
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * kTile, c0 = static_cast<std::int64_t>(blockIdx.x) * kTile;
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
}  // namespace

void fp8_amax(const bf16* x, std::int64_t n, float* amax, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  if (n == 0) return;
  const std::int64_t blocks = std::min<std::int64_t>((n + kThreads - 1) / kThreads, 1024);
  amax_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, n, reinterpret_cast<unsigned*>(amax));
  CUDA_CHECK_LAUNCH("fp8 amax_kernel");
}

void fp8_cast(const bf16* x, std::int64_t rows, std::int64_t cols, const float* amax, Fp8Format format,
              const Fp8Copies& out, float* scale_inv, cudaStream_t stream) {
  const std::int64_t row_extent = out.cols ? std::max(rows, out.cols_ld) : rows;
  const std::int64_t col_extent = out.rows ? std::max(cols, out.rows_ld) : cols;
  if (row_extent == 0 || col_extent == 0) return;
  const dim3 grid(static_cast<unsigned>((col_extent + kTile - 1) / kTile), static_cast<unsigned>((row_extent + kTile - 1) / kTile));
  cast_kernel<<<grid, kThreads, 0, stream>>>(x, rows, cols, amax, format, out, scale_inv);
  CUDA_CHECK_LAUNCH("fp8 cast_kernel");
}

}  // namespace qwen3::cuda
