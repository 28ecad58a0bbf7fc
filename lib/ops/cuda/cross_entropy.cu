// CUDA fused cross-entropy (see cross_entropy.h): one block per row, online max/sum in one pass, then the gradient.
#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cross_entropy.h"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 512;

// Over one row of V logits, by the whole block (online: one pass): gm = max, gz = Σ exp(x − gm).
__device__ __forceinline__ void row_max_and_sum(const bf16* l, std::int64_t V, float& gm, float& gz) {
  float m = -INFINITY, z = 0.0f;
  for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float x = to_f(l[i]);
    if (x > m) {
      z = z * __expf(m - x) + 1.0f;
      m = x;
    } else {
      z += __expf(x - m);
    }
  }
  gm = block_max(m);
  gz = block_sum(m == -INFINITY ? 0.0f : z * __expf(m - gm));
}

__global__ void cross_entropy_kernel(bf16* __restrict__ logits, const std::int32_t* __restrict__ labels,
                                     float* __restrict__ row_loss, std::int64_t V, float grad_scale) {
  const std::int64_t row = blockIdx.x;
  bf16* l = logits + row * V;
  const std::int32_t label = labels[row];
  if (label < 0) {  // ignored position
    for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = to_bf(0.0f);
    if (threadIdx.x == 0) row_loss[row] = 0.0f;
    return;
  }
  float gm, gz;
  row_max_and_sum(l, V, gm, gz);
  const float lse = gm + __logf(gz);
  const float target = to_f(l[label]);
  __syncthreads();  // everyone has read l[label] before it is overwritten
  for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float p = __expf(to_f(l[i]) - lse);
    l[i] = to_bf((p - (i == label ? 1.0f : 0.0f)) * grad_scale);
  }
  if (threadIdx.x == 0) row_loss[row] = lse - target;
}
// The same with 16-byte accesses (V a multiple of 8, aligned rows): pass 1 keeps a running max and sum per thread,
// taking the max of each 8 values first so that only one rescale happens per vector.
__global__ void cross_entropy_vec_kernel(bf16* __restrict__ logits, const std::int32_t* __restrict__ labels,
                                         float* __restrict__ row_loss, std::int64_t V, float grad_scale) {
  const std::int64_t row = blockIdx.x;
  bf16* l = logits + row * V;
  const std::int32_t label = labels[row];
  const std::int64_t V8 = V / 8;
  if (label < 0) {
    const float zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (std::int64_t v = threadIdx.x; v < V8; v += blockDim.x) store8(l + 8 * v, zero);
    if (threadIdx.x == 0) row_loss[row] = 0.0f;
    return;
  }
  float m = -INFINITY, z = 0.0f;
  for (std::int64_t v = threadIdx.x; v < V8; v += blockDim.x) {
    float x[8];
    load8(l + 8 * v, x);
    float mv = x[0];
#pragma unroll
    for (int j = 1; j < 8; ++j) mv = fmaxf(mv, x[j]);
    if (mv > m) {
      z *= __expf(m - mv);
      m = mv;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) z += __expf(x[j] - m);
  }
  const float gm = block_max(m);
  const float gz = block_sum(m == -INFINITY ? 0.0f : z * __expf(m - gm));
  const float lse = gm + __logf(gz);
  const float target = to_f(l[label]);
  __syncthreads();  // everyone has read l[label] before it is overwritten
  for (std::int64_t v = threadIdx.x; v < V8; v += blockDim.x) {
    float x[8];
    load8(l + 8 * v, x);
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = (__expf(x[j] - lse) - (8 * v + j == label ? 1.0f : 0.0f)) * grad_scale;
    store8(l + 8 * v, x);
  }
  if (threadIdx.x == 0) row_loss[row] = lse - target;
}
__global__ void vp_stats_kernel(const bf16* __restrict__ logits, const std::int32_t* __restrict__ labels,
                                float* __restrict__ m_out, float* __restrict__ z_out, float* __restrict__ t_out,
                                std::int64_t V, std::int64_t v0) {
  const std::int64_t row = blockIdx.x;
  const bf16* l = logits + row * V;
  float gm, gz;
  row_max_and_sum(l, V, gm, gz);
  if (threadIdx.x == 0) {
    const std::int64_t local = static_cast<std::int64_t>(labels[row]) - v0;
    m_out[row] = gm;
    z_out[row] = gz;
    t_out[row] = labels[row] >= 0 && local >= 0 && local < V ? to_f(l[local]) : 0.0f;
  }
}

__global__ void vp_rescale_kernel(const float* __restrict__ m, const float* __restrict__ mg, float* __restrict__ z,
                                  std::int64_t rows) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < rows) z[i] *= __expf(m[i] - mg[i]);
}

__global__ void vp_backward_kernel(bf16* __restrict__ logits, const std::int32_t* __restrict__ labels,
                                   const float* __restrict__ mg, const float* __restrict__ z,
                                   const float* __restrict__ target, float* __restrict__ row_loss, std::int64_t V,
                                   std::int64_t v0, float grad_scale) {
  const std::int64_t row = blockIdx.x;
  bf16* l = logits + row * V;
  const std::int32_t label = labels[row];
  if (label < 0) {
    for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = to_bf(0.0f);
    if (threadIdx.x == 0) row_loss[row] = 0.0f;
    return;
  }
  const float lse = mg[row] + __logf(z[row]);
  const std::int64_t local = static_cast<std::int64_t>(label) - v0;
  for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x)
    l[i] = to_bf((__expf(to_f(l[i]) - lse) - (i == local ? 1.0f : 0.0f)) * grad_scale);
  if (threadIdx.x == 0) row_loss[row] = lse - target[row];
}
}  // namespace

void cross_entropy_vp_stats(const bf16* logits, const std::int32_t* labels, float* m, float* z, float* target,
                            std::int64_t rows, std::int64_t V, std::int64_t v0, cudaStream_t stream) {
  if (rows == 0) return;
  vp_stats_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, labels, m, z, target, V, v0);
  CUDA_CHECK_LAUNCH("vp_stats_kernel");
}

void cross_entropy_vp_rescale(const float* m, const float* m_global, float* z, std::int64_t rows, cudaStream_t stream) {
  if (rows == 0) return;
  vp_rescale_kernel<<<grid_for(rows, 256), 256, 0, stream>>>(m, m_global, z, rows);
  CUDA_CHECK_LAUNCH("vp_rescale_kernel");
}

void cross_entropy_vp_backward(bf16* logits, const std::int32_t* labels, const float* m_global, const float* z,
                               const float* target, float* row_loss, std::int64_t rows, std::int64_t V, std::int64_t v0,
                               float grad_scale, cudaStream_t stream) {
  if (rows == 0) return;
  vp_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, labels, m_global, z, target, row_loss,
                                                                          V, v0, grad_scale);
  CUDA_CHECK_LAUNCH("vp_backward_kernel");
}

void cross_entropy_forward_backward(bf16* logits, const std::int32_t* labels, float* row_loss, std::int64_t rows,
                                    std::int64_t vocab, float grad_scale, cudaStream_t stream) {
  if (rows == 0) return;
  if (vocab % 8 == 0 && aligned16(logits)) {
    cross_entropy_vec_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, labels, row_loss, vocab, grad_scale);
    CUDA_CHECK_LAUNCH("cross_entropy_vec_kernel");
    return;
  }
  cross_entropy_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, labels, row_loss, vocab, grad_scale);
  CUDA_CHECK_LAUNCH("cross_entropy_kernel");
}

}  // namespace qwen3::cuda
