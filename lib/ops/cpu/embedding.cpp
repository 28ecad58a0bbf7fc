// CPU reference embedding (see embedding.h). Token ids were range-checked by the dataset reader.
#include "ops/cpu/embedding.h"

#include <algorithm>

namespace qwen3::cpu {

void embedding_forward(const std::int32_t* ids, const float* table, act_t* x, std::int64_t T, std::int64_t H) {
  for (std::int64_t t = 0; t < T; ++t) std::copy_n(table + static_cast<std::int64_t>(ids[t]) * H, H, x + t * H);
}

void embedding_backward(const std::int32_t* ids, const act_t* dx, float* dtable, std::int64_t T, std::int64_t H) {
  // Sequential on purpose: repeated ids add into the same row.
  for (std::int64_t t = 0; t < T; ++t) {
    float* row = dtable + static_cast<std::int64_t>(ids[t]) * H;
    for (std::int64_t i = 0; i < H; ++i) row[i] = static_cast<float>(row[i] + dx[t * H + i]);
  }
}

}  // namespace qwen3::cpu
