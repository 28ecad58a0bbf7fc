// Qwen3 decoder on the CPU float32 reference ops: forward with saved activations, explicit backward.
// This is the model every faster backend is checked against: clear, not clever.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "dist/communicator.h"
#include "model/param_table.h"
#include "model/tensor_parallel.h"
#include "ops/cpu/cross_entropy.h"

namespace qwen3 {

struct MicroBatch {
  const std::int32_t* tokens = nullptr;  // [batch, seq]
  const std::int32_t* labels = nullptr;  // [batch, seq], kIgnoreLabel where no target
  std::int64_t batch = 0, seq = 0;
};

// With tensor parallelism (tp_comm non-null, size > 1) this object is one rank's share (model/tensor_parallel.h):
// its weights and gradients follow the local table, the residual stream is split along the tokens (sequence
// parallelism: all-gather before each column-parallel block, reduce-scatter after each row-parallel one), and the
// embedding, output projection and cross-entropy are vocabulary-parallel. Gradients of replicated weights (norms,
// and K/V projections shared by a KV group) are this rank's partial sums; the engine reduces them.
class CpuQwen3 {
 public:
  explicit CpuQwen3(const ModelConfig& cfg, Communicator* tp_comm = nullptr);
  const ModelConfig& config() const { return cfg_; }
  const ParamTable& params() const { return table_; }  // this rank's table (the full one without tensor parallelism)
  const TpDims& tp() const { return tp_; }

  // Forward, loss and backward on one micro-batch. Gradients are added into grads[total] scaled by grad_scale
  // (1 / tokens counted over the whole step, so accumulation over micro-batches gives the step's mean loss).
  // If logits_out is non-null it receives logits [batch·seq, vocab] (this rank's vocabulary slice [T, tp().vocab]).
  // With sequence parallelism batch·seq must divide by the tensor-parallel size.
  cpu::LossSum forward_backward(const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                                std::vector<float>* logits_out = nullptr);

 private:
  ModelConfig cfg_;
  Communicator* tp_comm_;
  TpDims tp_;
  ParamTable table_;
};

}  // namespace qwen3
