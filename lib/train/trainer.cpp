// The training loop (see trainer.h).
#include "train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <new>

#include "core/error.h"
#include "core/format.h"
#include "io/hf_checkpoint.h"
#include "train/checkpoint.h"
#include "dist/collective_errors.h"
#include "dist/groups.h"
#include "dist/layout.h"
#include "io/dataset.h"
#include "io/memory_tracer.h"
#include "io/results.h"
#include "io/system_info.h"
#include "train/engine.h"
#include "train/lr_schedule.h"
#include "train/memory_plan.h"
#include "train/pipeline_run.h"
#include "train/pipeline_schedule.h"
#include "model/pipeline_split.h"
#include "train/progress.h"
#include "train/sampler.h"
#include "train/termination.h"

namespace qwen3 {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Inputs and next-token labels for documents [count, L]: label[t] = token[t+1]; the last position has none.
void make_labels(const std::vector<std::int32_t>& tokens, std::int64_t L, std::vector<std::int32_t>& labels) {
  labels.resize(tokens.size());
  for (std::size_t d = 0; d < tokens.size() / static_cast<std::size_t>(L); ++d)
    for (std::int64_t t = 0; t < L; ++t)
      labels[d * L + t] = t + 1 < L ? tokens[d * L + t + 1] : cpu::kIgnoreLabel;
}

// A host allocation this process could not make (std::bad_alloc): what the results file records of it.
OutOfMemory host_out_of_memory() {
  return OutOfMemory("out of host memory", "host", last_failed_host_allocation_bytes(), resident_bytes());
}

// What the results file records of a run that ran out of memory (status "oom"): the allocator's details; for a
// std::bad_alloc that collectively() agreed on as a plain error, the host's — this process's failed request and
// resident bytes, or -1 (unknown) when it was another rank's ("rank N: " before its message).
void write_oom_details(ResultsWriter& results, const Error& e) {
  if (std::string(e.status()) != "oom") return;
  const std::string message = e.what();
  OutOfMemory details = host_out_of_memory();
  if (const auto* oom = dynamic_cast<const OutOfMemory*>(&e)) {
    details = *oom;
  } else if (message.rfind("rank ", 0) == 0) {  // another rank's: only its message came here
    const bool host = message.find("out of host memory") != std::string::npos;
    details = OutOfMemory(message, host ? "host" : "unknown", -1, -1);
  }
  results.write_attribute("oom_category", details.category);
  results.write_attribute("oom_requested_bytes", details.requested_bytes);
  results.write_attribute("oom_in_use_bytes", details.in_use_bytes);
}

struct TrainState {
  std::unique_ptr<DatasetReader> data;
  std::unique_ptr<Engine> engine;
  std::atomic<const Engine*> traced_engine{nullptr};  // the engine, for the tracer's thread, once it exists
  std::unique_ptr<MemoryTracer> tracer;               // last: stops before the engine goes
};

// The memory tracer, started with the run so that its trace covers initialisation: resident memory on the CPU, the
// engine's device bytes elsewhere (0 until the engine exists).
std::unique_ptr<MemoryTracer> start_tracer(const RunConfig& cfg, const std::atomic<const Engine*>& engine) {
  const bool on_cpu = cfg.device == "cpu";
  return std::make_unique<MemoryTracer>(
      [&engine, on_cpu]() -> std::int64_t {
        if (on_cpu) return resident_bytes();
        const Engine* e = engine.load();
        return e ? e->device_bytes_in_use() : 0;
      },
      std::chrono::milliseconds(cfg.memory_interval_ms));
}

// Collective (every rank calls it at the same point): each rank's memory samples since the last call, on rank 0
// in rank order (empty elsewhere). Bounded: a step's worth of samples per rank.
std::vector<std::vector<MemorySample>> gather_new_samples(Communicator& world, MemoryTracer& tracer) {
  std::vector<double> flat;
  for (const auto& s : tracer.take_new()) flat.push_back(s.time_s), flat.push_back(static_cast<double>(s.bytes));
  std::vector<std::vector<MemorySample>> per_rank;
  for (const auto& f : world.gather(flat, 0)) {
    per_rank.emplace_back();
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) per_rank.back().push_back({f[i], static_cast<std::int64_t>(f[i + 1])});
  }
  return per_rank;
}

