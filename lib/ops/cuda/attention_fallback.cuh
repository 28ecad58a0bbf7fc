// Simple fused attention kernels for head dims without a tensor-core path (any multiple of 8 up to 256): one warp
// per output row, fp32 FMAs, online softmax. Written for correctness, not speed (the golden tests use D = 8, 16).
// Included once, by attention.cu. Layouts as ops/cuda/attention.h.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "ops/cuda/attention_mma.cuh"

namespace qwen3::cuda::attn {

constexpr int kSimpleWarps = 4;                 // warps (rows) per block
constexpr int kSimpleMaxDim = 256;              // largest head dim of this path
constexpr int kSimplePerLane = kSimpleMaxDim / 32;  // head-dim elements each lane accumulates

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Σ_d a[d]·row[d]: a in shared memory (fp32), row a 16-byte-aligned bf16 row in device memory; d % 8 == 0.
__device__ __forceinline__ float dot_row(const float* a, const __nv_bfloat16* row, int dim) {
  float acc = 0.f;
  for (int d = 0; d < dim; d += 8) {
    const Bf16x8 u = *reinterpret_cast<const Bf16x8*>(row + d);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(u.h[i]);
      acc = fmaf(a[d + 2 * i], f.x, acc);
      acc = fmaf(a[d + 2 * i + 1], f.y, acc);
    }
  }
  return acc;
}

// out[B,S,H,D], lse[B,H,S]: one warp per (b, t, h) row; lanes take 32 keys at a time for the scores, then split the
// head dim for the P·V accumulation.
__global__ void __launch_bounds__(kSimpleWarps * 32, 4)
    attn_fwd_simple_kernel(const __nv_bfloat16* __restrict__ q,  // [B, S, H, D]
                           const __nv_bfloat16* __restrict__ k,  // [B, S, KVH, D]
                           const __nv_bfloat16* __restrict__ v,  // [B, S, KVH, D]
                           __nv_bfloat16* __restrict__ out,      // [B, S, H, D]
                           float* __restrict__ lse,              // [B, H, S]
                           std::int64_t rows, int seq, int heads, int kv_heads, int dim, float scale) {
  __shared__ float sq[kSimpleWarps][kSimpleMaxDim];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + warp;  // (b·S + t)·H + h
  if (r >= rows) return;  // whole warp leaves; no block barrier below
  const int h = static_cast<int>(r % heads);
  const int t = static_cast<int>((r / heads) % seq);
  const std::int64_t b = r / (static_cast<std::int64_t>(heads) * seq);
  const int g = h / (heads / kv_heads);
  const std::int64_t kv_stride = static_cast<std::int64_t>(kv_heads) * dim;
  const __nv_bfloat16* kb = k + (b * seq * kv_heads + g) * dim;
  const __nv_bfloat16* vb = v + (b * seq * kv_heads + g) * dim;
  for (int d = lane; d < dim; d += 32) sq[warp][d] = __bfloat162float(q[r * dim + d]);
  __syncwarp();

  float acc[kSimplePerLane];
#pragma unroll
  for (int c = 0; c < kSimplePerLane; ++c) acc[c] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j0 = 0; j0 <= t; j0 += 32) {
    const int j = j0 + lane;
    const bool valid = j <= t;
    const float s = valid ? dot_row(sq[warp], kb + j * kv_stride, dim) * scale : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));  // finite: key j0 ≤ t is valid
    const float p = valid ? expf(s - m_new) : 0.f;
    const float alpha = expf(m - m_new);  // 0 on the first chunk (m = -inf)
    l = l * alpha + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int c = 0; c < kSimplePerLane; ++c) acc[c] *= alpha;
    const int n = min(32, t - j0 + 1);
    for (int jj = 0; jj < n; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const __nv_bfloat16* vr = vb + (j0 + jj) * kv_stride;
#pragma unroll
      for (int c = 0; c < kSimplePerLane; ++c) {
        const int d = lane + 32 * c;
        if (d < dim) acc[c] = fmaf(pj, __bfloat162float(vr[d]), acc[c]);
      }
    }
  }
  const float inv = 1.f / l;
#pragma unroll
  for (int c = 0; c < kSimplePerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < dim) out[r * dim + d] = __float2bfloat16(acc[c] * inv);
  }
  if (lane == 0) lse[(b * heads + h) * seq + t] = m + logf(l);
}

