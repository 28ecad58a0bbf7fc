// CUDA AdamW, gradient norm and sums (see optimizer.h).
#include "cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/optimizer.h"

namespace qwen3::cuda {
namespace {

__global__ void adamw_kernel(float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
                             const float* __restrict__ g, bf16* __restrict__ wb, const AdamWChunk* __restrict__ chunks,
                             AdamWArgs a) {
  const AdamWChunk c = chunks[blockIdx.x];
  const float decay = c.decay ? 1.0f - a.lr * a.weight_decay : 1.0f;
  const float step_size = a.lr / a.bias_correction1;
  for (std::int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    const float grad = g[i] * a.grad_scale;
    const float mi = a.beta1 * m[i] + (1.0f - a.beta1) * grad;
    const float vi = a.beta2 * v[i] + (1.0f - a.beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float wi = w[i] * decay - step_size * mi / (sqrtf(vi) / a.bias_correction2_sqrt + a.eps);
    w[i] = wi;
    wb[i] = to_bf(wi);
  }
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
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += Square ? v * v : v;
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

std::vector<AdamWChunk> make_adamw_chunks(const std::vector<AdamWChunk>& tensors) {
  std::vector<AdamWChunk> chunks;
  for (const auto& t : tensors)
    for (std::int64_t b = t.begin; b < t.end; b += kAdamWChunkElements)
      chunks.push_back({b, std::min(t.end, b + kAdamWChunkElements), t.decay});
  return chunks;
}

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
