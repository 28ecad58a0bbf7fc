// qwen3-pretrain: the training entry point. Parses options, validates them against the job, runs lib/train.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/main_wrapper.h"
#include "common/run_options.h"
#include "core/error.h"
#include "dist/layout.h"
#include "dist/mpi_communicator.h"
#include "io/system_info.h"
#include "model/pipeline_split.h"
#include "train/memory_plan.h"
#include "train/trainer.h"

using namespace qwen3;

namespace {

// --plan: no dataset, no output, no device, only the arithmetic of train/memory_plan.h. Exit 0 fits, 3 does not.
int print_plan(const RunConfig& cfg, int job_ranks, bool print) {
  const int ranks = cfg.plan_world_size > 0 ? cfg.plan_world_size : job_ranks;
  const bool cuda = cfg.device == "cuda";
  cfg.validate_layout(ranks, cuda);  // the rules a run on this backend applies at start (qwen3-sweep relies on them)
  const ParallelLayout layout(ranks, cfg.tp, cfg.cp, cfg.pp);
  MemoryPlanInput in{cfg.model, cfg.micro_batch, cfg.seq_len, cfg.tp, layout.dp(), cfg.pp, cfg.cp};
  in.shard_optimizer = cfg.shard_optimizer;
  in.stage_layers = cfg.pp_layers;
  in.cuda_rules = cuda;
  in.micro_batches = std::max<std::int64_t>(1, cfg.global_batch / (cfg.micro_batch * layout.dp()));
  const std::int64_t device =
      parse_memory_size("--device-memory", cfg.device_memory.empty() ? kDefaultPlanDevice : cfg.device_memory);
  in.recompute = choose_recompute(cfg.memory_request(), in, device, 0);  // the host's memory is the run's to check
  const auto [worst, plan] = plan_worst_stage(in);
  const bool fits = plan.total() + kRuntimeReserveBytes <= device;
  if (print && cfg.format == "json") {
    std::printf("%s\n", plan_json(in, worst, plan, device).c_str());
  } else if (print) {
    std::string who = "every rank holds the same";
    if (cfg.pp > 1) {
      who = "per pipeline stage:";
      for (int s = 0; s < cfg.pp; ++s) {
        MemoryPlanInput one = in;
        one.stage = s;
        const StageRange r = stage_range(pipeline_layer_counts(cfg.model, cfg.pp, cfg.seq_len, cfg.pp_layers), s);
        const MemoryPlan sp = plan_cuda_rank_memory(one);
        char line[200];
        std::snprintf(line, sizeof line, "\n  stage %d (layers %lld-%lld): %.2f GiB", s, static_cast<long long>(r.first_layer),
                      static_cast<long long>(r.last_layer - 1), sp.total() / 1073741824.0);
        who += line;
        if (sp.host_pinned_bytes > 0) {
          std::snprintf(line, sizeof line, " (and %.2f GiB of pinned host memory)", sp.host_pinned_bytes / 1073741824.0);
          who += line;
        }
      }
      who += "\nthe rank that needs the most (stage " + std::to_string(worst) + ")";
    }
    std::printf("qwen3-pretrain --plan: %s, seq %lld, micro-batch %lld, %s, recomputation %s; %s:\n%s",
                cfg.model_source.c_str(), static_cast<long long>(cfg.seq_len),
                static_cast<long long>(cfg.micro_batch), layout.describe().c_str(),
                in.recompute.describe().c_str(), who.c_str(), describe_plan(plan, device).c_str());
  }
  return fits ? 0 : static_cast<int>(ExitCode::input);
}

// Tensor- and context-parallel groups stay inside a node: their collectives run in every layer. Collective; every rank
// decides alike (UsageError), or with --allow-cross-node-tp rank 0 warns.
void check_groups_inside_nodes(const RunConfig& cfg, MpiCommunicator& world) {
  const std::string why = ParallelLayout(world.size(), cfg.tp, cfg.cp, cfg.pp).groups_across_hosts(world.all_gather(hostname()));
  if (why.empty()) return;
  if (!cfg.allow_cross_node_tp)
    throw UsageError("--tp " + std::to_string(cfg.tp) + " --cp " + std::to_string(cfg.cp) + ": " + why +
                     ": tensor- and context-parallel groups must stay inside a node (start tp × cp ranks or more per "
                     "node, in rank order, or give --allow-cross-node-tp to run anyway)");
  if (world.rank() == 0) std::fprintf(stderr, "qwen3-pretrain: warning: %s (--allow-cross-node-tp)\n", why.c_str());
}

// mpirun or srun started this process (their environment): then MPI starts, whatever was asked.
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

// A plain process asking only for --plan, --help, --list-devices or --list-models needs no MPI: skipping its start keeps these
// fast and safe to run many at once (qwen3-sweep asks --plan about every cell, in parallel).
bool asks_nothing_of_mpi(int argc, char** argv) {
  if (launched_by_mpi()) return false;
  for (int i = 1; i < argc; ++i)
    for (const char* flag : {"--plan", "--help", "-h", "--list-devices"})
      if (std::strcmp(argv[i], flag) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const char* program = "qwen3-pretrain";
  if (asks_nothing_of_mpi(argc, argv))
    return run_main(program, [&] {
      auto cfg = parse_run_options(argc, argv);
      if (!cfg) return 0;
      if (!cfg->plan) throw UsageError("--plan, --help, --list-devices or --list-models: give one of them, or no such option for a run");
      return print_plan(*cfg, 1, true);
    });
  // MPI first: under mpirun every rank parses and validates identically, so every rank fails alike.
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world(MPI_COMM_WORLD);
  return run_main(world.rank() == 0 ? program : nullptr, [&] {
    auto cfg = parse_run_options(argc, argv);
    if (!cfg) return 0;
    if (cfg->plan) return print_plan(*cfg, world.size(), world.rank() == 0);
    cfg->validate(world.size());
    check_groups_inside_nodes(*cfg, world);
    return run_training(*cfg, world);
  });
}
