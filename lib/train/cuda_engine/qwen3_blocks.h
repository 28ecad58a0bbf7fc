// The Qwen3 decoder layer on the CUDA ops, block by block, named as the CPU reference's (model/cpu_qwen3.cpp) so the
// two read side by side: attention_block_forward (input norm, q|k|v, q/k norm + RoPE, attention, o_proj, residual),
// mlp_block_forward (post norm, gate|up, SwiGLU, down, residual), layer_forward (both), and their backwards. Tensor and
// context parallelism enter only through the sequence-parallel region and the attention unit.
#pragma once
#include <cstdint>

#include "train/cuda_engine/activations.h"
#include "train/cuda_engine/attention.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/linears.h"
#include "train/cuda_engine/sequence_parallel.h"

namespace qwen3::cuda {

class Qwen3Blocks {
 public:
  Qwen3Blocks(const EngineContext& ctx, SequenceParallel& sp, Attention& attention, Linears& linears,
              const Scratch& scratch)
      : ctx_(ctx), sp_(sp), attention_(attention), lin_(linears), s_(scratch) {}

  // Layer l (model index) from a.x_in into next (the following layer's input), keeping what its backward needs in a;
  // run again before the backward when the layer is fully recomputed.
  void layer_forward(std::int64_t l, LayerActs& a, bf16* next, const MicroDims& d);
  void attention_block_forward(std::int64_t l, LayerActs& a, const MicroDims& d);
  void mlp_block_forward(std::int64_t l, LayerActs& a, bf16* next, const MicroDims& d);
  // Selective recomputation: the norm outputs and the normed, rotated q and k again.
  void recompute_selective(std::int64_t l, LayerActs& a, const MicroDims& d);

  // The backward of layer l from sp.dy() (its output gradient) to scratch.dres (its input's); `more`: a layer below
  // follows on this stage. accumulate: the weight-gradient GEMMs add (else overwrite, β = 0).
  void layer_backward(std::int64_t l, LayerActs& a, bool more, bool accumulate, const MicroDims& d);
  void mlp_block_backward(std::int64_t l, LayerActs& a, bool accumulate, const MicroDims& d);
  void attention_block_backward(std::int64_t l, LayerActs& a, bool more, bool accumulate, const MicroDims& d);

 private:
  const EngineContext& ctx_;
  SequenceParallel& sp_;
  Attention& attention_;
  Linears& lin_;
  Scratch s_;
};

}  // namespace qwen3::cuda
