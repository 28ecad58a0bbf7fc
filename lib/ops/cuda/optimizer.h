// CUDA optimizer family: multi-tensor AdamW over the flat fp32 master weights (also refreshing the bf16 compute
// copy), the global gradient norm, and a device sum (reference: ops/cpu/adamw.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "ops/adamw_chunks.h"

namespace qwen3::cuda {

using qwen3::AdamWChunk;  // ops/adamw_chunks.h: the chunk list, shared with the buffer table
using qwen3::kAdamWChunkElements;
using qwen3::kNormBlocks;
using qwen3::make_adamw_chunks;

struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1, bias_correction2_sqrt;  // 1 − β1ᵗ, sqrt(1 − β2ᵗ)
  float grad_scale;                               // clipping factor applied to every gradient first
};

// chunks: device array of n_chunks AdamWChunk (each at most kAdamWChunkElements long).
void adamw_step(float* w, float* m, float* v, const float* g, __nv_bfloat16* w_bf16, const AdamWChunk* chunks,
                int n_chunks, const AdamWArgs& a, cudaStream_t stream);

// out[0] (fp64) = Σ x² over n fp32 values. partial: device scratch of at least kNormBlocks doubles.
void sum_squares(const float* x, std::int64_t n, double* partial, double* out, cudaStream_t stream);
// out[0] (fp64) = Σ x over n fp32 values.
void sum(const float* x, std::int64_t n, double* partial, double* out, cudaStream_t stream);

}  // namespace qwen3::cuda
