// CPU reference RoPE (see rope.h).
#include "ops/cpu/rope.h"

#include <cmath>

namespace qwen3::cpu {

RopeTable rope_table(std::int64_t seq_len, std::int64_t head_dim, double theta, std::int64_t position_offset) {
  RopeTable t;
  t.seq_len = seq_len;
  t.half = head_dim / 2;
  t.cos.resize(static_cast<std::size_t>(seq_len * t.half));
  t.sin.resize(t.cos.size());
  for (std::int64_t i = 0; i < t.half; ++i) {
    // float32 throughout, as transformers' default rope init and forward compute it.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float inv_freq = 1.0f / std::pow(static_cast<float>(theta), exponent);
    for (std::int64_t p = 0; p < seq_len; ++p) {
      const float angle = static_cast<float>(p + position_offset) * inv_freq;
      t.cos[p * t.half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      t.sin[p * t.half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return t;
}

namespace {
template <int Sign>  // +1 forward rotation, −1 its transpose
void rotate(act_t* x, const RopeTable& t, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t half = head_dim / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t s = 0; s < seq; ++s)
      for (std::int64_t h = 0; h < heads; ++h) {
        act_t* v = x + ((b * seq + s) * heads + h) * head_dim;
        const float* c = t.cos.data() + s * half;
        const float* sn = t.sin.data() + s * half;
        for (std::int64_t i = 0; i < half; ++i) {
          const act_t x1 = v[i], x2 = v[i + half];
          v[i] = x1 * c[i] - Sign * x2 * sn[i];
          v[i + half] = x2 * c[i] + Sign * x1 * sn[i];
        }
      }
}
}  // namespace

void rope_forward(act_t* x, const RopeTable& t, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  rotate<1>(x, t, batch, seq, heads, head_dim);
}
void rope_backward(act_t* dx, const RopeTable& t, std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  rotate<-1>(dx, t, batch, seq, heads, head_dim);
}

}  // namespace qwen3::cpu
