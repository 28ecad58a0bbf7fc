// Causal grouped-query attention, forward and backward, through cuDNN's fused flash-attention engines. The graphs
// are spelled out with the cuDNN backend (graph) C API, operation by operation (matmul, scale, causal mask, softmax
// with its log-sum-exp, matmul; and the matching backward); cuDNN recognises them and runs one fused kernel each.
// Scale 1/sqrt(head_dim); query i sees keys j <= i; query head h reads kv head h / (heads / kv_heads).
//
// Layouts: every bf16 tensor is token-major, [B, S, heads, D] with heads contiguous inside a token (head h at
// h*head_dim) and a row stride (elements between consecutive tokens of one sequence) of the caller's choosing, so
// q, k and v may live side by side in one fused [T, q+2kv] projection buffer. Sequence b starts at row b*S.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>

struct cudnnContext;  // cudnnHandle_t is cudnnContext*; keeps cudnn.h out of the includers

namespace qwen3::cuda {

struct SdpaShape {
  std::int64_t batch, seq, heads, kv_heads, head_dim;
  // Row strides in elements: heads*head_dim for a packed [B, S, H, D] tensor, or the fused q|k|v width.
  std::int64_t q_stride, k_stride, v_stride, o_stride;
  // Context parallelism (0: the defaults seq, seq, kv_seq). kv_seq keys per sequence, of which the seq queries are the
  // last; rows from one sequence to the next: q_batch_rows for q, o, dout, dq and lse (lse[b, h, i] at
  // (b·heads + h)·q_batch_rows + i), kv_batch_rows for k, v, dk and dv. A chunk of a longer buffer is addressed so.
  std::int64_t kv_seq = 0, q_batch_rows = 0, kv_batch_rows = 0;
  // lse[b, h, i] at (b·heads + h)·lse_rows + i when set (0: q_rows()): a chunk's statistics padded apart so that each
  // chunk's first one stays 16-byte aligned whatever the chunk length.
  std::int64_t lse_rows = 0;
  std::int64_t keys() const { return kv_seq > 0 ? kv_seq : seq; }
  std::int64_t q_rows() const { return q_batch_rows > 0 ? q_batch_rows : seq; }
  std::int64_t stats_rows() const { return lse_rows > 0 ? lse_rows : q_rows(); }
  std::int64_t kv_rows() const { return kv_batch_rows > 0 ? kv_batch_rows : keys(); }
};

// One cuDNN handle; a graph and its execution plan are built on first use per (shape, direction) and cached.
// Preconditions (checked, InternalError otherwise): heads % kv_heads == 0, head_dim % 8 == 0 and <= 256, every row
// stride a multiple of 8 and at least its heads*head_dim, every pointer 16-byte aligned. When no cuDNN engine takes
// a graph (older cuDNN, another GPU), the call throws InternalError saying so; callers fall back to their own kernels.
// Not thread-safe; plans belong to the device current at construction.
class CudnnAttention {
 public:
  CudnnAttention();
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // A CUDA device exists and cuDNN creates a handle on it.
  static bool available();

  // Device workspace forward and backward need for this shape: the larger of the two (builds both plans).
  std::size_t workspace_bytes(const SdpaShape& shape);

  // q[B,S,H,D], k/v[B,S_kv,KVH,D] (bf16, row strides q/k/v_stride) -> o[B,S,H,D] bf16 (o_stride);
  // lse[B,H,S] fp32: natural-log sum-exp of the scaled, masked scores of each query row (cuDNN's "Stats").
  void forward(const void* q, const void* k, const void* v, void* o, float* lse, const SdpaShape& shape,
               void* workspace, cudaStream_t stream);

  // Given o, lse from forward and dout[B,S,H,D] (o_stride), overwrites dq[B,S,H,D] (q_stride) and
  // dk/dv[B,S_kv,KVH,D] (k_stride/v_stride), all bf16.
  void backward(const void* q, const void* k, const void* v, const void* o, const void* dout, const float* lse,
                void* dq, void* dk, void* dv, const SdpaShape& shape, void* workspace, cudaStream_t stream);

 private:
  struct Plan;  // the finalized execution plan and what it keeps alive (cudnn_attention.cpp)
  using Key = std::pair<bool, std::array<std::int64_t, 13>>;  // (backward?, shape)
  Plan& plan(const SdpaShape& shape, bool backward);

  cudnnContext* handle_ = nullptr;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace qwen3::cuda
