// Qwen3 decoder on the CPU float32 reference ops: forward with saved activations, explicit backward.
// This is the model every faster backend is checked against: clear, not clever.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "model/param_table.h"
#include "ops/cpu/cross_entropy.h"

namespace qwen3 {

struct MicroBatch {
  const std::int32_t* tokens = nullptr;  // [batch, seq]
  const std::int32_t* labels = nullptr;  // [batch, seq], kIgnoreLabel where no target
  std::int64_t batch = 0, seq = 0;
};

class CpuQwen3 {
 public:
  explicit CpuQwen3(const ModelConfig& cfg);
  const ModelConfig& config() const { return cfg_; }
  const ParamTable& params() const { return table_; }

  // Forward, loss and backward on one micro-batch. Gradients are added into grads[total] scaled by grad_scale
  // (1 / tokens counted over the whole step, so accumulation over micro-batches gives the step's mean loss).
  // If logits_out is non-null it receives logits [batch·seq, vocab].
  cpu::LossSum forward_backward(const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                                std::vector<float>* logits_out = nullptr);

 private:
  ModelConfig cfg_;
  ParamTable table_;
};

}  // namespace qwen3
