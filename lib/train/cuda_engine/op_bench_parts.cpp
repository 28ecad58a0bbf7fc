// What qwen3-calibrate's measurements share (see op_bench_parts.h): filling operands.
#include "train/cuda_engine/op_bench_parts.h"

#include <algorithm>

#include "ops/cuda/elementwise.h"
#include "ops/cuda/init.h"

namespace qwen3::cuda {

// Normal values (std) in a float buffer, then as bf16 when asked: operands like a model's, not zeros (which run
// faster on these GPUs than real data).
void fill_f32(float* p, std::int64_t n, double std, cudaStream_t s) { init_normal_block(p, 1, n, 0, 0, n, 12345, std, s); }
void fill_bf16(bf16* p, std::int64_t n, double std, cudaStream_t s) {
  constexpr std::int64_t kPiece = 1ll << 26;
  Buffer tmp(static_cast<std::size_t>(std::min(n, kPiece)) * sizeof(float));
  for (std::int64_t b = 0; b < n; b += kPiece) {
    const std::int64_t k = std::min(kPiece, n - b);
    init_normal_block(tmp.as<float>(), 1, k, 0, b, n, 777, std, s);
    cast_f32_to_bf16(tmp.as<float>(), p + b, k, s);
  }
}

// Token ids in [0, vocab) (a fixed pattern that touches many rows).
void fill_ids(std::int32_t* p, std::int64_t n, std::int64_t vocab, cudaStream_t s) {
  std::vector<std::int32_t> h(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) h[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 7919 + 13) % vocab);
  CUDA_CHECK(cudaMemcpyAsync(p, h.data(), h.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace qwen3::cuda
