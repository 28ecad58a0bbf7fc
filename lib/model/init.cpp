// Deterministic initialisation (see init.h): splitmix64 + Box-Muller (model/init_stream.h), so the result depends
// neither on the C++ library nor on the backend.
#include "model/init.h"

#include "model/init_stream.h"

namespace qwen3 {

void init_tensor(const ParamTable& table, std::size_t p, std::uint64_t seed, double std, float* dst) {
  const auto& e = table.entries()[p];
  const std::int64_t rows = e.shape.size() < 2 ? 1 : e.shape[0];
  init_tensor_block(table, p, seed, std, 0, rows, 0, e.numel / rows, dst);
}

void init_tensor_block(const ParamTable& table, std::size_t p, std::uint64_t seed, double std, std::int64_t row0,
                       std::int64_t rows, std::int64_t col0, std::int64_t cols, float* dst) {
  const auto& e = table.entries()[p];
  if (e.shape.size() < 2) {
    for (std::int64_t i = 0; i < rows * cols; ++i) dst[i] = 1.0f;
    return;
  }
  const std::int64_t width = e.numel / e.shape[0];
  const std::uint64_t start = init_stream_start(seed, p);
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) dst[r * cols + c] = init_normal_element(start, (row0 + r) * width + col0 + c, std);
}

void init_weights(const ParamTable& table, std::uint64_t seed, double std, float* w) {
  for (std::size_t p = 0; p < table.entries().size(); ++p) init_tensor(table, p, seed, std, w + table.entries()[p].offset);
}

}  // namespace qwen3
