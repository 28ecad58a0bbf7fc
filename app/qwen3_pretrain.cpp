// qwen3-pretrain: the training entry point. Parses options, validates them against the job, runs lib/train.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/main_wrapper.h"
#include "common/run_options.h"
#include "core/error.h"
#include "dist/layout.h"
#include "dist/mpi_communicator.h"
#include "io/system_info.h"
#include "model/pipeline_split.h"
#include "train/calibration.h"
#include "train/fp8_estimate.h"
#include "train/memory_plan.h"
#include "train/progress.h"
#include "train/trainer.h"

using namespace qwen3;

namespace {

// --plan's calibration: --calibration, or the committed one of --device-memory's GPU name (none for a bare size).
std::optional<Calibration> plan_calibration(const RunConfig& cfg) {
  if (!cfg.calibration.empty()) return load_calibration(cfg.calibration);
  const std::string name = cfg.device_memory.empty() ? kDefaultPlanDevice : cfg.device_memory;
  for (const auto& g : known_gpus())
    if (name == g.name) {
      const auto path = find_calibration(gpu_kind_of(g.bytes));
      return path ? std::optional<Calibration>(load_calibration(*path)) : std::nullopt;
    }
  return std::nullopt;
}

// The device --plan plans for: --device-memory; else the card --calibration was measured on (a plan of one card's
// memory priced on another's kernels would answer neither); else kDefaultPlanDevice.
std::string plan_device(const RunConfig& cfg, const std::optional<Calibration>& calibration) {
  if (!cfg.device_memory.empty()) return cfg.device_memory;
  if (calibration && !cfg.calibration.empty())
    for (const auto& g : known_gpus())
      if (calibration->kind == g.name) return g.name;
  return kDefaultPlanDevice;
}

// A long description the calibration file holds (`field`): its first clause and where the rest is; a short one whole.
std::string brief(const std::string& text, const char* field) {
  if (text.size() <= 110) return text;
  std::string b = text.substr(0, text.find_first_of(":;(", 20));
  while (!b.empty() && (b.back() == ' ' || b.back() == ',')) b.pop_back();
  return b.size() < text.size() ? b + " (more in the calibration's `" + field + "`)" : text;
}

// The predicted step for people: its time, throughput and parts; or, with an operation the calibration lacks, no
// number at all but what is missing and how to measure it (fits: the plan fits; else nothing is worth measuring).
std::string describe_prediction(const PlannedRun& in, const StepPrediction& p, const Calibration& c, bool fits) {
  if (!p.priced()) {
    std::string out = "  predicted step    " + unpriced_advice(in, p, c, fits).text + "\n      not in the calibration: ";
    for (std::size_t i = 0; i < p.missing.size(); ++i) out += (i ? "; " : "") + p.missing[i];
    return out + "\n";
  }
  const StepTime& t = p.time;
  char head[200], parts[400];  // the calibration's description, of any length, goes between them
  std::snprintf(head, sizeof head, "  predicted step    %.3f s on %s: %.0f tokens/s, MFU %.1f%%%s (calibration: ", t.step,
                c.kind.c_str(), p.tokens_per_s, 100 * p.mfu, mfu_basis(in.fp8));
  std::snprintf(parts, sizeof parts,
                ")\n      per micro-batch on the slowest stage: forward %.4f s, backward %.4f s (recomputation %.4f s); "
                "exposed communication %.4f s\n"
                "      × %lld micro-batches; pipeline fill and drain %.4f s; gradient reduction %.4f s; optimizer "
                "(waited for) %.4f s\n",
                t.forward, t.backward, t.recompute, t.exposed_comm, static_cast<long long>(t.micro_batches),
                t.pipeline, t.data_parallel, t.optimizer);
  std::string out = head + brief(c.measured, "measured") + parts + "      rests on:\n";
  for (const auto& [term, source] : p.sources) {  // a long source held in the file: its first clause, the file the rest
    const char* field = term == "collectives" ? "collectives.source" : term == "in-step factors" ? "in_step.source" : "";
    out += "        " + term + ": " + (*field ? brief(source, field) : source) + "\n";
  }
  return out;
}

// --format json: "predicted" (null without a calibration or with an unpriced operation) and "unpriced" (null unless
// the calibration lacks an operation of the layout: then what, and how to measure it).
void add_prediction_json(nlohmann::json& j, const PlannedRun& in, const std::optional<StepPrediction>& p,
                         const Calibration* c, bool fits) {
  j["predicted"] = nullptr;
  j["unpriced"] = nullptr;
  if (!p) return;
  if (!p->priced()) {
    const UnpricedAdvice a = unpriced_advice(in, *p, *c, fits);
    j["unpriced"] = {{"calibration", c->kind}, {"operations", p->missing}, {"command", a.command}, {"adopt", a.adopt},
                      {"advice", a.text}};
    return;
  }
  const StepTime& t = p->time;
  j["predicted"] = {{"calibration", c->kind}, {"calibration_measured", c->measured}, {"step_s", t.step},
                    {"tokens_per_s", p->tokens_per_s}, {"mfu", p->mfu}, {"forward_s", t.forward},
                    {"backward_s", t.backward}, {"recompute_s", t.recompute}, {"exposed_comm_s", t.exposed_comm},
                    {"micro_batches", t.micro_batches}, {"pipeline_s", t.pipeline},
                    {"data_parallel_s", t.data_parallel}, {"optimizer_s", t.optimizer}};
  nlohmann::json sources = nlohmann::json::object();
  for (const auto& [term, source] : p->sources) sources[term] = source;
  j["predicted"]["sources"] = sources;
  j["predicted"]["estimated_operations"] = p->estimated;  // priced from another card's calibration (--estimate-from)
  nlohmann::json ops = nlohmann::json::array();
  for (const OpPrice& o : p->operations)
    ops.push_back({{"key", o.key}, {"tokens", o.tokens}, {"alone_s", o.alone_s}, {"in_step_group", o.in_step_group},
                   {"in_step_factor", o.in_step_factor}, {"calls", o.calls}});
  j["predicted"]["operations"] = ops;
}

// --plan: no dataset, no output, no device, only the arithmetic of train/memory_plan.h. Exit 0 fits, 3 does not.
int print_plan(const RunConfig& cfg, int job_ranks, bool print) {
  const int ranks = cfg.plan_world_size > 0 ? cfg.plan_world_size : job_ranks;
  const bool cuda = cfg.device == "cuda";
  cfg.validate_layout(ranks, cuda);  // the rules a run on this backend applies at start (qwen3-sweep relies on them)
  const ParallelLayout layout(ranks, cfg.tp, cfg.cp, cfg.pp);
  PlannedRun in = cfg.plan_input(ranks);
  const std::optional<Calibration> calibration = cuda ? plan_calibration(cfg) : std::nullopt;
  const std::int64_t device = parse_memory_size("--device-memory", plan_device(cfg, calibration));
  apply_calibration(in, calibration ? &*calibration : nullptr);
  // The node: --ranks-per-node of the plan's ranks share its host memory (--host-memory; unchecked when not given)
  // and, for the host optimizer's threads, the calibrated host's cores.
  if (cfg.plan_ranks_per_node > ranks)
    throw UsageError("--ranks-per-node " + std::to_string(cfg.plan_ranks_per_node) + " is more than the plan's " +
                     std::to_string(ranks) + " ranks");
  HostCheck host;
  host.ranks_on_host = cfg.plan_ranks_per_node > 0 ? cfg.plan_ranks_per_node : std::min(ranks, kPlanRanksPerNode);
  host.host_bytes = cfg.host_memory.empty() ? 0 : parse_byte_size("--host-memory", cfg.host_memory);
  in.recompute = choose_memory_policy(cfg.memory_request(), in, device, host.pinnable());
  const auto [worst, plan] = plan_worst_stage(in);
  host.pinned = max_pinned_bytes(in);
  const bool fits = plan.peak() <= device && host.fits();
  std::optional<StepPrediction> predicted;
  if (!cfg.estimate_from.empty() && !calibration)
    throw UsageError("--estimate-from " + cfg.estimate_from + ": no calibration to estimate into (--calibration, or a "
                     "--device-memory GPU with one)");
  const std::optional<Calibration> reference =
      calibration && !cfg.estimate_from.empty() ? std::optional(load_estimate_source(cfg.estimate_from, *calibration))
                                                : std::nullopt;
  if (calibration)
    predicted = predict_step(in, *calibration, std::max<int>(1, calibration->cpu_threads / host.ranks_on_host),
                             reference ? &*reference : nullptr);
  if (print && cfg.format == "json") {
    auto j = nlohmann::json::parse(plan_json(in, worst, plan, device, host));
    add_prediction_json(j, in, predicted, calibration ? &*calibration : nullptr, fits);
    std::printf("%s\n", j.dump().c_str());
  } else if (print) {
    std::string who = "every rank holds the same";
    if (cfg.pp > 1) {
      who = "per pipeline stage:";
      for (int s = 0; s < cfg.pp; ++s) {
        PlannedRun one = in;
        one.stage = s;
        const StageRange r = planned_rank(one).stage;
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
    std::printf("qwen3-pretrain --plan: %s, %s, seq %lld, micro-batch %lld, %s, recomputation %s; %s:\n%s",
                cfg.model_source.c_str(), cfg.precision_label().c_str(), static_cast<long long>(cfg.seq_len),
                static_cast<long long>(cfg.micro_batch), layout.describe().c_str(),
                in.recompute.describe().c_str(), who.c_str(), describe_plan(plan, device, host).c_str());
    if (predicted) std::printf("%s", describe_prediction(in, *predicted, *calibration, fits).c_str());
    else std::printf("  predicted step    none: no calibration of this GPU kind (qwen3-calibrate measures one; "
                     "--calibration FILE)\n");
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
    for (const char* flag : {"--plan", "--help", "-h", "--list-devices", "--list-models"})
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
