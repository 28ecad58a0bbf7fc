// The training run (see trainer.h), in steps (train/trainer_phases.h): memory check, restore, the step loop with its
// checkpoints and pre-emption, summary; the results file behind one owner (train/results_owner.h).
#include "train/trainer.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>
#include <utility>

#include "core/error.h"
#include "dist/rank_watch.h"
#include "io/system_info.h"
#include "model/pipeline_split.h"
#include "train/trainer_phases.h"

namespace qwen3 {
namespace trainer {

TrainingRun::TrainingRun(const RunConfig& cfg, MpiCommunicator& world, const ParallelLayout& layout,
                         ResultsOwner& results, std::vector<std::string> hosts)
    : cfg(cfg),
      world(world),
      layout(layout),
      results(results),
      rank(world.rank()),
      W(world.size()),
      root(rank == 0),
      local_rank(node_local_rank(world.comm())),
      local_size(node_local_size(world.comm())),
      hosts(std::move(hosts)),
      groups(make_parallel_groups(world, layout)),
      stage_layers(pipeline_layer_counts(cfg.model, cfg.pp, cfg.seq_len, cfg.pp_layers)) {}

// Resident memory on the CPU, the engine's device bytes elsewhere (0 until the engine exists); beside them the
// device's memory in use as the driver counts it, where the engine has a device.
std::unique_ptr<MemoryTracer> start_tracer(const RunConfig& cfg, const std::atomic<const Engine*>& engine) {
  const bool on_cpu = cfg.device == "cpu";
  return std::make_unique<MemoryTracer>(
      [&engine, on_cpu]() -> std::int64_t {
        if (on_cpu) return resident_bytes();
        const Engine* e = engine.load();
        return e ? e->device_bytes_in_use() : 0;
      },
      std::chrono::milliseconds(cfg.memory_interval_ms),
      [&engine]() -> std::int64_t {  // the device's own figure, once the engine exists (GPU runs)
        const Engine* e = engine.load();
        return e ? e->device_used_bytes() : -1;
      });
}

}  // namespace trainer

// How long rank 0 leaves mpirun to end a job after a rank was lost before it ends the job itself.
constexpr double kLostRankGraceSeconds = 20;

int run_training(const RunConfig& cfg, MpiCommunicator& world) {
  using namespace trainer;
  const auto t_start = Clock::now();
  const std::string start_utc = utc_now();
  const ParallelLayout layout(world.size(), cfg.tp, cfg.cp, cfg.pp);
  // The results file first (rank 0): a bad destination fails before any work, and leaves nothing behind.
  ResultsOwner results(cfg.out, cfg.overwrite, world, t_start);
  // A rank that dies, or a node: rank 0 names it in the results file — when mpirun tears the job down (below), or,
  // if nothing has ended the job kLostRankGraceSeconds later, by ending it itself.
  std::vector<std::string> hosts = world.all_gather(hostname());  // every rank's, once
  RankWatch liveness(world, hosts, kLostRankGraceSeconds, [&](const std::string& what) {
    results.finish_lost_rank(what + "; the job was ended by rank 0");
    std::fprintf(stderr, "qwen3-pretrain: %s: ending the job\n", what.c_str());
    std::_Exit(static_cast<int>(ExitCode::internal));
  });
  // Ended from outside (mpirun stopping the job because another rank died or aborted, or Slurm cancelling it): rank 0
  // still records that in the results file, with the rank that ended first when the liveness watch saw one (it hears
  // of a dead rank before the launcher's signal arrives; the launcher's SIGKILL follows the signal within a second,
  // so rank 0 does not wait for news).
  // With --save, SIGTERM/SIGUSR1 ask for a graceful stop: a checkpoint at the next step boundary, status "preempted".
  const TerminationWatch watch(
      [&](int sig) {
        liveness.leaving(RankWatch::Leaving::signal);
        results.finish_on_signal(sig, liveness.first_failure(0.0));
      },
      cfg.save.empty() ? 0.0 : cfg.preempt_grace_s,
      [&] { return !liveness.first_failure(0.0).empty(); });  // a lost rank: no step boundary will come
  TrainingRun run(cfg, world, layout, results, std::move(hosts));
  bool in_loop = false;  // errors inside the loop are seen by one rank only: end the whole job (below)
  // Any failure after the results file exists: rank 0 finishes it; inside the loop, the other ranks are ended too,
  // unless every rank raised it alike: a diverged step, and the loop's output errors (the results file's flush, a
  // checkpoint's writes) are agreed on through collectively(), so every rank ends with its code, no abort.
  const auto on_failure = [&](const Error& e) {
    results.finish_failed(e, run.st.tracer.get());
    const bool agreed = e.code() == ExitCode::diverged || e.code() == ExitCode::output;
    if (in_loop && run.W > 1 && !agreed) {
      liveness.leaving(RankWatch::Leaving::error);
      std::fprintf(stderr, "qwen3-pretrain: error on rank %d: %s\n", run.rank, e.what());
      MpiSession::abort(static_cast<int>(e.code()));
    }
  };
  try {
    run.st.tracer = start_tracer(cfg, run.st.traced_engine);
    results.flush_progress(*run.st.tracer, nullptr);  // every rank's trace exists from here on
    const MemoryPolicy recompute = check_memory(run, start_utc);
    create_dataset_and_engine(run, recompute);
    const CheckpointRun ckpt_run = checkpoint_run(run);
    const Restored restored = restore(run, ckpt_run);

    results.record_init_time(seconds_since(t_start));
    results.flush_progress(*run.st.tracer, nullptr);
    StepLoop loop(run, restored);
    print_run_line(run, loop);
    loop.step_tokens.resize(loop.pipelined ? static_cast<std::size_t>(loop.micro_steps) : 0);
    loop.step_labels.resize(loop.step_tokens.size());
    in_loop = true;
    run_steps(run, loop, ckpt_run, watch);
    in_loop = false;
    save_and_export(run, loop, ckpt_run);
    return finish_run(run, loop);
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
