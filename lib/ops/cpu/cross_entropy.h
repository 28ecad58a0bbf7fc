// CPU reference (float64 activations, float32 parameters; types.h): softmax cross-entropy over the vocabulary with ignored positions, fused forward+backward.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

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

// Vocabulary-parallel form (tensor parallelism): this rank holds logits[T, V_local] of vocabulary entries
// [v0, v0 + V_local); labels are global ids. reduce_max / reduce_sum combine a [T] array in place over the ranks that
// share the vocabulary; with no-op reductions (one rank, v0 = 0) it computes the same as cross_entropy.
using RowReduce = std::function<void(double* rows, std::size_t count)>;
LossSum cross_entropy_vocab_parallel(const act_t* logits, const std::int32_t* labels, act_t* dlogits,
                                     std::int64_t tokens, std::int64_t vocab_local, std::int64_t v0, double grad_scale,
                                     const RowReduce& reduce_max, const RowReduce& reduce_sum);

}  // namespace qwen3::cpu
