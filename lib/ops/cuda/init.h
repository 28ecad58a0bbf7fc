// CUDA weight initialisation: a block of a tensor's deterministic normal values computed on the device, equal to
// the host's (reference: model/init.h init_tensor_block; the formula itself is model/init_stream.h, shared).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

// out[r·cols + c] = element (row0 + r)·width + col0 + c of the tensor whose stream starts at `start`, ~ N(0, std²),
// for r < rows, c < cols (a tensor-parallel shard: its rows or its columns).
void init_normal_block(float* out, std::int64_t rows, std::int64_t cols, std::int64_t row0, std::int64_t col0,
                       std::int64_t width, std::uint64_t start, double std, cudaStream_t stream);
// out[0:n] = value (norm weights start at 1).
void fill(float* out, std::int64_t n, float value, cudaStream_t stream);

}  // namespace qwen3::cuda
