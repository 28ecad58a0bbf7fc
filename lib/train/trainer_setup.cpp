// The training run's set-up steps (train/trainer_phases.h): the run's facts and the memory check before anything big
// is allocated, then the dataset and the engine.
#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "dist/collective_errors.h"
#include "io/system_info.h"
#include "train/calibration.h"
#include "train/fp8_estimate.h"
#include "train/memory_plan.h"
#include "train/trainer_phases.h"

namespace qwen3::trainer {
namespace {

// What the results file records of where and when the run ran.
RunFacts run_facts(TrainingRun& run, const std::string& start_utc) {
  RunFacts facts;
  facts.git_commit = git_commit();
  facts.start_utc = start_utc;
  facts.world_size = run.W;
  facts.hostnames = run.hosts;
  facts.library_versions = library_versions();
  return facts;
}

// The GPU kind's calibration (train/calibration.h): --calibration, or the committed calibration/<kind>.json of the
// device's kind (--device-memory's GPU, or the device's own memory); none for the CPU backend or an uncalibrated kind.
std::optional<Calibration> run_calibration(const RunConfig& cfg, std::int64_t device) {
  if (cfg.device != "cuda") return std::nullopt;
  if (!cfg.calibration.empty()) return load_calibration(cfg.calibration);
  const auto path = find_calibration(gpu_kind_of(device));
  return path ? std::optional<Calibration>(load_calibration(*path)) : std::nullopt;
}

// The host memory a run's ranks pin from: --host-memory, or this host's available memory (0: unknown).
std::int64_t run_host_bytes(const RunConfig& cfg) {
  return cfg.host_memory.empty() ? host_available_bytes() : parse_byte_size("--host-memory", cfg.host_memory);
}

// Collective: with --recompute auto, the cheapest policy that fits `device` bytes (set here: the device's memory or
// --device-memory) and the host memory a rank may pin; every rank decides from the same figures (the smallest of every
// rank's), so every rank decides alike. The CPU backend takes --recompute as given, auto as none.
// The runtime reserve is the calibration's (measured) when the device's kind has one.
MemoryPolicy choose_policy(TrainingRun& run, PlannedRun& in, std::int64_t& device,
                              std::optional<Calibration>& calibration) {
  const RunConfig& cfg = run.cfg;
  MemoryPolicy recompute;
  constexpr double kUnknown = 1e300;  // no device figure (no GPU visible: the engine says why)
  double limits[2] = {0, 0};  // −device bytes, −pinnable host bytes per rank: their maximum over ranks is the minimum
  collectively(run.world, true, [&] {
    if (cfg.device != "cuda") return;
    const std::int64_t d = cfg.device_memory.empty() ? device_memory_bytes(cfg.device, run.local_rank)
                                                     : parse_memory_size("--device-memory", cfg.device_memory);
    limits[0] = -static_cast<double>(d > 0 ? d : kUnknown);
    limits[1] = -static_cast<double>(pinnable_bytes_per_rank(run_host_bytes(cfg), run.local_size));
  });
  run.world.all_reduce_max(limits, 2);
  collectively(run.world, true, [&] {
    MemoryRequest r = cfg.memory_request();
    if (cfg.device != "cuda") {
      if (r.recompute == "auto") r.recompute = "none", r.num_layers = 0;
      recompute = choose_memory_policy(r, in, 0, 0);
      return;
    }
    device = -limits[0] >= kUnknown ? 0 : static_cast<std::int64_t>(-limits[0]);
    calibration = run_calibration(cfg, device);
    apply_calibration(in, calibration ? &*calibration : nullptr);
    recompute = choose_memory_policy(r, in, device > 0 ? device : INT64_MAX, static_cast<std::int64_t>(-limits[1]));
    in.recompute = recompute;
  });
  return recompute;
}

// Offloaded inputs and an offloaded optimizer are pinned host memory: every rank on this host pins its share (rank 0
// runs this check).
void check_pinned_memory(std::int64_t plan_pinned, const RunFacts& facts, const RunConfig& cfg) {
  const auto& names = facts.hostnames;
  const std::int64_t ranks_here = std::count(names.begin(), names.end(), names.front());
  const HostCheck check{plan_pinned, run_host_bytes(cfg), ranks_here};
  const std::int64_t host = check.host_bytes;
  if (!check.fits() && !cfg.force) {
    char msg[360];
    std::snprintf(msg, sizeof msg,
                  "the plan pins %.2f GiB of host memory per rank (offloaded inputs or optimizer), %lld ranks on this "
                  "host: %.2f GiB, and the host has %.2f GiB %s: not allocating (--force tries anyway)",
                  plan_pinned / 1073741824.0, static_cast<long long>(ranks_here),
                  plan_pinned * ranks_here / 1073741824.0, host / 1073741824.0,
                  cfg.host_memory.empty() ? "available" : "(--host-memory)");
    throw PredictedOutOfMemory(msg);
  }
}

// A plan that does not fit stops the run here, before any device memory is taken (--force runs anyway).
void check_device_memory(const MemoryPlan& plan, std::int64_t device, bool force) {
  const std::int64_t need = plan.peak();
  if (device > 0 && need > device && !force) {
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "the memory plan needs %.2f GiB per rank (with a %.2f GiB runtime reserve), the device has "
                  "%.2f GiB: not allocating (qwen3-pretrain --plan shows where it goes; --force tries anyway)",
                  need / 1073741824.0, plan.reserve() / 1073741824.0, device / 1073741824.0);
    throw PredictedOutOfMemory(msg);
  }
}

// Rank 0, CUDA: the plan beside the peak that will be measured, then the checks against the host and the device.
void record_and_check_plan(ResultsWriter& results, const RunConfig& cfg, const PlannedRun& in,
                           std::int64_t device, const RunFacts& facts) {
  const auto [worst_stage, plan] = plan_worst_stage(in);
  results.write_attribute("plan_peak_bytes", plan.total());
  results.write_attribute("plan_reserve_bytes", plan.reserve());  // outside the allocator: the device's figure is beside
  results.write_attribute("plan_device_bytes", device);  // what the plan is checked against, even if refused
  results.write_attribute("plan_peak_stage", static_cast<std::int64_t>(worst_stage));
  for (const auto& [category, bytes] : plan.by_category()) results.write_attribute("plan_" + category + "_bytes", bytes);
  const std::int64_t plan_pinned = max_pinned_bytes(in);
  results.write_attribute("plan_host_pinned_bytes", plan_pinned);
  check_pinned_memory(plan_pinned, facts, cfg);
  check_device_memory(plan, device, cfg.force);
}

// Rank 0, CUDA with a calibration: the predicted step, beside the measured one the run will record; none when the
// calibration lacks an operation of the run (a step with an operation priced 0 is no prediction). estimate_from:
// --estimate-from (the FP8 kernels c lacks estimated from that card's; attribute predicted_estimated_from names it).
void record_prediction(ResultsWriter& results, const PlannedRun& in, const Calibration& c, int cores_per_rank,
                       const std::string& estimate_from) {
  const std::optional<Calibration> reference =
      estimate_from.empty() ? std::nullopt : std::optional(load_estimate_source(estimate_from, c));
  const StepPrediction p = predict_step(in, c, cores_per_rank, reference ? &*reference : nullptr);
  results.write_attribute("calibration", c.kind + " (" + c.measured + ")");
  if (!p.priced()) return;
  if (!p.estimated.empty()) results.write_attribute("predicted_estimated_from", reference->kind);
  results.write_attribute("predicted_step_s", p.time.step);
  results.write_attribute("predicted_tokens_per_s", p.tokens_per_s);
  results.write_attribute("predicted_mfu", p.mfu);
}

}  // namespace

