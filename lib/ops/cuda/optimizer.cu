// CUDA AdamW, gradient norm and sums (see optimizer.h).
#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/optimizer.h"

namespace qwen3::cuda {
namespace {

struct AdamWCoefficients {
  float decay, step_size;
};

// Each operation rounded on its own (no fused multiply-add: the _rn intrinsics are never contracted), in the order of
// the host's float32 AdamW (ops/cpu/adamw.h), so the two give the same bits: a tensor whose copies are updated on the
// device by one rank and on the host by another (tied embeddings across pipeline stages) stays one tensor.
__device__ __forceinline__ void adamw_update(float& w, float& m, float& v, float g, bf16& wb, const AdamWArgs& a,
                                             const AdamWCoefficients& k) {
  const float grad = __fmul_rn(g, a.grad_scale);
  m = __fadd_rn(__fmul_rn(a.beta1, m), __fmul_rn(1.0f - a.beta1, grad));
  v = __fadd_rn(__fmul_rn(a.beta2, v), __fmul_rn(__fmul_rn(1.0f - a.beta2, grad), grad));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), a.bias_correction2_sqrt), a.eps);
  w = __fsub_rn(__fmul_rn(w, k.decay), __fdiv_rn(__fmul_rn(k.step_size, m), denom));
  wb = to_bf(w);
}

// One block per chunk; chunks whose bounds are multiples of 4 move four values per access.
__global__ void adamw_kernel(float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
                             const float* __restrict__ g, bf16* __restrict__ wb, const AdamWChunk* __restrict__ chunks,
                             AdamWArgs a) {
  const AdamWChunk c = chunks[blockIdx.x];
  const AdamWCoefficients k{c.decay ? __fsub_rn(1.0f, __fmul_rn(a.lr, a.weight_decay)) : 1.0f,
                            __fdiv_rn(a.lr, a.bias_correction1)};
  if (((c.begin | c.end) & 3) == 0) {
    for (std::int64_t i = c.begin + 4 * threadIdx.x; i < c.end; i += 4 * blockDim.x) {
      float4 wi = *reinterpret_cast<const float4*>(w + i), mi = *reinterpret_cast<const float4*>(m + i);
      float4 vi = *reinterpret_cast<const float4*>(v + i);
      const float4 gi = *reinterpret_cast<const float4*>(g + i);
      bf16 b[4];
      adamw_update(wi.x, mi.x, vi.x, gi.x, b[0], a, k);
      adamw_update(wi.y, mi.y, vi.y, gi.y, b[1], a, k);
      adamw_update(wi.z, mi.z, vi.z, gi.z, b[2], a, k);
      adamw_update(wi.w, mi.w, vi.w, gi.w, b[3], a, k);
      *reinterpret_cast<float4*>(w + i) = wi;
      *reinterpret_cast<float4*>(m + i) = mi;
      *reinterpret_cast<float4*>(v + i) = vi;
      __nv_bfloat162 lo, hi;
      lo.x = b[0]; lo.y = b[1]; hi.x = b[2]; hi.y = b[3];
      reinterpret_cast<__nv_bfloat162*>(wb + i)[0] = lo;
      reinterpret_cast<__nv_bfloat162*>(wb + i)[1] = hi;
    }
    return;
  }
  for (std::int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) adamw_update(w[i], m[i], v[i], g[i], wb[i], a, k);
}

// Sum of one double per thread over the block (blockDim.x a multiple of 32); the result is valid in thread 0.
__device__ __forceinline__ double block_sum_double(double acc) {
  __shared__ double s[32];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) s[threadIdx.x >> 5] = acc;
  __syncthreads();
  double t = 0.0;
  if (threadIdx.x < 32) {
    t = threadIdx.x < (blockDim.x >> 5) ? s[threadIdx.x] : 0.0;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  }
  return t;
}

template <bool Square>
__global__ void partial_sum_kernel(const float* __restrict__ x, std::int64_t n, double* __restrict__ partial) {
  double acc = 0.0;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  if ((n & 3) == 0 && (reinterpret_cast<std::uintptr_t>(x) & 15u) == 0) {  // four values per access
    for (std::int64_t i = first; i < n / 4; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      const double a = v.x, b = v.y, c = v.z, d = v.w;
      acc += Square ? a * a + b * b + c * c + d * d : a + b + c + d;
    }
  } else {
    for (std::int64_t i = first; i < n; i += stride) {
      const double v = x[i];
      acc += Square ? v * v : v;
    }
  }
  const double total = block_sum_double(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void finish_sum_kernel(const double* __restrict__ partial, int n, double* __restrict__ out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  const double total = block_sum_double(acc);
  if (threadIdx.x == 0) out[0] = total;
}

template <bool Square>
void reduce(const float* x, std::int64_t n, double* partial, double* out, cudaStream_t stream) {
  const unsigned blocks = std::min<unsigned>(kNormBlocks, grid_for(n, 256));
  partial_sum_kernel<Square><<<blocks, 256, 0, stream>>>(x, n, partial);
  CUDA_CHECK_LAUNCH("partial_sum_kernel");
  finish_sum_kernel<<<1, 1024, 0, stream>>>(partial, static_cast<int>(blocks), out);
  CUDA_CHECK_LAUNCH("finish_sum_kernel");
}

}  // namespace

void adamw_step(float* w, float* m, float* v, const float* g, bf16* w_bf16, const AdamWChunk* chunks, int n_chunks,
                const AdamWArgs& a, cudaStream_t stream) {
  if (n_chunks == 0) return;
  adamw_kernel<<<static_cast<unsigned>(n_chunks), 256, 0, stream>>>(w, m, v, g, w_bf16, chunks, a);
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

void sum_squares(const float* x, std::int64_t n, double* partial, double* out, cudaStream_t stream) {
  reduce<true>(x, n, partial, out, stream);
}
void sum(const float* x, std::int64_t n, double* partial, double* out, cudaStream_t stream) {
  reduce<false>(x, n, partial, out, stream);
}

}  // namespace qwen3::cuda