// dq[B,S,H,D] (bf16, written directly): one warp per query row, recomputing P from lse.
__global__ void __launch_bounds__(kSimpleWarps * 32, 4)
    attn_bwd_dq_simple_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                              const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ dout,
                              const float* __restrict__ lse,    // [B, H, S]
                              const float* __restrict__ delta,  // [B, H, S]
                              __nv_bfloat16* __restrict__ dq, std::int64_t rows, int seq, int heads, int kv_heads,
                              int dim, float scale) {
  __shared__ float sq[kSimpleWarps][kSimpleMaxDim];
  __shared__ float sdo[kSimpleWarps][kSimpleMaxDim];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + warp;  // (b·S + t)·H + h
  if (r >= rows) return;
  const int h = static_cast<int>(r % heads);
  const int t = static_cast<int>((r / heads) % seq);
  const std::int64_t b = r / (static_cast<std::int64_t>(heads) * seq);
  const int g = h / (heads / kv_heads);
  const std::int64_t kv_stride = static_cast<std::int64_t>(kv_heads) * dim;
  const __nv_bfloat16* kb = k + (b * seq * kv_heads + g) * dim;
  const __nv_bfloat16* vb = v + (b * seq * kv_heads + g) * dim;
  for (int d = lane; d < dim; d += 32) {
    sq[warp][d] = __bfloat162float(q[r * dim + d]);
    sdo[warp][d] = __bfloat162float(dout[r * dim + d]);
  }
  __syncwarp();
  const float row_lse = lse[(b * heads + h) * seq + t];
  const float row_delta = delta[(b * heads + h) * seq + t];

  float acc[kSimplePerLane];
#pragma unroll
  for (int c = 0; c < kSimplePerLane; ++c) acc[c] = 0.f;
  for (int j0 = 0; j0 <= t; j0 += 32) {
    const int j = j0 + lane;
    float ds = 0.f;
    if (j <= t) {
      const float p = expf(dot_row(sq[warp], kb + j * kv_stride, dim) * scale - row_lse);
      const float dp = dot_row(sdo[warp], vb + j * kv_stride, dim);
      ds = p * (dp - row_delta) * scale;
    }
    const int n = min(32, t - j0 + 1);
    for (int jj = 0; jj < n; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      const __nv_bfloat16* kr = kb + (j0 + jj) * kv_stride;
#pragma unroll
      for (int c = 0; c < kSimplePerLane; ++c) {
        const int d = lane + 32 * c;
        if (d < dim) acc[c] = fmaf(dsj, __bfloat162float(kr[d]), acc[c]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kSimplePerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < dim) dq[r * dim + d] = __float2bfloat16(acc[c]);
  }
}

// dk, dv [B,S,KVH,D] (bf16): one warp per key row (b, j, kv head), summing over every query head of the group and
// every query t ≥ j, so no two warps write the same element.
__global__ void __launch_bounds__(kSimpleWarps * 32, 4)
    attn_bwd_dkdv_simple_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ dout,
                                const float* __restrict__ lse, const float* __restrict__ delta,
                                __nv_bfloat16* __restrict__ dk, __nv_bfloat16* __restrict__ dv,
                                std::int64_t kv_rows, int seq, int heads, int kv_heads, int dim, float scale) {
  __shared__ float sk[kSimpleWarps][kSimpleMaxDim];
  __shared__ float sv[kSimpleWarps][kSimpleMaxDim];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + warp;  // (b·S + j)·KVH + g
  if (r >= kv_rows) return;
  const int g = static_cast<int>(r % kv_heads);
  const int j = static_cast<int>((r / kv_heads) % seq);
  const std::int64_t b = r / (static_cast<std::int64_t>(kv_heads) * seq);
  const int group = heads / kv_heads;
  const std::int64_t q_stride = static_cast<std::int64_t>(heads) * dim;
  for (int d = lane; d < dim; d += 32) {
    sk[warp][d] = __bfloat162float(k[r * dim + d]);
    sv[warp][d] = __bfloat162float(v[r * dim + d]);
  }
  __syncwarp();

  float acc_k[kSimplePerLane], acc_v[kSimplePerLane];
#pragma unroll
  for (int c = 0; c < kSimplePerLane; ++c) acc_k[c] = acc_v[c] = 0.f;
  for (int h = g * group; h < (g + 1) * group; ++h) {
    const __nv_bfloat16* qb = q + (b * seq * heads + h) * dim;
    const __nv_bfloat16* dob = dout + (b * seq * heads + h) * dim;
    const float* lse_row = lse + (b * heads + h) * seq;
    const float* delta_row = delta + (b * heads + h) * seq;
    for (int t0 = j; t0 < seq; t0 += 32) {
      const int t = t0 + lane;
      float p = 0.f, ds = 0.f;
      if (t < seq) {
        p = expf(dot_row(sk[warp], qb + t * q_stride, dim) * scale - lse_row[t]);
        const float dp = dot_row(sv[warp], dob + t * q_stride, dim);
        ds = p * (dp - delta_row[t]) * scale;
      }
      const int n = min(32, seq - t0);
      for (int tt = 0; tt < n; ++tt) {
        const float pt = __shfl_sync(0xffffffffu, p, tt);
        const float dst = __shfl_sync(0xffffffffu, ds, tt);
        const __nv_bfloat16* qr = qb + (t0 + tt) * q_stride;
        const __nv_bfloat16* dor = dob + (t0 + tt) * q_stride;
#pragma unroll
        for (int c = 0; c < kSimplePerLane; ++c) {
          const int d = lane + 32 * c;
          if (d < dim) {
            acc_k[c] = fmaf(dst, __bfloat162float(qr[d]), acc_k[c]);
            acc_v[c] = fmaf(pt, __bfloat162float(dor[d]), acc_v[c]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kSimplePerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < dim) {
      dk[r * dim + d] = __float2bfloat16(acc_k[c]);
      dv[r * dim + d] = __float2bfloat16(acc_v[c]);
    }
  }
}

}  // namespace qwen3::cuda::attn
