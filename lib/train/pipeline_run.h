// One optimizer step's micro-batches through this rank's pipeline stage under 1F1B (train/pipeline_schedule.h): the
// engine computes, the engine's pipeline communicator moves the stage-boundary tensors (rank = stage).
#pragma once
#include <functional>

#include "ops/cpu/cross_entropy.h"
#include "train/engine.h"

namespace qwen3 {

struct PipelineTimes {
  double compute_s = 0;  // in stage_forward / stage_backward
  double p2p_s = 0;      // in the boundary transfers, waiting for the neighbouring stages included (the bubble)
};

// batch(micro) gives micro-batch `micro` of the step (0 ≤ micro < micro_batches). Returns the summed loss and the
// tokens it counted: the last stage's; {0, 0} on the others. logits_of_first: the last stage's logits of micro-batch 0.
// Each operation's time is taken after
// Engine::synchronize_pipeline().
cpu::LossSum run_pipeline_step(Engine& engine, int stage, int stages, int micro_batches,
                               const std::function<MicroBatch(int)>& batch, double grad_scale, PipelineTimes& times,
                               std::vector<float>* logits_of_first = nullptr);

}  // namespace qwen3
