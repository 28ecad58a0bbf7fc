// qwen3-pretrain: the training entry point. Parses options, validates them against the job, runs lib/train.
#include <cstdio>

#include "common/main_wrapper.h"
#include "common/run_options.h"
#include "dist/mpi_communicator.h"
#include "train/trainer.h"

using namespace qwen3;

int main(int argc, char** argv) {
  // MPI first: under mpirun every rank parses and validates identically, so every rank fails alike.
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world(MPI_COMM_WORLD);
  const char* program = "qwen3-pretrain";
  return run_main(world.rank() == 0 ? program : nullptr, [&] {
    auto cfg = parse_run_options(argc, argv);
    if (!cfg) return 0;
    cfg->validate(world.size());
    run_training(*cfg, world);
    return 0;
  });
}
