// Device helpers shared by the CUDA kernel families: bf16 conversion, warp and block reductions, grid sizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu/check.h"

namespace qwen3::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 to_bf(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (kMax false) or maximum (kMax true) over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : (kMax ? -INFINITY : 0.0f);
    s = kMax ? warp_max(s) : warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  const float r = total;
  __syncthreads();  // partial/total may be reused by the next call
  return r;
}
__device__ __forceinline__ float block_sum(float v) { return block_reduce<false>(v); }
__device__ __forceinline__ float block_max(float v) { return block_reduce<true>(v); }

// Eight bf16 values moved as one 16-byte access (callers check 16-byte alignment: index multiple of 8).
struct alignas(16) Bf16x8 {
  __nv_bfloat162 h[4];
};
__device__ __forceinline__ void widen8(const Bf16x8& b, float (&v)[8]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(b.h[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const bf16* p, float (&v)[8]) { widen8(*reinterpret_cast<const Bf16x8*>(p), v); }
__device__ __forceinline__ void store8(bf16* p, const float (&v)[8]) {
  Bf16x8 b;
#pragma unroll
  for (int j = 0; j < 4; ++j) b.h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<Bf16x8*>(p) = b;
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
// ---- a tensor's amax for FP8 current scaling (ops/cuda/fp8_cast.h), taken by the kernel that writes the tensor ----
// |x| of bf16 bits as an ordered integer: NaN above +inf above every finite value.
__device__ __forceinline__ unsigned magnitude_bits(bf16 x) { return __bfloat16_as_ushort(x) & 0x7fffu; }
// The larger magnitude of the two bf16 values in one 32-bit word.
__device__ __forceinline__ unsigned magnitude_bits2(unsigned w) { return max(w & 0x7fffu, (w >> 16) & 0x7fffu); }
// The largest magnitude of 8 values as store8 writes them (rounded to bf16).
__device__ __forceinline__ unsigned magnitude_bits8(const float (&v)[8]) {
  unsigned m = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) m = max(m, magnitude_bits(to_bf(v[j])));
  return m;
}
// Folds each thread's m (bf16 magnitude bits) into *amax_bits, the bits of an fp32 amax zeroed before the kernel ran:
// the block's maximum, then one atomic (and one into *also, a running amax, when given). Every thread of the block
// calls it (at most 1,024 threads, 1-D or 2-D).
__device__ __forceinline__ void publish_amax(unsigned m, unsigned* amax_bits, unsigned* also = nullptr) {
  __shared__ unsigned warp_part[32];
  const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((t & 31u) == 0) warp_part[t >> 5] = m;
  __syncthreads();
  if (t != 0) return;
  for (unsigned w = 1; w < (blockDim.x * blockDim.y + 31) / 32; ++w) m = max(m, warp_part[w]);
  if (m) atomicMax(amax_bits, m << 16);  // bf16 bits to fp32 bits
  if (m && also) atomicMax(also, m << 16);
}

// The amax a producing kernel folds its output into (publish_amax), zeroed first on the stream; null when none is asked.
inline unsigned* zeroed_amax(float* amax, cudaStream_t stream) {
  if (amax) CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  return reinterpret_cast<unsigned*>(amax);
}

// True when every pointer is 16-byte aligned (vector paths also need their row lengths to be multiples of 8).
inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

inline unsigned grid_for(std::int64_t n, int threads, std::int64_t max_blocks = 65535LL * 16) {
  std::int64_t b = (n + threads - 1) / threads;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

}  // namespace qwen3::cuda
