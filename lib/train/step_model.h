// What one training step of the CUDA engine runs on one rank, operation by operation with its shapes, and how those
// operations overlap: the inventory that qwen3-calibrate measures on a GPU and that the step-time predictor
// (train/calibration.h predict_step) prices. No GPU needed. It follows the engine's own order
// (train/cuda/qwen3_blocks.cpp, sequence_parallel.cpp, lm_head.cpp, attention.cpp, param_update.cpp,
// host_optimizer.cpp); a change there changes this walk too.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "train/memory_plan.h"

namespace qwen3 {

// The engine's kernels, each priced by measuring it alone on the GPU (qwen3-calibrate).
enum class OpKind {
  gemm_fwd,         // y[T, out] = x[T, in]·Wᵀ (bf16 out)
  gemm_dgrad_f32,   // dx[T, in] = dy·W (fp32 out)
  gemm_dgrad_bf16,  // dx[T, in] = dy·W (bf16 out)
  gemm_wgrad,       // dW[out, in] += dyᵀ·x (fp32, accumulating)
  gemm_wgrad_set,   // dW[out, in] = dyᵀ·x (fp32, written: a step's first micro-batch without pipeline stages)
  gemm8_fwd,        // the five above with FP8 operands (--precision fp8: E4M3 x and W, E5M2 dy; gpu/gemm.h)
  gemm8_dgrad_f32,
  gemm8_dgrad_bf16,
  gemm8_wgrad,
  gemm8_wgrad_set,
  fp8_amax,         // [T, width] bf16: its largest magnitude (ops/cuda/fp8_cast.h)
  fp8_cast,         // [T, width] bf16 → its FP8 copy, row-major (a forward GEMM's input)
  fp8_cast_t,       // → its transposed FP8 copy (a weight gradient's input)
  fp8_cast_both,    // → both (an output gradient; a weight, once per step)
  attention_fwd,    // causal grouped-query attention of one sequence (cuDNN), dims {heads, kv_heads, head_dim}
  attention_bwd,
  rmsnorm_fwd,      // [T, width]
  rmsnorm_bwd,
  qk_norm_rope_fwd,  // [T, heads·head_dim], dims {heads, head_dim}
  qk_norm_rope_bwd,
  swiglu_fwd,       // [T, width] from [T, 2·width]
  swiglu_bwd,
  swiglu_bwd_fp8t,  // the backward writing its recomputed product as down's transposed E4M3 operand (--precision fp8)
  swiglu_bwd_fp8g,  // … and gate|up's gradient as its two E5M2 operands (--fp8-scaling delayed, after the first step)
  swiglu_fwd_fp8,   // the forward writing its product only as down's E4M3 operand (--fp8-scaling delayed, likewise)
  add_bf16,         // [T, width]
  embedding_fwd,    // [T, width] rows gathered
  embedding_bwd,
  cross_entropy,    // fused forward and backward over [T, vocab]
  cast_f32_bf16,    // [T, width]
  adamw,            // `tokens` parameters: fp32 master, moments and gradient in, bf16 copy out
  sum_squares,      // `tokens` fp32 gradients (the gradient norm)
};
const char* op_kind_name(OpKind k);
// The GEMM kinds (dims {in, out}); attention kinds (dims {heads, kv_heads, head_dim}; tokens = the sequence length).
bool is_gemm(OpKind k);
bool is_fp8_gemm(OpKind k);
bool is_attention(OpKind k);

// One kernel call: tokens (rows; attention: the sequence length) and its widths.
struct OpShape {
  OpKind kind;
  std::int64_t tokens;
  std::array<std::int64_t, 3> dims{};
  // "gemm_fwd 1024x6144", "attention_fwd 16/8/128", "rmsnorm_fwd 1024": the op and its widths, not its tokens.
  std::string key() const;
};

// A collective over `group` GPUs; bytes: the whole (gathered, or reduced) buffer.
enum class CollKind { all_gather, reduce_scatter, all_reduce, send_recv };
const char* coll_kind_name(CollKind k);
struct CollOp {
  CollKind kind;
  std::int64_t bytes;
  int group;
};

// The other resources a step uses: host↔device copies over pinned memory and the CPU's AdamW.
enum class HostKind { copy_d2h, copy_h2d, cpu_adamw };  // bytes, bytes, elements

// Prices each operation, in seconds. qwen3-calibrate records the ones a layout needs with a pricer that returns 0.
class OpPricer {
 public:
  virtual ~OpPricer() = default;
  virtual double compute(const OpShape& op) = 0;
  virtual double collective(const CollOp& op) = 0;
  virtual double host(HostKind kind, double amount) = 0;
  // One host round trip (the engine reads the loss once per micro-batch): its cost on the GPU's timeline.
  virtual double sync() = 0;
  // The share of the optimizer's device time hidden when it runs on its side stream beside the next forward's kernels
  // of forward_tokens rows (1: wholly hidden while the forward lasts; 0: the two take turns). Measured by
  // qwen3-calibrate where it can be.
  virtual double optimizer_hidden_share(std::int64_t /*forward_tokens*/) { return 1.0; }
  // How much longer a GEMM takes while a collective runs beside it on another stream (NCCL's blocks hold SMs the
  // GEMM would use): 1 for none.
  virtual double gemm_slowdown_beside_collectives() { return 1.0; }
};

// One step on one rank, in seconds, by what the time is spent on (the step's critical path).
struct StepTime {
  // One micro-batch on the slowest stage, compute and exposed communication; backward: the mean over the step's
  // micro-batches (without pipeline stages the first writes the weight gradients, the others add to them).
  double forward = 0, backward = 0;
  double recompute = 0;              // of which recomputation (inside backward)
  double exposed_comm = 0;           // of forward + backward: tensor/context-parallel collectives not hidden
  double pipeline = 0;               // fill and drain of 1F1B beyond m micro-batches of the slowest stage, p2p
  double data_parallel = 0;          // gradient reduction (exposed, after the last micro-batch)
  double optimizer = 0;              // grad norm + the part of AdamW (device and host) the next forward waits for, and
                                     // (--precision fp8) the weights' FP8 casts the first forward runs
  double step = 0;                   // the whole step
  std::int64_t micro_batches = 0;    // per replica
};

// The step time of the layout in `in` (PlannedRun: model, lengths, tp/pp/cp/dp, recomputation and offloading,
// micro-batches per replica), priced by `pricer`. Throws UsageError for a layout the engine refuses.
StepTime walk_step(const PlannedRun& in, OpPricer& pricer);

// The time from a step's first pipeline operation to its last, over `forward.size()` stages running 1F1B
// (pipeline_schedule.h) as the engine does: forward[s] and backward[s] per micro-batch on stage s, every exchange
// blocking until both ends of each of its transfers have posted it (then the transfer's own time), and `per_op`
// after every operation (the engine synchronises its stream after each).
double pipeline_makespan(const std::vector<double>& forward, const std::vector<double>& backward, int micro_batches,
                         double activation_transfer, double gradient_transfer, double per_op);

}  // namespace qwen3
