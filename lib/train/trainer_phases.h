// The training run in steps (internal to lib/train; app/ calls run_training in trainer.h): what the steps share
// (TrainingRun), the memory check, the restore (resume or Hugging Face init), the step loop with its checkpoints and
// pre-emption, and the summary. run_training (trainer.cpp) calls them in this order on every rank; each is collective
// where it says so, and every rank calls it at the same point.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/groups.h"
#include "dist/layout.h"
#include "dist/mpi_communicator.h"
#include "io/dataset.h"
#include "io/memory_tracer.h"
#include "train/checkpoint.h"
#include "train/engine.h"
#include "train/pipeline_run.h"
#include "train/results_owner.h"
#include "train/run_config.h"
#include "train/sampler.h"
#include "train/termination.h"

namespace qwen3::trainer {

// The dataset, the engine and the memory tracer of a run.
struct TrainState {
  std::unique_ptr<DatasetReader> data;
  std::unique_ptr<Engine> engine;
  std::atomic<const Engine*> traced_engine{nullptr};  // the engine, for the tracer's thread, once it exists
  std::unique_ptr<MemoryTracer> tracer;               // last: stops before the engine goes
};

// What every step of one run shares: its configuration, this rank's place and groups, the results file, the state.
struct TrainingRun {
  // Collective (the node-local rank and the groups are agreed between ranks).
  TrainingRun(const RunConfig& cfg, MpiCommunicator& world, const ParallelLayout& layout, ResultsOwner& results,
              std::vector<std::string> hosts);
  const RunConfig& cfg;
  MpiCommunicator& world;
  const ParallelLayout& layout;
  ResultsOwner& results;
  const int rank, W;
  const bool root;
  const int local_rank;  // this rank's place on its node: its device
  const int local_size;  // the ranks on this rank's node
  const std::vector<std::string> hosts;  // every rank's host, in rank order
  // The groups (Megatron's order: tensor-parallel ranks adjacent); the pipeline group ordered by stage.
  ParallelGroups groups;
  const std::vector<std::int64_t> stage_layers;  // layers of each pipeline stage
  TrainState st;
};

// What restore() found: the step the loop starts at, and whether it resumed a checkpoint (which is then on disk).
struct Restored {
  std::int64_t start_step = 0;
  bool resumed = false;
};

// The step loop's state: what each step reads and what the steps add up (per-rank timings, the last checkpoint,
// a requested stop).
struct StepLoop {
  StepLoop(const TrainingRun& run, const Restored& restored);
  const std::int64_t start_step, micro_steps;
  const double counted_tokens;  // targets per step, all ranks
  const double flops_per_step;
  const DocumentSampler sampler;
  const AdamWConfig adamw;
  const int dp_rank;
  // Pipeline parallelism: each micro-batch of the step is read when 1F1B first needs it (each stage needs its shape,
  // the first its tokens, the last its labels; train/pipeline_run.h) and kept for its backward.
  const bool pipelined;
  std::vector<std::int32_t> tokens, labels;
  std::vector<std::vector<std::int32_t>> step_tokens, step_labels;
  // Per-rank time over the steps after the first: compute, pipeline transfers and waits, data-parallel reduction.
  PipelineTimes pipe_times;
  double reduce_s = 0, step_sum_s = 0, later_steps_s = 0;
  std::int64_t last_saved;         // the step of the newest checkpoint on disk, -1 if none
  std::int64_t preempted_at = -1;  // the step after which a requested stop took place
  int preempt_signal = 0;
};

// The tracer, started with the run so that its trace covers initialisation.
std::unique_ptr<MemoryTracer> start_tracer(const RunConfig& cfg, const std::atomic<const Engine*>& engine);
// Collective: the run's facts and configuration into the results file, the recomputation policy chosen, and (CUDA)
// the memory plan recorded and checked against the device and the host before anything is allocated.
MemoryPolicy check_memory(TrainingRun& run, const std::string& start_utc);
// Collective: the dataset validated and opened, the engine made, its devices and memory recorded.
void create_dataset_and_engine(TrainingRun& run, const MemoryPolicy& recompute);
// What a checkpoint of this run records and must agree with.
CheckpointRun checkpoint_run(const TrainingRun& run);
// Collective: the state to start from — a checkpoint (--resume, --auto-resume) or Hugging Face weights.
Restored restore(TrainingRun& run, const CheckpointRun& ckpt_run);
// Rank 0: the line that says what is about to run.
void print_run_line(const TrainingRun& run, const StepLoop& loop);
// Collective: the steps from loop.start_step, each followed by its checkpoint and the pre-emption check.
void run_steps(TrainingRun& run, StepLoop& loop, const CheckpointRun& ckpt_run, const TerminationWatch& watch);
// Collective: the checkpoint after `step` (--save); Diverged when the state to save is not finite (nothing published).
void save_checkpoint_of_step(TrainingRun& run, std::int64_t step, const CheckpointRun& ckpt_run);
// Collective: the final checkpoint (--save) and the Hugging Face export (--export-hf).
void save_and_export(TrainingRun& run, const StepLoop& loop, const CheckpointRun& ckpt_run);
// Collective: every rank's timings and the pipeline's stages into the results file, the trace flushed, the status
// written. Returns the process exit code.
int finish_run(TrainingRun& run, const StepLoop& loop);

}  // namespace qwen3::trainer