// Rank 0 after a failure: the OOM details, its own memory samples not yet written (the other ranks' cannot be
// gathered now: they may be anywhere; theirs up to the last flush are in the file), the timings, the status.
// A failure to write these details (no host memory or disk left) must not keep the status from being written.
void finish_failed_run(ResultsWriter& results, const Error& e, MemoryTracer* tracer, int world_size, double init_s,
                       double first_step_s, double total_s) {
  const auto attempt = [](const std::function<void()>& write) {
    try {
      write();
    } catch (const std::exception&) {  // the run's own error is the one to report
    }
  };
  attempt([&] { write_oom_details(results, e); });
  if (tracer) {
    attempt([&] {
      std::vector<std::vector<MemorySample>> own(static_cast<std::size_t>(world_size));
      tracer->sample_now();  // the memory in use as the run failed
      own[0] = tracer->take_new();
      results.append_memory(own);
    });
  }
  attempt([&] { results.write_timings(init_s, first_step_s, total_s); });
  results.finish(e.status(), e.what());
}

// Where each rank's time went (/ranks, one row of `all` per rank: compute, pipeline wait, dp reduce, step seconds,
// then pp stage, tp rank, dp rank) and each pipeline stage's layers (/stages).
void write_rank_times(ResultsWriter& results, const std::vector<std::vector<double>>& all, int pp,
                      const std::vector<std::int64_t>& stage_layers, std::int64_t micro_steps) {
  std::vector<std::vector<double>> cols(all.at(0).size());
  for (const auto& r : all)
    for (std::size_t k = 0; k < cols.size(); ++k) cols[k].push_back(r[k]);
  const auto as_integers = [](const std::vector<double>& v) { return std::vector<std::int64_t>(v.begin(), v.end()); };
  results.write_values("ranks/compute_s", cols[0], "time in forward/backward (tensor-parallel collectives included), steps after the first");
  results.write_values("ranks/pipeline_wait_s", cols[1], "time in pipeline transfers, waiting for the neighbouring stages included (the bubble)");
  results.write_values("ranks/dp_reduce_s", cols[2], "time reducing gradients over data-parallel replicas");
  results.write_values("ranks/step_s", cols[3], "wall time of the steps after the first (the slowest rank's)");
  results.write_values("ranks/pp_stage", as_integers(cols[4]), "pipeline stage of each rank");
  results.write_values("ranks/tp_rank", as_integers(cols[5]), "tensor-parallel rank");
  results.write_values("ranks/dp_rank", as_integers(cols[6]), "data-parallel rank");
  std::vector<std::int64_t> first, end;
  for (int s = 0; s < pp; ++s) {
    const StageRange r = stage_range(stage_layers, s);
    first.push_back(r.first_layer);
    end.push_back(r.last_layer);
  }
  results.write_values("stages/first_layer", first, "first layer of each pipeline stage");
  results.write_values("stages/end_layer", end, "one past the last layer of each pipeline stage");
  const std::vector<double> bubble = {bubble_fraction(pp, static_cast<int>(micro_steps))};
  results.write_values("stages/bubble_formula", bubble, "1F1B's idle share with equal stages: (p - 1) / (m + p - 1)");
}

}  // namespace

