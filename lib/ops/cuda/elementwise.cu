// CUDA elementwise kernels (see elementwise.h): grid-stride loops, fp32 math on bf16 storage.
#include "cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/elementwise.h"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 256;

__global__ void swiglu_forward_kernel(const bf16* __restrict__ gu, bf16* __restrict__ a, std::int64_t rows,
                                      std::int64_t I) {
  const std::int64_t n = rows * I;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / I, c = i - r * I;
    const float x = to_f(gu[r * 2 * I + c]);
    a[i] = to_bf(x / (1.0f + __expf(-x)) * to_f(gu[r * 2 * I + I + c]));
  }
}

__global__ void swiglu_backward_kernel(const bf16* __restrict__ gu, const bf16* __restrict__ da,
                                       bf16* __restrict__ dgu, std::int64_t rows, std::int64_t I) {
  const std::int64_t n = rows * I;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / I, c = i - r * I;
    const float x = to_f(gu[r * 2 * I + c]), up = to_f(gu[r * 2 * I + I + c]), d = to_f(da[i]);
    const float sig = 1.0f / (1.0f + __expf(-x));
    dgu[r * 2 * I + c] = to_bf(d * up * sig * (1.0f + x * (1.0f - sig)));
    dgu[r * 2 * I + I + c] = to_bf(d * x * sig);
  }
}

__global__ void copy_columns_kernel(const bf16* __restrict__ src, std::int64_t src_ld, bf16* __restrict__ dst,
                                    std::int64_t dst_ld, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i - r * cols;
    dst[r * dst_ld + c] = src[r * src_ld + c];
  }
}

__global__ void embedding_forward_kernel(const std::int32_t* __restrict__ ids, const bf16* __restrict__ table,
                                         bf16* __restrict__ x, std::int64_t hidden) {
  const std::int64_t t = blockIdx.x;
  const bf16* row = table + static_cast<std::int64_t>(ids[t]) * hidden;
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = row[i];
}

__global__ void embedding_backward_kernel(const std::int32_t* __restrict__ ids, const float* __restrict__ dx,
                                          float* __restrict__ dtable, std::int64_t hidden) {
  const std::int64_t t = blockIdx.x;
  float* row = dtable + static_cast<std::int64_t>(ids[t]) * hidden;
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) atomicAdd(row + i, dx[t * hidden + i]);
}

__global__ void cast_f32_bf16_kernel(const float* __restrict__ in, bf16* __restrict__ out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_bf(in[i]);
}

__global__ void cast_bf16_f32_kernel(const bf16* __restrict__ in, float* __restrict__ out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_f(in[i]);
}
}  // namespace

void swiglu_forward(const bf16* gate_up, bf16* a, std::int64_t rows, std::int64_t inter, cudaStream_t stream) {
  if (rows * inter == 0) return;
  swiglu_forward_kernel<<<grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, a, rows, inter);
  CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(const bf16* gate_up, const bf16* da, bf16* dgate_up, std::int64_t rows, std::int64_t inter,
                     cudaStream_t stream) {
  if (rows * inter == 0) return;
  swiglu_backward_kernel<<<grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, da, dgate_up, rows, inter);
  CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

void copy_columns(const bf16* src, std::int64_t src_ld, bf16* dst, std::int64_t dst_ld, std::int64_t rows,
                  std::int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return;
  copy_columns_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(src, src_ld, dst, dst_ld, rows, cols);
  CUDA_CHECK_LAUNCH("copy_columns_kernel");
}

void embedding_forward(const std::int32_t* ids, const bf16* table, bf16* x, std::int64_t tokens, std::int64_t hidden,
                       cudaStream_t stream) {
  if (tokens == 0) return;
  embedding_forward_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(ids, table, x, hidden);
  CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(const std::int32_t* ids, const float* dx, float* dtable, std::int64_t tokens, std::int64_t hidden,
                        cudaStream_t stream) {
  if (tokens == 0) return;
  embedding_backward_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(ids, dx, dtable, hidden);
  CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

void cast_f32_to_bf16(const float* in, bf16* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  cast_f32_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in, out, n);
  CUDA_CHECK_LAUNCH("cast_f32_bf16_kernel");
}

void cast_bf16_to_f32(const bf16* in, float* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  cast_bf16_f32_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in, out, n);
  CUDA_CHECK_LAUNCH("cast_bf16_f32_kernel");
}

}  // namespace qwen3::cuda
