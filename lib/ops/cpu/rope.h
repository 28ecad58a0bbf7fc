// CPU reference (float64 activations, float32 parameters; types.h): rotary position embedding, rotate-half form (element i pairs with i + head_dim/2).
#pragma once
#include <cstdint>
#include <vector>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

// cos/sin tables [seq_len, head_dim/2], computed as Hugging Face does: inv_freq = theta^(-2i/head_dim) and
// the angle position·inv_freq in float32, so long sequences see the same rounding as the reference.
struct RopeTable {
  std::int64_t seq_len = 0, half = 0;
  std::vector<float> cos, sin;  // [seq_len, half]
};
RopeTable rope_table(std::int64_t seq_len, std::int64_t head_dim, double theta, std::int64_t position_offset = 0);

// In place on x[batch, seq, heads, head_dim]: (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin).
void rope_forward(act_t* x, const RopeTable& t, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
// In place on dx: the transposed rotation, (d1, d2) → (d1·cos + d2·sin, d2·cos − d1·sin).
void rope_backward(act_t* dx, const RopeTable& t, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim);

}  // namespace qwen3::cpu