int run_training(const RunConfig& cfg, MpiCommunicator& world) {
  const auto t_start = Clock::now();
  const std::string start_utc = utc_now();
  const int rank = world.rank(), W = world.size();
  const bool root = rank == 0;
  const ParallelLayout layout(W, cfg.tp, cfg.cp, cfg.pp);

  // The results file first (rank 0): a bad destination fails before any work, and leaves nothing behind.
  std::unique_ptr<ResultsWriter> results;
  collectively(world, root, [&] { results = std::make_unique<ResultsWriter>(cfg.out, cfg.overwrite); });
  // Ended from outside (mpirun stopping the job because another rank died or aborted, or Slurm cancelling it): rank 0
  // still records that in the results file. Every write to it holds results_mutex; `finished` once it is closed.
  std::mutex results_mutex;
  bool finished = false;
  auto locked = [&](const std::function<void()>& write) {
    const std::lock_guard<std::mutex> lock(results_mutex);
    if (results && !finished) write();
  };
  // With --save, SIGTERM/SIGUSR1 ask for a graceful stop: a checkpoint at the next step boundary, status "preempted".
  const TerminationWatch watch([&](int sig) {
    locked([&] {
      results->update_total_time(seconds_since(t_start));  // the rest as flushed at the last step
      results->finish("error", "terminated by signal " + std::to_string(sig) + " (" + strsignal(sig) +
                                   "): the job was ended from outside — by mpirun when another rank failed (its message "
                                   "is in the job's output), or by the scheduler");
      finished = true;
    });
  }, cfg.save.empty() ? 0.0 : cfg.preempt_grace_s);
  std::int64_t preempted_at = -1;  // the step after which a requested stop took place
  int preempt_signal = 0;

  const int local_rank = node_local_rank(world.comm());
  // The groups (Megatron's order: tensor-parallel ranks adjacent); the pipeline group ordered by stage.
  ParallelGroups groups = make_parallel_groups(world, layout);
  Communicator& dp_comm = *groups.dp;
  Communicator* tp_comm = groups.tp.get();
  Communicator* pp_comm = groups.pp.get();
  const int pp_rank = groups.coords.pp;
  const std::vector<std::int64_t> stage_layers = pipeline_layer_counts(cfg.model, cfg.pp, cfg.seq_len, cfg.pp_layers);
  TrainState st;
  double init_s = 0, first_step_s = 0;  // recorded in the results file even when the run fails
  bool in_loop = false;  // errors inside the loop are seen by one rank only: end the whole job (below)
  // Collective: every rank's new memory samples, the timings so far and the step (if any) into the results file, so
  // that whatever ends the run later, the file keeps them (docs/results.md).
  // Rank 0's write is agreed on (collectively): a write that fails there fails every rank alike, none left waiting.
  const auto flush_progress = [&](const StepRecord* step) {
    const auto samples = gather_new_samples(world, *st.tracer);
    collectively(world, root, [&] {
      locked([&] {
        results->append_memory(samples);
        results->write_timings(init_s, first_step_s, seconds_since(t_start));
        if (step) results->append_step(*step);
        results->flush();
      });
    });
  };
  // Any failure after the results file exists: rank 0 finishes it; inside the loop, the other ranks are ended too.
  const auto on_failure = [&](const Error& e) {
    try {
      if (root) {
        locked([&] {
          finish_failed_run(*results, e, st.tracer.get(), W, init_s, first_step_s, seconds_since(t_start));
          finished = true;
        });
      }
    } catch (const std::exception& w) {  // the run's own error stays the one reported
      std::fprintf(stderr, "qwen3-pretrain: could not finish %s: %s\n", results->partial_path().c_str(), w.what());
    }
    if (in_loop && W > 1) {
      std::fprintf(stderr, "qwen3-pretrain: error on rank %d: %s\n", rank, e.what());
      MpiSession::abort(static_cast<int>(e.code()));
    }
  };
  try {
    st.tracer = start_tracer(cfg, st.traced_engine);
    flush_progress(nullptr);  // every rank's trace exists from here on
    RunFacts facts;
    facts.git_commit = git_commit();
    facts.start_utc = start_utc;
    facts.world_size = W;
    facts.hostnames = world.all_gather(hostname());
    facts.library_versions = library_versions();
    // The memory plan of the rank that needs the most (with pipeline parallelism, its stage's; every rank of a stage
    // the same) and, with --recompute auto, the cheapest policy that fits: every rank decides alike.
    MemoryPlanInput in;
    in.model = cfg.model;
    in.micro_batch = cfg.micro_batch;
    in.seq_len = cfg.seq_len;
    in.tp = cfg.tp, in.dp = layout.dp(), in.pp = cfg.pp, in.cp = cfg.cp;
    in.shard_optimizer = cfg.shard_optimizer;
    in.stage_layers = cfg.pp_layers;
    in.micro_batches = cfg.micro_batches_per_step(W);
    std::int64_t device = 0;
    // The CPU backend takes --recompute as given, auto as none.
    RecomputePolicy recompute;
    collectively(world, true, [&] {
      if (cfg.device != "cuda") {
        recompute = choose_recompute(cfg.recompute == "auto" ? "none" : cfg.recompute,
                                     cfg.recompute == "auto" ? 0 : cfg.recompute_num_layers, cfg.offload_inputs, in, 0);
        return;
      }
      device = cfg.device_memory.empty() ? device_memory_bytes(cfg.device, local_rank)
                                         : parse_memory_size("--device-memory", cfg.device_memory);
      recompute = choose_recompute(cfg.recompute, cfg.recompute_num_layers, cfg.offload_inputs, in,
                                   device > 0 ? device : INT64_MAX);
      in.recompute = recompute;
    });
    collectively(world, root, [&] {
      locked([&] {
        results->write_facts(facts);
        results->write_config(cfg.key_values());
        results->write_attribute("recompute", std::string(recompute_name(recompute.mode)));
        results->write_attribute("recompute_num_layers", recompute.num_layers);
        results->write_attribute("offload_inputs", static_cast<std::int64_t>(recompute.offload_inputs));
        if (cfg.device == "cuda") {  // the plan beside the peak that will be measured
          const auto [worst_stage, plan] = plan_worst_stage(in);
          results->write_attribute("plan_peak_bytes", plan.total());
          results->write_attribute("plan_device_bytes", device);  // what the plan is checked against, even if refused
          results->write_attribute("plan_peak_stage", static_cast<std::int64_t>(worst_stage));
          for (const auto& [category, bytes] : plan.by_category()) results->write_attribute("plan_" + category + "_bytes", bytes);
          std::int64_t plan_pinned = 0;  // the stage that pins the most (the first: most micro-batches in flight)
          for (int s = 0; s < std::max(1, in.pp); ++s) {
            MemoryPlanInput one = in;
            one.stage = s;
            plan_pinned = std::max(plan_pinned, plan_cuda_rank_memory(one).host_pinned_bytes);
          }
          results->write_attribute("plan_host_pinned_bytes", plan_pinned);
          // Offloaded inputs are pinned host memory: every rank on this host pins its share.
          const std::int64_t ranks_here = static_cast<std::int64_t>(
              std::count(facts.hostnames.begin(), facts.hostnames.end(), facts.hostnames.front()));  // rank 0 runs this check
          const std::int64_t host = host_available_bytes();
          if (plan_pinned > 0 && host > 0 && plan_pinned * ranks_here > host && !cfg.force) {
            char msg[360];
            std::snprintf(msg, sizeof msg,
                          "--offload-inputs needs %.2f GiB of pinned host memory per rank, %lld ranks on this host: "
                          "%.2f GiB, and the host has %.2f GiB available: not allocating (--force tries anyway)",
                          plan_pinned / 1073741824.0, static_cast<long long>(ranks_here),
                          plan_pinned * ranks_here / 1073741824.0, host / 1073741824.0);
            throw PredictedOutOfMemory(msg);
          }
          // A plan that does not fit stops the run here, before any device memory is taken (--force runs anyway).
          const std::int64_t need = plan.total() + kRuntimeReserveBytes;
          if (device > 0 && need > device && !cfg.force) {
            char msg[320];
            std::snprintf(msg, sizeof msg,
                          "the memory plan needs %.2f GiB per rank (with a %.0f GiB runtime reserve), the device has "
                          "%.2f GiB: not allocating (qwen3-pretrain --plan shows where it goes; --force tries anyway)",
                          need / 1073741824.0, kRuntimeReserveBytes / 1073741824.0, device / 1073741824.0);
            throw PredictedOutOfMemory(msg);
          }
        }
      });
    });
    // Every rank validates the dataset before anything big is allocated.
    collectively(world, true, [&] {
      if (cfg.seq_len < 2) throw UsageError("--seq-len must be at least 2 (one next-token target)");
      st.data = std::make_unique<DatasetReader>(cfg.data, cfg.seq_len, cfg.model.vocab_size, cfg.global_batch);
    });
    collectively(world, true, [&] {
      EngineOptions eo;
      eo.seed = cfg.seed;
      eo.init_std = cfg.init_std;
      eo.local_rank = local_rank;
      eo.max_batch = cfg.micro_batch;
      eo.max_seq = cfg.seq_len;  // one rank per device: the device of this rank's place on its node
      eo.tp_comm = tp_comm;
      eo.pp_comm = pp_comm;
      eo.cp_comm = groups.cp.get();
      eo.dp_comm = &dp_comm;
      eo.shard_comm = cfg.cp > 1 ? groups.dp_cp.get() : nullptr;
      eo.shard_optimizer = cfg.shard_optimizer;
      eo.recompute = recompute;
      eo.stage = stage_range(stage_layers, pp_rank);
      eo.micro_batches = static_cast<int>(cfg.micro_batches_per_step(W));
      st.engine = make_engine(cfg.device, cfg.model, eo);
    });
    Engine& engine = *st.engine;
    st.traced_engine = &engine;
    const auto device_names = world.all_gather(engine.device_name());
    double pinned = static_cast<double>(engine.host_pinned_bytes());  // per rank: stages differ
    world.all_reduce_max(&pinned, 1);
    const auto pinned_max = static_cast<std::int64_t>(pinned);
    collectively(world, root, [&] {
      locked([&] {
        results->write_attribute("device_names", device_names);
        if (cfg.device == "cuda")  // the capacity beside the peaks: rank 0's device
          results->write_attribute("device_total_bytes", device_memory_bytes(cfg.device, local_rank));
        for (const auto& [category, bytes] : engine.device_bytes_by_category())
          results->write_attribute("memory_" + category + "_bytes", bytes);  // rank 0's device, by category
        results->write_attribute("memory_host_pinned_bytes", pinned_max);  // the rank that pins the most
      });
    });
    CheckpointRun ckpt_run;
    ckpt_run.model = cfg.model, ckpt_run.seed = cfg.seed, ckpt_run.global_batch = cfg.global_batch;
    ckpt_run.seq_len = cfg.seq_len, ckpt_run.num_documents = st.data->num_documents(), ckpt_run.layout = layout.describe();
    ckpt_run.lr = cfg.lr, ckpt_run.min_lr = cfg.min_lr, ckpt_run.warmup_steps = cfg.warmup_steps, ckpt_run.steps = cfg.steps;
    std::int64_t start_step = 0;
    // Rank 0 decides whether and from where to resume, and every rank takes its answer (the file system's view may
    // differ between nodes).
    std::string resume_from = cfg.resume;
    if (cfg.auto_resume)
      resume_from = world.all_gather(root && std::filesystem::exists(std::filesystem::path(cfg.save) / "latest") ? cfg.save
                                                                                                                  : std::string())[0];
    if (!resume_from.empty()) {  // weights, moments and the optimizer's step count; the data position is the step
      std::string dir;
      collectively(world, root, [&] { dir = resolve_checkpoint(resume_from); });
      dir = world.all_gather(dir)[0];
      std::string schedule_note;
      start_step = load_checkpoint(dir, engine, world, ckpt_run, &schedule_note);
      if (root && !schedule_note.empty()) std::printf("qwen3-pretrain: note: %s\n", schedule_note.c_str());
      collectively(world, true, [&] {
        // A run asked to continue itself (--auto-resume) whose checkpoint is its last step has nothing to do: it ends
        // well, so a requeued or re-run cell completes; so does a conversion (--export-hf at the checkpoint's step).
        if (start_step > cfg.steps || (start_step == cfg.steps && cfg.export_hf.empty() && !cfg.auto_resume))
          throw UsageError("--resume: '" + dir + "' is at step " + std::to_string(start_step) + " and --steps is " +
                           std::to_string(cfg.steps) + ": nothing left to run");
      });
      collectively(world, root, [&] {
        locked([&] {
          results->write_attribute("resumed_from", dir);
          results->write_attribute("resumed_from_step", start_step);
        });
        std::printf("qwen3-pretrain: resumed from %s at step %lld\n", dir.c_str(), static_cast<long long>(start_step));
      });
    }
    if (!cfg.init_from_hf.empty() && resume_from.empty()) {  // (a resumed run has its weights) every rank reads every
      // tensor and keeps its own part (set_weights)
      collectively(world, true, [&] {
        const HfCheckpoint hf(cfg.init_from_hf);
        hf.check_against(engine.params());
        for (const auto& p : engine.params().entries()) engine.set_weights(p.name, hf.read(p.name));
      });
    }

    init_s = seconds_since(t_start);
    flush_progress(nullptr);
    const std::int64_t L = cfg.seq_len, GB = cfg.global_batch, MB = cfg.micro_batch;
    const std::int64_t micro_steps = cfg.micro_batches_per_step(W);
    const double counted_tokens = static_cast<double>(GB * (L - 1));  // targets per step, all ranks
    const double flops_per_step = cfg.model.training_flops_per_sequence(L) * static_cast<double>(GB);
    const DocumentSampler sampler(st.data->num_documents(), GB, cfg.seed);
    const AdamWConfig adamw{cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay};
    const int dp_rank = layout.coords(rank).dp;
    if (root)
      std::printf("qwen3-pretrain: %s (%s parameters), %s, seq %lld, global batch %lld = %lld micro-batches of %lld "
                  "× %lld data-parallel ranks, %lld steps on %s\n",
                  cfg.model_source.c_str(), format_parameter_count(cfg.model.parameter_count()).c_str(), layout.describe().c_str(), (long long)L,
                  (long long)GB, (long long)micro_steps, (long long)MB, (long long)layout.dp(), (long long)cfg.steps,
                  engine.device_name().c_str());

    double later_steps_s = 0;
    std::vector<std::int32_t> tokens, labels;
    // Pipeline parallelism: every micro-batch of the step is read up front (each stage needs its shape, the first its
    // tokens, the last its labels) and run under 1F1B (train/pipeline_run.h).
    const bool pipelined = layout.pp() > 1;
    std::vector<std::vector<std::int32_t>> step_tokens(pipelined ? micro_steps : 0), step_labels(step_tokens.size());
    // Per-rank time over the steps after the first: compute, pipeline transfers and waits, data-parallel reduction.
    PipelineTimes pipe_times;
    double reduce_s = 0, step_sum_s = 0;
    in_loop = true;
    std::int64_t last_saved = resume_from.empty() ? -1 : start_step;  // the checkpoint it resumed is on disk
    for (std::int64_t step = start_step; step < cfg.steps; ++step) {
      const auto t0 = Clock::now();
      engine.zero_grad();
      double loss_sum[2] = {0, 0};  // Σ loss, Σ tokens counted
      const auto t_compute = Clock::now();
      PipelineTimes step_pipe;
      if (!pipelined) {
        for (std::int64_t m = 0; m < micro_steps; ++m) {
          tokens = st.data->read_documents(sampler.micro_batch(step, dp_rank, layout.dp(), m, MB));
          make_labels(tokens, L, labels);
          const MicroBatch mb{tokens.data(), labels.data(), MB, L};
          const auto l = engine.forward_backward(mb, 1.0 / counted_tokens);
          loss_sum[0] += l.sum;
          loss_sum[1] += static_cast<double>(l.count);
        }
        engine.synchronize();
        step_pipe.compute_s = seconds_since(t_compute);
      } else {
        for (std::int64_t m = 0; m < micro_steps; ++m) {
          step_tokens[m] = st.data->read_documents(sampler.micro_batch(step, dp_rank, layout.dp(), m, MB));
          make_labels(step_tokens[m], L, step_labels[m]);
        }
        const auto batch = [&](int m) { return MicroBatch{step_tokens[m].data(), step_labels[m].data(), MB, L}; };
        const auto l = run_pipeline_step(engine, pp_rank, layout.pp(), static_cast<int>(micro_steps), batch,
                                         1.0 / counted_tokens, step_pipe);
        loss_sum[0] = l.sum;
        loss_sum[1] = static_cast<double>(l.count);
        pp_comm->all_reduce_sum(loss_sum, 2);  // the last stage's loss, on every stage
      }
      const auto t_reduce = Clock::now();
      engine.reduce_gradients(dp_comm);
      dp_comm.all_reduce_sum(loss_sum, 2);
      engine.synchronize();
      const bool timed = step > start_step || cfg.steps - start_step == 1;  // the first pays for warm-up, unless alone
      if (timed) {
        pipe_times.compute_s += step_pipe.compute_s;
        pipe_times.p2p_s += step_pipe.p2p_s;
        reduce_s += seconds_since(t_reduce);
      }
      const double norm = engine.grad_norm();
      const double clip_scale = (cfg.clip_grad > 0 && norm > cfg.clip_grad) ? cfg.clip_grad / (norm + 1e-6) : 1.0;
      const double lr = learning_rate(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr);
      engine.optimizer_step(lr, adamw, clip_scale);
      if (step + 1 == cfg.steps) engine.synchronize();  // an overlapped optimizer step ends inside the next step
      st.tracer->sample_now();
      double dt = seconds_since(t0);
      world.all_reduce_max(&dt, 1);  // the step takes as long as its slowest rank
      (step == start_step ? first_step_s : later_steps_s) += dt;
      if (timed) step_sum_s += dt;

      const StepRecord rec{loss_sum[0] / loss_sum[1], norm, lr, dt, static_cast<double>(GB * L) / dt,
                           flops_per_step / W / dt / 1e12};
      flush_progress(&rec);
      if (root) {
        const double mean = step > start_step ? later_steps_s / static_cast<double>(step - start_step) : first_step_s;
        std::printf("%s\n", progress_line(step + 1, cfg.steps, rec, st.tracer->peak_bytes(),
                                          mean * static_cast<double>(cfg.steps - step - 1)).c_str());
        std::fflush(stdout);
      }
      if (!cfg.save.empty() && cfg.save_interval > 0 && (step + 1) % cfg.save_interval == 0 && step + 1 < cfg.steps) {
        save_checkpoint(cfg.save, step + 1, engine, world, ckpt_run, static_cast<int>(cfg.save_keep));
        last_saved = step + 1;
      }
      if (!cfg.save.empty() && step + 1 < cfg.steps) {  // a stop asked of any rank is taken by all at this boundary
        double asked = watch.requested();
        world.all_reduce_max(&asked, 1);
        if (asked > 0) {
          preempted_at = step + 1;
          preempt_signal = static_cast<int>(asked);
          break;
        }
      }
    }

    in_loop = false;
    const std::int64_t end_step = preempted_at >= 0 ? preempted_at : cfg.steps;
    if (!cfg.save.empty() && last_saved != end_step) {
      save_checkpoint(cfg.save, end_step, engine, world, ckpt_run, static_cast<int>(cfg.save_keep));
      if (root) std::printf("qwen3-pretrain: saved a checkpoint of step %lld under %s\n", static_cast<long long>(end_step), cfg.save.c_str());
    }
    if (!cfg.export_hf.empty() && preempted_at < 0) {  // the final weights, gathered tensor by tensor, rank 0 writes
      collectively(world, true, [&] {
        HfExportOptions o;
        o.dtype = cfg.export_dtype == "fp32" ? "F32" : "BF16";
        o.overwrite = cfg.overwrite;
        write_hf_checkpoint(cfg.export_hf, cfg.model, engine.params(),
                            [&](const std::string& name) { return engine.weights(name); }, root, o);
      });
      if (root) std::printf("qwen3-pretrain: exported the weights to %s (Hugging Face format)\n", cfg.export_hf.c_str());
    }
    // Per-rank timings of the steps after the first (all of them for a one-step run: then the first step's).
    {
      const std::vector<double> mine = {pipe_times.compute_s, pipe_times.p2p_s, reduce_s, step_sum_s,
                                        static_cast<double>(pp_rank), static_cast<double>(layout.coords(rank).tp),
                                        static_cast<double>(dp_rank)};
      const auto all = world.gather(mine, 0);
      collectively(world, root, [&] { locked([&] { write_rank_times(*results, all, layout.pp(), stage_layers, micro_steps); }); });
    }
    st.tracer->stop();
    flush_progress(nullptr);  // the rest of every rank's trace, the final timings
    if (root) {
      locked([&] {
        if (preempted_at < 0) {
          results->finish("ok", "");
        } else {
          results->write_attribute("preempted_at_step", preempted_at);
          results->finish("preempted", "stopped by signal " + std::to_string(preempt_signal) + " (" + strsignal(preempt_signal) +
                                           ") after step " + std::to_string(preempted_at) + " of " + std::to_string(cfg.steps) +
                                           "; checkpoint under " + cfg.save + " (--resume or --auto-resume continues it)");
        }
        finished = true;
      });
      std::printf("qwen3-pretrain: wrote %s\n", cfg.out.c_str());
      if (preempted_at >= 0)
        std::printf("qwen3-pretrain: preempted after step %lld of %lld; the checkpoint is under %s\n",
                    static_cast<long long>(preempted_at), static_cast<long long>(cfg.steps), cfg.save.c_str());
    }
    return preempted_at >= 0 ? static_cast<int>(ExitCode::preempted) : 0;
  } catch (const Error& e) {
    on_failure(e);
    throw;
  } catch (const std::bad_alloc&) {
    const OutOfMemory oom = host_out_of_memory();
    on_failure(oom);
    throw oom;
  } catch (const std::exception& e) {  // anything else (a library's own exception): recorded as an internal error
    on_failure(InternalError(e.what()));
    throw;
  }
}

}  // namespace qwen3
