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

}  // namespace qwen3::cuda
