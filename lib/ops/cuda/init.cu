// CUDA weight initialisation (see init.h): one thread per element, grid-stride, double-precision Box–Muller.
#include "gpu/check.h"
#include "model/init_stream.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/init.h"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 256;

__global__ void init_normal_block_kernel(float* __restrict__ out, std::int64_t rows, std::int64_t cols,
                                         std::int64_t row0, std::int64_t col0, std::int64_t width, std::uint64_t start,
                                         double sd) {
  const std::int64_t n = rows * cols;
  for (std::int64_t k = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = k / cols, c = k - r * cols;
    out[k] = init_normal_element(start, (row0 + r) * width + col0 + c, sd);
  }
}

__global__ void fill_kernel(float* __restrict__ out, std::int64_t n, float value) {
  for (std::int64_t k = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[k] = value;
}
}  // namespace

void init_normal_block(float* out, std::int64_t rows, std::int64_t cols, std::int64_t row0, std::int64_t col0,
                       std::int64_t width, std::uint64_t start, double std, cudaStream_t stream) {
  if (rows * cols == 0) return;
  init_normal_block_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(out, rows, cols, row0, col0, width,
                                                                                     start, std);
  CUDA_CHECK_LAUNCH("init_normal_block_kernel");
}

void fill(float* out, std::int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  fill_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, n, value);
  CUDA_CHECK_LAUNCH("fill_kernel");
}

}  // namespace qwen3::cuda