// The memory plan is that of the rank that needs the most (with pipeline parallelism, its stage's; every rank of a
// stage the same).
MemoryPolicy check_memory(TrainingRun& run, const std::string& start_utc) {
  const RunConfig& cfg = run.cfg;
  const RunFacts facts = run_facts(run, start_utc);
  // What ran, where, first: a run that fails from here on (no GPU, a plan that does not fit) is still a cell a
  // report can place.
  collectively(run.world, run.root, [&] {
    run.results.write([&](ResultsWriter& results) {
      results.write_facts(facts);
      results.write_config(cfg.key_values());
    });
  });
  PlannedRun in = run.cfg.plan_input(run.W);
  std::int64_t device = 0;
  std::optional<Calibration> calibration;
  const MemoryPolicy recompute = choose_policy(run, in, device, calibration);
  collectively(run.world, run.root, [&] {
    run.results.write([&](ResultsWriter& results) {
      results.write_attribute("recompute", std::string(recompute_name(recompute.mode)));
      results.write_attribute("recompute_num_layers", recompute.num_layers);
      results.write_attribute("offload_inputs", static_cast<std::int64_t>(recompute.offload_inputs));
      results.write_attribute("offload_optimizer", recompute.offload_optimizer);
      if (cfg.precision == "fp8")
        results.write_attribute("fp8_weights", std::string(recompute.fp8_weights_per_layer ? "per-layer" : "kept"));
      if (cfg.device == "cuda" && !calibration && !cfg.estimate_from.empty())
        throw UsageError("--estimate-from " + cfg.estimate_from + ": this device's kind has no calibration to "
                         "estimate into (--calibration FILE)");
      if (cfg.device == "cuda" && calibration)
        record_prediction(results, in, *calibration, cores_per_rank(run.local_size), cfg.estimate_from);
      if (cfg.device == "cuda") record_and_check_plan(results, cfg, in, device, facts);
    });
  });
  return recompute;
}

