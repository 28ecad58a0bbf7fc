// CPU reference (float64 activations, float32 parameters; types.h): softmax cross-entropy over the vocabulary with ignored positions, fused forward+backward.
#pragma once
#include <cstdint>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

// Labels equal to kIgnoreLabel contribute neither loss nor gradient (the last position of a document).
inline constexpr std::int32_t kIgnoreLabel = -100;

struct LossSum {
  double sum = 0;          // Σ over counted positions of −log softmax(logits)[label]
  std::int64_t count = 0;  // positions counted
};

// logits[T, V], labels[T]. If dlogits is non-null writes dlogits[T, V] = (softmax − onehot)·grad_scale
// (zero rows for ignored positions). dlogits may alias logits.
LossSum cross_entropy(const act_t* logits, const std::int32_t* labels, act_t* dlogits, std::int64_t tokens,
                      std::int64_t vocab, double grad_scale);

}  // namespace qwen3::cpu
