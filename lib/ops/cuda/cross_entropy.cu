// CUDA fused cross-entropy (see cross_entropy.h): one block per row, online max/sum in one pass, then the gradient.
#include "cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cross_entropy.h"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 512;

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
  // Online log-sum-exp per thread, then combined over the block.
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
  const float gm = block_max(m);
  const float gz = block_sum(m == -INFINITY ? 0.0f : z * __expf(m - gm));
  const float lse = gm + __logf(gz);
  const float target = to_f(l[label]);
  __syncthreads();  // everyone has read l[label] before it is overwritten
  for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float p = __expf(to_f(l[i]) - lse);
    l[i] = to_bf((p - (i == label ? 1.0f : 0.0f)) * grad_scale);
  }
  if (threadIdx.x == 0) row_loss[row] = lse - target;
}
}  // namespace

void cross_entropy_forward_backward(bf16* logits, const std::int32_t* labels, float* row_loss, std::int64_t rows,
                                    std::int64_t vocab, float grad_scale, cudaStream_t stream) {
  if (rows == 0) return;
  cross_entropy_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, labels, row_loss, vocab, grad_scale);
  CUDA_CHECK_LAUNCH("cross_entropy_kernel");
}

}  // namespace qwen3::cuda