namespace {

// Collective, CUDA: every rank's device bytes by category as its allocator holds them, beside the plan of its own
// pipeline stage (ranks/memory_<category>_bytes, ranks/plan_<category>_bytes): where a rank departs from the plan.
void record_rank_memory(TrainingRun& run, const Engine& engine, const MemoryPolicy& recompute) {
  PlannedRun in = run.cfg.plan_input(run.W);
  in.recompute = recompute;
  in.stage = run.groups.coords.pp, in.cp_rank = run.groups.coords.cp;
  in.optimizer_shards = engine.optimizer_shards();
  std::vector<double> mine;
  std::vector<std::string> categories;
  for (const auto& [category, bytes] : engine.device_bytes_by_category()) {
    mine.push_back(static_cast<double>(bytes));
    categories.push_back(category);
  }
  for (const auto& [category, bytes] : plan_cuda_rank_memory(in).by_category()) mine.push_back(static_cast<double>(bytes));
  const auto all = run.world.gather(mine, 0);
  collectively(run.world, run.root, [&] {
    run.results.write([&](ResultsWriter& results) {
      for (std::size_t c = 0; c < categories.size(); ++c)
        for (const char* source : {"memory", "plan"}) {
          const std::size_t k = c + (source[0] == 'p' ? categories.size() : 0);
          std::vector<std::int64_t> per_rank;
          for (const auto& r : all) per_rank.push_back(static_cast<std::int64_t>(r.at(k)));
          results.write_values("ranks/" + std::string(source) + "_" + categories[c] + "_bytes", per_rank,
                               source[0] == 'm' ? "device bytes of this category in the rank's allocator after start-up"
                                                : "the memory plan of the rank's pipeline stage, this category");
        }
    });
  });
}

}  // namespace

void create_dataset_and_engine(TrainingRun& run, const MemoryPolicy& recompute) {
  const RunConfig& cfg = run.cfg;
  // Every rank validates the dataset before anything big is allocated.
  collectively(run.world, true, [&] {
    if (cfg.seq_len < 2) throw UsageError("--seq-len must be at least 2 (one next-token target)");
    run.st.data = std::make_unique<DatasetReader>(cfg.data, cfg.seq_len, cfg.model.vocab_size, cfg.global_batch);
  });
  collectively(run.world, true, [&] {
    EngineOptions eo;
    eo.seed = cfg.seed;
    eo.init_std = cfg.init_std;
    eo.local_rank = run.local_rank;
    eo.max_batch = cfg.micro_batch;
    eo.max_seq = cfg.seq_len;  // one rank per device: the device of this rank's place on its node
    eo.tp_comm = run.groups.tp.get();
    eo.pp_comm = run.groups.pp.get();
    eo.cp_comm = run.groups.cp.get();
    eo.dp_comm = run.groups.dp.get();
    eo.shard_comm = cfg.cp > 1 ? run.groups.dp_cp.get() : nullptr;
    eo.shard_optimizer = cfg.shard_optimizer;
    eo.cudnn_attention = cfg.attention == "cudnn";
    eo.fp8 = cfg.precision == "fp8";
    eo.fp8_delayed = cfg.fp8_delayed();
    eo.comm_sm_margin = cfg.comm_sm_margin;
    eo.gemm_autotune = cfg.gemm_autotune;
    eo.shared_gpu_staging = cfg.shared_gpu_staging;
    eo.op_times = cfg.op_times;
    eo.recompute = recompute;
    eo.host_threads = cores_per_rank(run.local_size);
    eo.stage_layers = run.stage_layers;
    eo.micro_batches = static_cast<int>(cfg.micro_batches_per_step(run.W));
    run.st.engine = make_engine(cfg.device, cfg.model, eo);
  });
  Engine& engine = *run.st.engine;
  run.st.traced_engine = &engine;
  const auto device_names = run.world.all_gather(engine.device_name());
  double pinned = static_cast<double>(engine.host_pinned_bytes());  // per rank: stages differ
  run.world.all_reduce_max(&pinned, 1);
  const auto pinned_max = static_cast<std::int64_t>(pinned);
  collectively(run.world, run.root, [&] {
    run.results.write([&](ResultsWriter& results) {
      results.write_attribute("device_names", device_names);
      if (cfg.device == "cuda")  // the capacity beside the peaks: rank 0's device
        results.write_attribute("device_total_bytes", device_memory_bytes(cfg.device, run.local_rank));
      for (const auto& [category, bytes] : engine.device_bytes_by_category())
        results.write_attribute("memory_" + category + "_bytes", bytes);  // rank 0's device, by category
      results.write_attribute("memory_host_pinned_bytes", pinned_max);  // the rank that pins the most
    });
  });
  if (cfg.device == "cuda") record_rank_memory(run, engine, recompute);
}

}  // namespace qwen3::trainer
