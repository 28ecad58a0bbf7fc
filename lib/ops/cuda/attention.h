// CUDA fused causal grouped-query attention, bf16 in/out with fp32 softmax statistics, forward and backward.
// Memory grows linearly with the sequence: no [seq × seq] matrix is ever written to device memory.
// Reference: ops/cpu/attention.h (same layouts, same scaling 1/sqrt(head_dim), query head h reads kv head h/(heads/kv_heads)).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qwen3::cuda {

struct AttentionShape {
  std::int64_t batch, seq, heads, kv_heads, head_dim;
};

// q[B, S, heads, D], k/v[B, S, kv_heads, D] → out[B, S, heads, D]; lse[B, heads, S] (natural-log sum-exp of the
// scaled scores of each query row) is saved for the backward.
void attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out,
                       float* lse, const AttentionShape& s, cudaStream_t stream);

// Bytes of fp32 scratch the backward needs (delta = rowsum(dout·out), and any accumulation buffers).
std::size_t attention_backward_workspace_bytes(const AttentionShape& s);

// Overwrites dq, dk, dv (forward layouts). workspace: attention_backward_workspace_bytes(s) bytes of device memory.
void attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* dout, __nv_bfloat16* dq,
                        __nv_bfloat16* dk, __nv_bfloat16* dv, void* workspace, const AttentionShape& s,
                        cudaStream_t stream);

}  // namespace qwen3::cuda
