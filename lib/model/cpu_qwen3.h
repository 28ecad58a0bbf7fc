// Qwen3 decoder on the CPU float32 reference ops: forward with saved activations, explicit backward.
// This is the model every faster backend is checked against: clear, not clever.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "config/model_config.h"
#include "dist/communicator.h"
#include "model/context_parallel.h"
#include "model/param_table.h"
#include "model/pipeline_split.h"
#include "model/memory_policy.h"
#include "model/tensor_parallel.h"
#include "ops/cpu/cross_entropy.h"

namespace qwen3 {

// What the reference's passes ran, for the step model's check (tests/unit/step_model_test.cpp): the linear layers'
// multiply-adds by role (forward, input gradient, weight gradient) and the attention calls per sequence.
struct OpTally {
  std::int64_t gemm_fwd = 0, gemm_dgrad = 0, gemm_wgrad = 0;
  std::int64_t attention_fwd = 0, attention_bwd = 0;
};

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
//
// With pipeline parallelism the object is one stage (model/pipeline_split.h): it runs only its layers (plus the
// embedding on the first stage, the final norm, output projection and loss on the last), and its forward and backward
// are separate calls per micro-batch, each micro-batch's activations kept in a slot until its backward.
class CpuQwen3 {
 public:
  using Activations = std::vector<cpu::act_t>;  // the residual stream or its gradient at a stage boundary: [Tl, H]

  // stage: the layers this object runs (default: the whole model). recompute (model/memory_policy.h): full keeps only a
  // layer's input through the forward and recomputes its activations just before its backward; selective drops the
  // norm outputs and the normed, rotated q and k and recomputes those (the same values either way: bit-identical).
  // cp_comm: context parallelism — this rank runs its two chunks of every sequence (causal load balancing: chunks r
  // and 2·cp − 1 − r of 2·cp), all-gathering keys and values for attention; its loss and gradients are its tokens'
  // share (the engine sums them over the group). The sequence length must divide by 2·cp.
  // table: the flat layout of the weights and gradients it is given (default: this rank's tensor-parallel share of
  // every tensor; an engine passes its stage's, train/rank_plan.h).
  explicit CpuQwen3(const ModelConfig& cfg, Communicator* tp_comm = nullptr, const StageRange* stage = nullptr,
                    const MemoryPolicy& recompute = {}, Communicator* cp_comm = nullptr,
                    const ParamTable* table = nullptr);
  ~CpuQwen3();
  const ModelConfig& config() const { return cfg_; }
  const ParamTable& params() const { return table_; }  // this rank's table (the full one without tensor parallelism)
  const TpDims& tp() const { return tp_; }
  const StageRange& stage() const { return stage_; }
  // Count what the passes run into `tally` from now on (null: stop).
  void set_tally(OpTally* tally) { tally_ = tally; }
  // --precision fp8: the decoder layers' linear layers read their operands' FP8 round trips (ops/fp8.h) — E4M3 weights
  // and inputs, E5M2 output gradients, each fused GEMM operand with one per-tensor scale from its amax over the
  // tensor- and context-parallel ranks — as the CUDA engine's FP8 GEMMs do.
  // delayed (--fp8-scaling delayed): gate|up's output gradient and down's input — the tensors the CUDA engine's SwiGLU
  // backward and forward write in FP8 themselves (model/fp8_layout.h Fp8Layout::Produced) — are scaled from their
  // layer's history (fp8_delayed_scale of the largest amax the same layer's tensor had over the previous step, every
  // rank), by their own amax on the first step and after a resume, as current scaling does.
  void set_fp8(bool on, bool delayed = false) {
    fp8_ = on;
    history_.delayed = on && delayed;
  }
  // After a step's last backward (delayed scaling): this step's amaxes, max-reduced over the tensor-, context- and
  // data-parallel ranks (collective over them), become the next step's sources. Nothing otherwise.
  void end_fp8_step(Communicator* dp);
  // The delayed-scaling history of this stage's layers (delayed: a source per layer once a step has ended).
  struct Fp8History {
    bool delayed = false;
    std::vector<double> previous, current;  // [stage layers][Fp8Layout::kProduced]; previous empty until a step ends
  };
  const Fp8History& fp8_history() const { return history_; }

  // Forward, loss and backward on one micro-batch (the whole model: one stage). Gradients are added into
  // grads[total] scaled by grad_scale (1 / tokens counted over the whole step, so accumulation over micro-batches
  // gives the step's mean loss). If logits_out is non-null it receives logits [batch·seq, vocab] (this rank's
  // vocabulary slice [T, tp().vocab]).
  cpu::LossSum forward_backward(const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                                std::vector<float>* logits_out = nullptr);

  // One stage's forward of micro-batch mb into activation slot `slot`. The first stage embeds mb.tokens, the others
  // start from x_in; a stage that is not the last writes its output to x_out. The last stage computes the loss (its
  // return value; {0, 0} elsewhere), the output projection's backward and the final norm's, and keeps the gradient
  // for backward(). Gradients of weights go into grads (scaled by grad_scale).
  cpu::LossSum forward(int slot, const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                       const Activations* x_in, Activations* x_out, std::vector<float>* logits_out = nullptr);
  // The backward of the micro-batch in `slot`: dy is the gradient of the stage's output (unused on the last stage);
  // a stage that is not the first writes the gradient of its input to dx; the first adds into the embedding.
  void backward(int slot, const float* weights, float* grads, const Activations* dy, Activations* dx);
  // Elements of a stage boundary tensor for a micro-batch of `tokens` tokens (this rank's sequence rows × hidden;
  // with context parallelism `tokens` counts the whole sequences).
  std::int64_t boundary_elements(std::int64_t tokens) const;
  int cp_size() const { return cp_comm_ ? cp_comm_->size() : 1; }

 private:
  struct Slot;
  Slot& slot(int i);
  ModelConfig cfg_;
  Communicator* tp_comm_;
  TpDims tp_;
  ParamTable table_;
  StageRange stage_;
  MemoryPolicy recompute_;
  Communicator* cp_comm_ = nullptr;
  std::vector<std::unique_ptr<Slot>> slots_;
  OpTally* tally_ = nullptr;
  bool fp8_ = false;
  Fp8History history_;
};

}  // namespace qwen3
