// What one decoder layer keeps for its backward, bound to the buffer table's entries (the recomputation policy's
// sharing is in the table: train/buffer_table.h), and the offload of kept layer inputs to pinned host memory.
#pragma once
#include <cstdint>

#include "model/fp8_layout.h"
#include "model/memory_policy.h"
#include "train/cuda_engine/device_buffers.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/streams.h"

namespace qwen3::cuda {

// T = tokens of the largest micro-batch; with tensor parallelism the residual stream and its norm statistics hold this
// rank's Tl = T / tp rows (sequence parallelism) and the widths (q_dim, kv_dim, heads, I) are this rank's shares. The
// SwiGLU product is recomputed in the backward (not stored). q|k|v and gate|up are each one GEMM.
struct LayerActs {
  bf16* x_in;           // [Tl, H]
  bf16* qkv;            // [T, q_dim + 2·kv_dim] fused projection output, before q/k norm
  bf16 *q, *k, *v;      // [T, heads|kv_heads, head_dim] attention inputs (q, k after norm + RoPE; v a contiguous copy
                        // for the own kernels; null with cuDNN, which reads v inside qkv)
  bf16* attn;           // [T, q_dim]
  bf16* x_mid;          // [Tl, H]
  bf16 *h_in, *h_mid;   // [T, H] the two norm outputs, gathered over the sequence
  bf16* gate_up;        // [T, 2·I]
  float *rstd_in, *rstd_q, *rstd_k, *lse, *rstd_mid;  // [Tl], [T·heads], [T·kv_heads], [B·heads·lse_rows], [Tl]
  float* fp8 = nullptr;  // --precision fp8: its four GEMM inputs' amaxes [4] and 1/s [4] (model/fp8_layout.h)
};
// The stage's layer `index` in micro-batch slot `slot` (fp8: the run's FP8 layout, else null).
LayerActs bind_layer(const DeviceBuffers& buffers, int slot, int index, const Fp8Layout* fp8);

// One block's scratch, shared by every layer: the SwiGLU product [T, I], the residual-stream gradient dres [Tl, H]
// (fp32, and its bf16 copy dy [T, max(H, q_dim)]), the norm-output gradient dh [T, H] (fp32), and the gradients of the
// attention output [T, q_dim], q [T, q_dim], k and v [T, kv_dim], q|k|v, the SwiGLU output [T, I] and gate|up.
struct Scratch {
  bf16* act;
  float *dres, *dh;
  bf16 *dy, *dattn, *dq, *dk, *dv, *dqkv, *dact, *dgate_up;
};
Scratch bind_scratch(const DeviceBuffers& buffers);

// Offloaded inputs (full recomputation with offload_inputs): the input of a recomputed layer but the stage's first is
// one of two device buffers (shared by all slots); the forward copies it to its pinned host place on a side stream
// while the layer runs (the buffer is written again two layers on, after that copy), and the backward copies it back
// while the layer above runs its backward.
class Offloader {
 public:
  Offloader(const MemoryPolicy& policy, std::int64_t layers, std::int64_t input_elements, bf16* host_inputs);
  bool active() const { return static_cast<bool>(stream_); }
  // Forward: before layer `next` (stage index)'s input buffer is written, and after (copy it out from `written`).
  void before_write(std::int64_t next, cudaStream_t st) const;
  void after_write(int slot, std::int64_t next, const bf16* written, cudaStream_t st);
  // The forward ends when its inputs are on the host.
  void end_forward(cudaStream_t st) const;
  // Backward: the copy back of layer `index`'s input into x_in (once what is queued on st is done), and the wait for it.
  void prefetch(int slot, std::int64_t index, bf16* x_in, cudaStream_t st);
  void wait_input(std::int64_t index, cudaStream_t st) const;

 private:
  bf16* host_input(int slot, std::int64_t index) const { return host_ + (slot * n_ + index - 1) * elements_; }
  MemoryPolicy policy_;
  std::int64_t n_ = 0, elements_ = 0;  // offloaded layers per slot (stage indices 1 … n_), elements of one input
  bf16* host_ = nullptr;               // pinned [slots][n_][elements_]
  Stream stream_;
  std::vector<Event> to_host_, to_device_, fork_;
};

}  // namespace qwen3::cuda
