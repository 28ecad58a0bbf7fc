// Deterministic weight initialisation, identical on every backend and platform (own normal sampler, seeded per tensor).
#pragma once
#include <cstdint>
#include <vector>

#include "model/param_table.h"

namespace qwen3 {

// Fills weights[total_elements]: 2-D tensors ~ N(0, std²) (Hugging Face's initializer_range, 0.02), norms = 1.
void init_weights(const ParamTable& table, std::uint64_t seed, double std, float* weights);
// One tensor of the full table (index into entries()), into out[numel]: the same values init_weights gives it.
void init_tensor(const ParamTable& table, std::size_t index, std::uint64_t seed, double std, float* out);
// Elements [row0, row0 + rows) × [col0, col0 + cols) of a tensor of the full table (a 1-D tensor: elements
// [col0, col0 + cols), rows = 1), row-major into out: the values init_tensor gives them, computing only those (a
// tensor-parallel shard without the whole tensor).
void init_tensor_block(const ParamTable& table, std::size_t index, std::uint64_t seed, double std, std::int64_t row0,
                       std::int64_t rows, std::int64_t col0, std::int64_t cols, float* out);

}  // namespace qwen3
