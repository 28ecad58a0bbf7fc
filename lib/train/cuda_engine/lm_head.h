// The last stage's head: the final norm, the output projection and the cross-entropy loss one token chunk at a time
// (vocabulary-parallel with tensor parallelism: the row max, the sum of exponentials and the target logit reduced over
// the group), the output projection's backward accumulating the norm-output gradient, and the final norm's backward.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/cpu/cross_entropy.h"
#include "train/cuda_engine/activations.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/sequence_parallel.h"

namespace qwen3::cuda {

class LmHead {
 public:
  // tp_host / cp_host: the tensor- and context-parallel groups (null: none), for the logits and the loss.
  LmHead(const EngineContext& ctx, SequenceParallel& sp, const DeviceBuffers& buffers, const Scratch& scratch,
         Communicator* tp_host, Communicator* cp_host, double* partials, double* scalar, std::int64_t logit_chunk);

  // The final hidden state (x_final [Tl, H]) to the loss of this micro-batch's `counted` tokens (summed over the
  // context-parallel group), scratch.dres and scratch.dy its gradient; logits_out (optional) every token's logits over
  // the whole vocabulary. labels: device [T].
  cpu::LossSum head_forward_backward(const std::int32_t* labels, std::int64_t counted, double grad_scale,
                                     bool accumulate, std::vector<float>* logits_out, const MicroDims& d);
  bf16* x_final() const { return x_final_; }

 private:
  void chunk_loss(const std::int32_t* labels, std::int64_t t0, std::int64_t tc, double grad_scale, const MicroDims& d);
  void copy_logits(std::int64_t t0, std::int64_t tc, std::vector<float>& out, const MicroDims& d) const;

  const EngineContext& ctx_;
  SequenceParallel& sp_;
  Scratch s_;
  Communicator *tp_host_, *cp_host_;
  double *partial_, *scalar_;
  std::int64_t chunk_;
  bf16 *x_final_, *h_final_, *logits_;  // [Tl, H], [T, H], [chunk, V]
  float *rstd_final_, *row_loss_;       // [Tl], [T]
  float *ce_m_, *ce_mg_, *ce_z_, *ce_t_;  // [chunk] each: vocabulary-parallel statistics
};

}  // namespace qwen3::cuda
