// One layer's attention on this rank: cuDNN fused attention, or the project's own kernels (--attention own); with
// context parallelism (causal load balancing, model/context_parallel.h) each of the rank's two chunks attends to every
// key up to its end, the keys and values all-gathered over the group in the forward and their gradients
// reduce-scattered back in the backward. Also the RoPE tables at this rank's positions. The one seam where the
// build's cuDNN flag is read.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "train/cuda_engine/activations.h"
#include "train/cuda_engine/device_group.h"
#include "train/cuda_engine/engine_context.h"

namespace qwen3::cuda {

class CudnnAttention;
struct SdpaShape;

class Attention {
 public:
  // The implementation the run chose (cudnn: cuDNN's fused attention, else the own kernels; RunConfig::attention, as
  // the memory plan counted it) for micro-batches up to max_batch × max_seq on this rank's tensor-parallel share and
  // context-parallel rank; throws UsageError for context parallelism without cuDNN, or cuDNN chosen and unavailable
  // (never the other kernels instead). Runs nothing until bind().
  Attention(const ModelConfig& cfg, const TpDims& tp, int cp, int cp_rank, std::int64_t max_batch, std::int64_t max_seq,
            bool cudnn);
  ~Attention();
  bool cudnn() const { return use_cudnn_; }
  // The backward workspace the chosen implementation needs (the buffer table's attention_workspace).
  std::int64_t workspace_bytes() const { return workspace_bytes_; }
  // Binds the table's buffers (the workspace, RoPE tables, context-parallel keys|values) and the context-parallel
  // group (null without context parallelism); uploads the RoPE tables of max_seq positions when cp = 1.
  void bind(const EngineContext& ctx, const DeviceBuffers& buffers, const Scratch& scratch, DeviceGroup* cp,
            std::int64_t max_seq);
  const float* rope_cos() const { return rope_cos_; }
  const float* rope_sin() const { return rope_sin_; }
  // Context parallelism: the RoPE tables at this rank's positions of a sequence of S_full tokens (when it changes).
  void set_sequence(std::int64_t S_full);

  // a.q, a.k and v (inside a.qkv) → a.attn, a.lse.
  void forward(LayerActs& a, const MicroDims& d);
  // scratch.dattn → scratch.dq, scratch.dk, and dv written straight into its columns of scratch.dqkv.
  void backward(LayerActs& a, const MicroDims& d);

 private:
  SdpaShape chunk_shape(int j, std::int64_t B, std::int64_t S) const;
  void gather_kv(const LayerActs& a, const MicroDims& d);
  void reorder(const bf16* from, bf16* to, std::int64_t B, std::int64_t S, bool to_sequence_order);
  void cp_forward(LayerActs& a, const MicroDims& d);
  void cp_backward(LayerActs& a, const MicroDims& d);

  const ModelConfig& cfg_;
  const TpDims& tp_;
  int cp_size_, cp_rank_;
  const EngineContext* ctx_ = nullptr;
  bool use_cudnn_ = false;
  std::unique_ptr<CudnnAttention> cudnn_;
  std::int64_t workspace_bytes_ = 0;
  void* workspace_ = nullptr;
  Scratch scratch_{};
  DeviceGroup* cp_ = nullptr;
  float *rope_cos_ = nullptr, *rope_sin_ = nullptr;  // [max_seq / cp, head_dim / 2]
  std::int64_t rope_seq_ = 0;                        // the sequence length the tables hold
  // Context parallelism: this rank's keys|values [T, 2·kv]; every rank's in rank order, in sequence order, and the
  // gradients in sequence order of the second and the first local chunk's attention [cp·T, 2·kv] each (bf16).
  bf16 *kv_local_ = nullptr, *kv_ranks_ = nullptr, *kv_full_ = nullptr, *dkv_ = nullptr, *dkv_first_ = nullptr;
};

}  // namespace qwen3::cuda
