// Training checkpoints (format: docs/checkpoints.md): every tensor's fp32 master weights and AdamW moments in full
// Hugging Face shapes, spread over one HDF5 shard file per rank (each rank writes its share in parallel), plus a
// manifest with the format name and version, the step, the optimizer's step count and what the data position
// depends on (seed, global batch, sequence length). Full shapes make any layout able to load any checkpoint
// (resharding on load: each rank keeps its tensor-, pipeline- and ZeRO-parts). Written into step-N.partial and
// renamed to step-N once every shard and the manifest are complete; ROOT/latest names the newest.
#pragma once
#include <cstdint>
#include <string>

#include "config/model_config.h"
#include "dist/communicator.h"
#include "train/engine.h"

namespace qwen3 {

inline constexpr const char* kCheckpointFormat = "qwen3-pretrain-checkpoint";
inline constexpr std::int64_t kCheckpointVersion = 1;

// What a checkpoint must agree with to be resumed: the model, and the inputs of the document order (a pure function
// of the seed, the global batch, the bucket's document count and the step: docs/checkpoints.md).
struct CheckpointRun {
  ModelConfig model;
  std::uint64_t seed = 0;
  std::int64_t global_batch = 0, seq_len = 0;
  std::int64_t num_documents = 0;  // in the dataset's bucket: the epoch permutation's size
  // The learning-rate schedule (train/lr_schedule.h): recorded; a resumed run may change it (load_checkpoint says so).
  double lr = 0, min_lr = 0;
  std::int64_t warmup_steps = 0, steps = 0;
  std::string layout;  // e.g. "T2 C1 D1 P2 (4 ranks)", recorded for people
};

// Saves the state after `step` completed steps under root/step-<step> (collective over world; every rank of the job
// calls it with the same arguments). Keeps the newest `keep` checkpoints (0: all). Errors reach every rank (InputError
// / OutputError naming the file).
void save_checkpoint(const std::string& root, std::int64_t step, Engine& engine, Communicator& world,
                     const CheckpointRun& run, int keep);

// The checkpoint folder to resume from: root itself when it holds a manifest, else the one root/latest names.
// InputError when there is none.
std::string resolve_checkpoint(const std::string& root);

// Loads a checkpoint folder into engine (collective) and returns its step. Refuses (InputError, one message) a
// folder that is not a complete checkpoint of this format and version, a truncated shard, or a model, seed, global
// batch or sequence length other than run's.
// schedule_note: set to a sentence when the checkpoint's learning-rate schedule differs from run's (empty otherwise).
std::int64_t load_checkpoint(const std::string& dir, Engine& engine, Communicator& world, const CheckpointRun& run,
                             std::string* schedule_note = nullptr);

}  // namespace qwen3
