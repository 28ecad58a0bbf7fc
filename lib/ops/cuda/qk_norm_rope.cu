// CUDA q/k norm + RoPE (see qk_norm_rope.h): one warp per (token, head) row; lane handles pairs (i, i + D/2).
// Angles follow transformers: inv_freq = 1 / theta^(2i/D) and position·inv_freq in float32.
#include <stdexcept>

#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/qk_norm_rope.h"

namespace qwen3::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxPairsPerLane = 4;  // D ≤ 256

// cos/sin of position pos, pair i: from the table when the shape carries one (the engine's case), else computed.
__device__ __forceinline__ void rope_angle(const QkShape& sh, std::int64_t pos, int i, int D, float& c, float& s) {
  if (sh.rope_cos != nullptr) {
    c = sh.rope_cos[pos * (D / 2) + i];
    s = sh.rope_sin[pos * (D / 2) + i];
    return;
  }
  const float theta = sh.theta;
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(D));
  const float angle = static_cast<float>(pos) * inv_freq;
  sincosf(angle, &s, &c);
}

template <int kPairs>  // pairs per lane: ceil(head_dim / 64)
__global__ void qk_forward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                  float* __restrict__ rstd, std::int64_t rows, QkShape sh) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31, D = static_cast<int>(sh.head_dim), half = D / 2;
  const std::int64_t token = row / sh.heads, pos = token % sh.seq;
  const bf16* xr = x + token * sh.x_row_stride + (row % sh.heads) * D;
  float a[kPairs], b[kPairs];
  float ss = 0.0f;
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
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
  for (int p = 0; p < kPairs; ++p) {
    const int i = lane + 32 * p;
    if (i < half) {
      const float n1 = a[p] * s * to_f(w[i]);
      const float n2 = b[p] * s * to_f(w[i + half]);
      float c, sn;
      rope_angle(sh, pos, i, D, c, sn);
      yr[i] = to_bf(n1 * c - n2 * sn);
      yr[i + half] = to_bf(n2 * c + n1 * sn);
    }
  }
}

// Each warp walks rows warp_id, warp_id + total_warps, …; each lane keeps its columns' dw partial sums in registers,
// combined over the block's warps in shared memory and added to dw once per block.
template <int kPairs>
__global__ void qk_backward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, const float* __restrict__ rstd,
                                   const bf16* __restrict__ dy, bf16* __restrict__ dx, float* __restrict__ dw,
                                   std::int64_t rows, QkShape sh) {
  __shared__ float part[kWarps][2 * 32 * kPairs];
  const int D = static_cast<int>(sh.head_dim), half = D / 2;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float dwa[kPairs], dwb[kPairs], wa[kPairs], wb[kPairs];
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    const int i = lane + 32 * p;
    dwa[p] = dwb[p] = 0.0f;
    wa[p] = i < half ? to_f(w[i]) : 0.0f;
    wb[p] = i < half ? to_f(w[i + half]) : 0.0f;
  }
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + warp; row < rows; row += stride) {
    const std::int64_t token = row / sh.heads, pos = token % sh.seq;
    const std::int64_t xoff = token * sh.x_row_stride + (row % sh.heads) * D;
    const bf16* xr = x + xoff;
    const bf16* dyr = dy + row * D;
    const float s = rstd[row];
    float xa[kPairs], xb[kPairs], ga[kPairs], gb[kPairs];
    float dot = 0.0f;
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      const int i = lane + 32 * p;
      xa[p] = xb[p] = ga[p] = gb[p] = 0.0f;
      if (i < half) {
        float c, sn;
        rope_angle(sh, pos, i, D, c, sn);
        const float d1 = to_f(dyr[i]), d2 = to_f(dyr[i + half]);
        ga[p] = d1 * c + d2 * sn;  // transposed rotation: gradient of the norm output
        gb[p] = d2 * c - d1 * sn;
        xa[p] = to_f(xr[i]);
        xb[p] = to_f(xr[i + half]);
        dot += ga[p] * wa[p] * xa[p] + gb[p] * wb[p] * xb[p];
        dwa[p] += ga[p] * xa[p] * s;
        dwb[p] += gb[p] * xb[p] * s;
      }
    }
    dot = warp_sum(dot);
    const float k = s * s * s * dot / static_cast<float>(D);
    bf16* dxr = dx + xoff;
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      const int i = lane + 32 * p;
      if (i < half) {
        dxr[i] = to_bf(s * ga[p] * wa[p] - xa[p] * k);
        dxr[i + half] = to_bf(s * gb[p] * wb[p] - xb[p] * k);
      }
    }
  }
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    part[warp][lane + 32 * p] = dwa[p];
    part[warp][32 * kPairs + lane + 32 * p] = dwb[p];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float a = 0.0f, b = 0.0f;
    for (int y = 0; y < kWarps; ++y) {
      a += part[y][i];
      b += part[y][32 * kPairs + i];
    }
    atomicAdd(dw + i, a);
    atomicAdd(dw + i + half, b);
  }
}

void check_shape(const QkShape& s) {
  if (s.head_dim % 2 != 0 || s.head_dim > 2 * 32 * kMaxPairsPerLane)
    throw std::runtime_error("qk_norm_rope: head_dim must be even and at most 256");
  if (s.x_row_stride < s.heads * s.head_dim) throw std::runtime_error("qk_norm_rope: x_row_stride below heads·head_dim");
}

int pairs_per_lane(const QkShape& s) { return static_cast<int>((s.head_dim / 2 + 31) / 32); }

}  // namespace

void qk_norm_rope_forward(const bf16* x, const bf16* w, bf16* y, float* rstd, const QkShape& s, cudaStream_t stream) {
  check_shape(s);
  const std::int64_t rows = s.batch * s.seq * s.heads;
  if (rows == 0) return;
  const auto blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  switch (pairs_per_lane(s)) {
    case 1: qk_forward_kernel<1><<<blocks, kWarps * 32, 0, stream>>>(x, w, y, rstd, rows, s); break;
    case 2: qk_forward_kernel<2><<<blocks, kWarps * 32, 0, stream>>>(x, w, y, rstd, rows, s); break;
    default: qk_forward_kernel<4><<<blocks, kWarps * 32, 0, stream>>>(x, w, y, rstd, rows, s); break;
  }
  CUDA_CHECK_LAUNCH("qk_forward_kernel");
}

void qk_norm_rope_backward(const bf16* x, const bf16* w, const float* rstd, const bf16* dy, bf16* dx, float* dw,
                           const QkShape& s, cudaStream_t stream) {
  check_shape(s);
  const std::int64_t rows = s.batch * s.seq * s.heads;
  if (rows == 0) return;
  std::int64_t blocks = (rows + kWarps - 1) / kWarps;
  if (blocks > 2048) blocks = 2048;  // ~16 blocks per SM; more rows per warp means fewer dw atomics
  const auto b = static_cast<unsigned>(blocks);
  switch (pairs_per_lane(s)) {
    case 1: qk_backward_kernel<1><<<b, kWarps * 32, 0, stream>>>(x, w, rstd, dy, dx, dw, rows, s); break;
    case 2: qk_backward_kernel<2><<<b, kWarps * 32, 0, stream>>>(x, w, rstd, dy, dx, dw, rows, s); break;
    default: qk_backward_kernel<4><<<b, kWarps * 32, 0, stream>>>(x, w, rstd, dy, dx, dw, rows, s); break;
  }
  CUDA_CHECK_LAUNCH("qk_backward_kernel");
}

}  // namespace qwen3::cuda
