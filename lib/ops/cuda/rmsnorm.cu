// CUDA RMSNorm kernels (see rmsnorm.h): one block per row; the weight gradient is reduced over a block's rows first.
#include "cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/rmsnorm.h"

namespace qwen3::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlockBwd = 16;

__global__ void rmsnorm_forward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                       float* __restrict__ rstd, std::int64_t dim, float eps) {
  const std::int64_t row = blockIdx.x;
  const bf16* xr = x + row * dim;
  float ss = 0.0f;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_f(xr[i]);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float s = rsqrtf(ss / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) rstd[row] = s;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[row * dim + i] = to_bf(to_f(xr[i]) * s * to_f(w[i]));
}

// Each block handles kRowsPerBlockBwd rows; each thread owns columns i ≡ threadIdx.x (mod blockDim) for dw.
__global__ void rmsnorm_backward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                        const float* __restrict__ rstd, const float* __restrict__ dy,
                                        float* __restrict__ dx, float* __restrict__ dw, std::int64_t rows,
                                        std::int64_t dim, bool accumulate) {
  extern __shared__ float dw_acc[];  // [dim]
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) dw_acc[i] = 0.0f;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlockBwd;
  for (std::int64_t row = row0; row < row0 + kRowsPerBlockBwd && row < rows; ++row) {
    const bf16* xr = x + row * dim;
    const float* dyr = dy + row * dim;
    const float s = rstd[row];
    float dot = 0.0f;
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float xv = to_f(xr[i]), g = dyr[i];
      dot += g * to_f(w[i]) * xv;
      dw_acc[i] += g * xv * s;
    }
    dot = block_sum(dot);
    const float k = s * s * s * dot / static_cast<float>(dim);
    float* dxr = dx + row * dim;
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = s * dyr[i] * to_f(w[i]) - to_f(xr[i]) * k;
      dxr[i] = accumulate ? dxr[i] + v : v;
    }
  }
  __syncthreads();
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) atomicAdd(dw + i, dw_acc[i]);
}

}  // namespace

void rmsnorm_forward(const bf16* x, const bf16* w, bf16* y, float* rstd, std::int64_t rows, std::int64_t dim, float eps,
                     cudaStream_t stream) {
  if (rows == 0) return;
  rmsnorm_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, y, rstd, dim, eps);
  CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const bf16* x, const bf16* w, const float* rstd, const float* dy, float* dx, float* dw,
                      std::int64_t rows, std::int64_t dim, bool accumulate, cudaStream_t stream) {
  if (rows == 0) return;
  const auto blocks = static_cast<unsigned>((rows + kRowsPerBlockBwd - 1) / kRowsPerBlockBwd);
  const std::size_t smem = static_cast<std::size_t>(dim) * sizeof(float);
  if (smem > 48 * 1024) {
    static bool raised = false;  // once per process: allow more than 48 KB of dynamic shared memory
    if (!raised) {
      CUDA_CHECK(cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024));
      raised = true;
    }
  }
  rmsnorm_backward_kernel<<<blocks, kThreads, smem, stream>>>(x, w, rstd, dy, dx, dw, rows, dim, accumulate);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_kernel");
}

}  // namespace qwen3::cuda
