// CUDA elementwise families: SwiGLU forward/backward, embedding gather/scatter, casts
// (references: ops/cpu/swiglu.h, ops/cpu/embedding.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

// gate_up[rows, 2·I] is the fused gate|up projection output (gate in columns [0, I), up in [I, 2I)).
// a[rows, I] = silu(gate)·up
void swiglu_forward(const __nv_bfloat16* gate_up, __nv_bfloat16* a, std::int64_t rows, std::int64_t inter,
                    cudaStream_t stream);
// dgate_up[rows, 2·I] (same layout) from da[rows, I]; bf16 everywhere, fp32 math. When a is non-null the same pass
// also rewrites a[rows, I] = silu(gate)·up (the forward product, recomputed instead of stored).
void swiglu_backward(const __nv_bfloat16* gate_up, const __nv_bfloat16* da, __nv_bfloat16* dgate_up, std::int64_t rows,
                     std::int64_t inter, cudaStream_t stream, __nv_bfloat16* a = nullptr);

// dst[r, 0:cols] = src[r, 0:cols] for rows r, with leading dimensions src_ld and dst_ld (a column slice copy).
void copy_columns(const __nv_bfloat16* src, std::int64_t src_ld, __nv_bfloat16* dst, std::int64_t dst_ld,
                  std::int64_t rows, std::int64_t cols, cudaStream_t stream);

// x[T, H] = table[ids[t], :]  (table: the bf16 compute copy)
void embedding_forward(const std::int32_t* ids, const __nv_bfloat16* table, __nv_bfloat16* x, std::int64_t tokens,
                       std::int64_t hidden, cudaStream_t stream);
// dtable[ids[t], :] += dx[t, :]  (fp32 gradients; repeated ids are added atomically)
void embedding_backward(const std::int32_t* ids, const float* dx, float* dtable, std::int64_t tokens, std::int64_t hidden,
                        cudaStream_t stream);

void cast_f32_to_bf16(const float* in, __nv_bfloat16* out, std::int64_t n, cudaStream_t stream);
void cast_bf16_to_f32(const __nv_bfloat16* in, float* out, std::int64_t n, cudaStream_t stream);

}  // namespace qwen3::cuda
