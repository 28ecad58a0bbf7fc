// CUDA elementwise families: SwiGLU forward/backward, embedding gather/scatter, casts
// (references: ops/cpu/swiglu.h, ops/cpu/embedding.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

// a[n] = silu(gate)·up
void swiglu_forward(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* a, std::int64_t n, cudaStream_t stream);
// dgate, dup from da (bf16 everywhere, fp32 math)
void swiglu_backward(const __nv_bfloat16* gate, const __nv_bfloat16* up, const __nv_bfloat16* da, __nv_bfloat16* dgate,
                     __nv_bfloat16* dup, std::int64_t n, cudaStream_t stream);

// x[T, H] = table[ids[t], :]  (table: the bf16 compute copy)
void embedding_forward(const std::int32_t* ids, const __nv_bfloat16* table, __nv_bfloat16* x, std::int64_t tokens,
                       std::int64_t hidden, cudaStream_t stream);
// dtable[ids[t], :] += dx[t, :]  (fp32 gradients; repeated ids are added atomically)
void embedding_backward(const std::int32_t* ids, const float* dx, float* dtable, std::int64_t tokens, std::int64_t hidden,
                        cudaStream_t stream);

void cast_f32_to_bf16(const float* in, __nv_bfloat16* out, std::int64_t n, cudaStream_t stream);
void cast_bf16_to_f32(const __nv_bfloat16* in, float* out, std::int64_t n, cudaStream_t stream);

}  // namespace qwen3::cuda
