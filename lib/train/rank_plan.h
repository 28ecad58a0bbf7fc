// What rank r holds and does, in one place: from the model, the run's micro-batch shape, the rank's coordinates in
// its layout, the memory policy and the attention kind, a pure function (no CUDA, no MPI) derives its
// tensor-parallel dimensions, pipeline stage and layers, full and local parameter tables, which tensors it owns and
// which copies it reports, gradient ownership, the distributed optimizer's window and shard count, the micro-batches
// it keeps in flight, its token counts and logit chunk. The buffer table (train/buffer_table.h), the memory planner,
// the step model and both engines read it, so a plan and the engine it plans agree by construction; the planner
// builds it for coordinates it assumes, an engine for the ones its communicators give it. Layout rules that
// depend on the rank (a sequence that does not split, tp not dividing the heads, the own attention kernels under
// context parallelism) are refused here, once.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "model/gradient_ownership.h"
#include "model/param_table.h"
#include "model/pipeline_split.h"
#include "model/memory_policy.h"
#include "model/shard_window.h"
#include "model/tensor_parallel.h"

namespace qwen3 {

// The distributed optimizer's shards are float4-aligned (64 elements), on both engines.
inline constexpr std::int64_t kShardAlignElements = 64;

// Where a rank sits: its index in each group and the group's size.
struct RankPlace {
  int tp = 1, tp_rank = 0;
  int cp = 1, cp_rank = 0;
  int pp = 1, pp_rank = 0;
  int shards = 1, shard_rank = 0;  // the group the optimizer state is sharded over (1: not sharded)
};

struct RankPlanInput {
  ModelConfig model;
  RankPlace rank;
  std::vector<std::int64_t> stage_layers;  // layers per pipeline stage (empty: the balanced split)
  std::int64_t max_batch = 1, max_seq = 0;  // the largest micro-batch (max_seq 0: not known, nothing sized by it)
  std::int64_t micro_batches = 1;           // per step and data-parallel replica
  MemoryPolicy recompute;                // model/memory_policy.h (also where the optimizer state lives)
  bool cudnn_attention = true;              // cuDNN's fused attention, else the project's own kernels
  bool fp8 = false;                         // --precision fp8 (model/fp8_layout.h)
  bool fp8_delayed = false;                 // --fp8-scaling delayed (train/engine.h EngineOptions::fp8_delayed)
  bool cuda_rules = true;                   // the CUDA backend's layout rules (model/sequence_layout.h), else the CPU's
};

struct RankPlan {
  explicit RankPlan(const ModelConfig& m) : model(m), full(m), local(m) {}
  ModelConfig model;
  RankPlace rank;
  TpDims tp;         // this rank's tensor-parallel share (K/V heads replicated where tp exceeds them)
  StageRange stage;  // this rank's layers (the whole model without pipeline parallelism)
  ParamTable full;   // Hugging Face names and full shapes
  ParamTable local;  // this rank's tensors: its tensor-parallel share of its stage's (others hold no elements)
  std::vector<bool> owned;    // per tensor: this stage uses and updates it
  std::vector<bool> reports;  // per tensor: this copy is the canonical one (a tied embedding: the first stage's)
  GradientOwnership gradients;  // which gradients a group sums, which copy the gradient norm counts
  ShardWindow shard;            // this rank's window of the local flat buffers (whole without sharding)
  int shard_parts = 1;          // ranks the optimizer state is sharded over
  int slots = 1;                // micro-batches in flight on this stage (train/pipeline_schedule.h)
  std::int64_t max_batch = 1, max_seq = 0;
  std::int64_t tokens = 0;       // [T] this rank's tokens of the largest micro-batch: batch · seq / cp
  std::int64_t seq_tokens = 0;   // [Tl] its rows of the residual stream under sequence parallelism: T / tp
  std::int64_t logit_chunk = 0;  // tokens of one output-projection chunk (last stage)
  MemoryPolicy recompute;
  bool cudnn_attention = true;
  bool fp8 = false, fp8_delayed = false;
  bool sharded() const { return shard_parts > 1; }
};

// Throws UsageError for a layout the backend refuses (see the header comment), InternalError for coordinates outside
// their groups.
RankPlan plan_rank(const RankPlanInput& in);

// Tokens of one output-projection chunk: the bf16 logits of a chunk stay within 2 GiB.
std::int64_t logit_chunk_tokens(std::int64_t tokens, std::int64_t vocab);

}  // namespace qwen3
