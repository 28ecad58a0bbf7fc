// The training run: dataset → micro-batches → engine forward/backward → gradient reduction → AdamW → results file.
#pragma once
#include "dist/mpi_communicator.h"
#include "train/run_config.h"

namespace qwen3 {

// Runs cfg on every rank of `world` (already validated with world.size()). Rank 0 prints one progress line per
// step and writes the results file. Returns normally on success; on failure the results file (if it was created)
// records status and message, and the error is rethrown on every rank.
// Returns the process exit code: 0, or ExitCode::preempted when a signal stopped the run after a checkpoint.
int run_training(const RunConfig& cfg, MpiCommunicator& world);

}  // namespace qwen3
