// CUDA cross-entropy on a chunk of token rows, fused forward+backward (reference: ops/cpu/cross_entropy.h).
// The caller feeds token chunks so the [tokens × vocab] logits never exist for the whole micro-batch at once.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

// logits[rows, V] bf16 is overwritten by dlogits = (softmax − onehot)·grad_scale (zero rows where label is −100);
// row_loss[rows] fp32 receives −log softmax[label] (0 for ignored rows).
void cross_entropy_forward_backward(__nv_bfloat16* logits, const std::int32_t* labels, float* row_loss, std::int64_t rows,
                                    std::int64_t vocab, float grad_scale, cudaStream_t stream);

// Vocabulary-parallel form (tensor parallelism), in three steps around the caller's all-reduces over the ranks that
// share the vocabulary. This rank holds logits[rows, V_local] of vocabulary entries [v0, v0 + V_local).
// 1. Per row: m = local max, z = Σ exp(x − m), target = x[label − v0] when the label is in range, else 0.
void cross_entropy_vp_stats(const __nv_bfloat16* logits, const std::int32_t* labels, float* m, float* z, float* target,
                            std::int64_t rows, std::int64_t vocab_local, std::int64_t v0, cudaStream_t stream);
// 2. After m_global = max over ranks of m: z ← z·exp(m − m_global) (then the caller sums z and target over ranks).
void cross_entropy_vp_rescale(const float* m, const float* m_global, float* z, std::int64_t rows, cudaStream_t stream);
// 3. logits ← (exp(x − m_global)/z − onehot)·grad_scale; row_loss = m_global + log z − target (0 for ignored rows).
void cross_entropy_vp_backward(__nv_bfloat16* logits, const std::int32_t* labels, const float* m_global, const float* z,
                               const float* target, float* row_loss, std::int64_t rows, std::int64_t vocab_local,
                               std::int64_t v0, float grad_scale, cudaStream_t stream);

}  // namespace qwen3::cuda
