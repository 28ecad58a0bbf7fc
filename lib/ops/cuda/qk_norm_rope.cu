// CUDA q/k norm + RoPE (see qk_norm_rope.h): one warp per (token, head) row; lane handles pairs (i, i + D/2).
// Angles follow transformers: inv_freq = 1 / theta^(2i/D) and position·inv_freq in float32.
#include <stdexcept>

#include "cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/qk_norm_rope.h"

namespace qwen3::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxPairsPerLane = 4;  // D ≤ 256

__device__ __forceinline__ void rope_angle(std::int64_t pos, int i, int D, float theta, float& c, float& s) {
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(D));
  const float angle = static_cast<float>(pos) * inv_freq;
  sincosf(angle, &s, &c);
}

__global__ void qk_forward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                  float* __restrict__ rstd, std::int64_t rows, QkShape sh) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31, D = static_cast<int>(sh.head_dim), half = D / 2;
  const std::int64_t token = row / sh.heads, pos = token % sh.seq;
  const bf16* xr = x + token * sh.x_row_stride + (row % sh.heads) * D;
  float a[kMaxPairsPerLane], b[kMaxPairsPerLane];
  float ss = 0.0f;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int i = lane + 32 * p;
    a[p] = b[p] = 0.0f;
    if (i < half) {
      a[p] = to_f(xr[i]);
      b[p] = to_f(xr[i + half]);
      ss += a[p] * a[p] + b[p] * b[p];
    }
  }
  ss = warp_sum(ss);
  const float s = rsqrtf(ss / static_cast<float>(D) + sh.eps);
  if (lane == 0) rstd[row] = s;
  bf16* yr = y + row * D;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int i = lane + 32 * p;
    if (i < half) {
      const float n1 = a[p] * s * to_f(w[i]);
      const float n2 = b[p] * s * to_f(w[i + half]);
      float c, sn;
      rope_angle(pos, i, D, sh.theta, c, sn);
      yr[i] = to_bf(n1 * c - n2 * sn);
      yr[i + half] = to_bf(n2 * c + n1 * sn);
    }
  }
}

__global__ void qk_backward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, const float* __restrict__ rstd,
                                   const bf16* __restrict__ dy, bf16* __restrict__ dx, float* __restrict__ dw,
                                   std::int64_t rows, QkShape sh) {
  __shared__ float dw_acc[256];
  const int D = static_cast<int>(sh.head_dim), half = D / 2;
  for (int i = threadIdx.x; i < D; i += blockDim.x) dw_acc[i] = 0.0f;
  __syncthreads();
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row < rows) {
    const std::int64_t token = row / sh.heads, pos = token % sh.seq;
    const std::int64_t xoff = token * sh.x_row_stride + (row % sh.heads) * D;
    const bf16* xr = x + xoff;
    const bf16* dyr = dy + row * D;
    const float s = rstd[row];
    float xa[kMaxPairsPerLane], xb[kMaxPairsPerLane], ga[kMaxPairsPerLane], gb[kMaxPairsPerLane];
    float dot = 0.0f;
#pragma unroll
    for (int p = 0; p < kMaxPairsPerLane; ++p) {
      const int i = lane + 32 * p;
      xa[p] = xb[p] = ga[p] = gb[p] = 0.0f;
      if (i < half) {
        float c, sn;
        rope_angle(pos, i, D, sh.theta, c, sn);
        const float d1 = to_f(dyr[i]), d2 = to_f(dyr[i + half]);
        const float dn1 = d1 * c + d2 * sn, dn2 = d2 * c - d1 * sn;  // transposed rotation: gradient of the norm output
        xa[p] = to_f(xr[i]);
        xb[p] = to_f(xr[i + half]);
        ga[p] = dn1;
        gb[p] = dn2;
        dot += dn1 * to_f(w[i]) * xa[p] + dn2 * to_f(w[i + half]) * xb[p];
        atomicAdd(&dw_acc[i], dn1 * xa[p] * s);
        atomicAdd(&dw_acc[i + half], dn2 * xb[p] * s);
      }
    }
    dot = warp_sum(dot);
    const float k = s * s * s * dot / static_cast<float>(D);
    bf16* dxr = dx + xoff;
#pragma unroll
    for (int p = 0; p < kMaxPairsPerLane; ++p) {
      const int i = lane + 32 * p;
      if (i < half) {
        dxr[i] = to_bf(s * ga[p] * to_f(w[i]) - xa[p] * k);
        dxr[i + half] = to_bf(s * gb[p] * to_f(w[i + half]) - xb[p] * k);
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < D; i += blockDim.x) atomicAdd(dw + i, dw_acc[i]);
}

void check_shape(const QkShape& s) {
  if (s.head_dim % 2 != 0 || s.head_dim > 2 * 32 * kMaxPairsPerLane)
    throw std::runtime_error("qk_norm_rope: head_dim must be even and at most 256");
  if (s.x_row_stride < s.heads * s.head_dim) throw std::runtime_error("qk_norm_rope: x_row_stride below heads·head_dim");
}

}  // namespace

void qk_norm_rope_forward(const bf16* x, const bf16* w, bf16* y, float* rstd, const QkShape& s, cudaStream_t stream) {
  check_shape(s);
  const std::int64_t rows = s.batch * s.seq * s.heads;
  if (rows == 0) return;
  qk_forward_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(x, w, y, rstd, rows, s);
  CUDA_CHECK_LAUNCH("qk_forward_kernel");
}

void qk_norm_rope_backward(const bf16* x, const bf16* w, const float* rstd, const bf16* dy, bf16* dx, float* dw,
                           const QkShape& s, cudaStream_t stream) {
  check_shape(s);
  const std::int64_t rows = s.batch * s.seq * s.heads;
  if (rows == 0) return;
  qk_backward_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(x, w, rstd, dy, dx, dw, rows, s);
  CUDA_CHECK_LAUNCH("qk_backward_kernel");
}

}  // namespace qwen3::cuda
