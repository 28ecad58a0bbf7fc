// The training run's summary step (train/trainer_phases.h): the final checkpoint and the Hugging Face export, where
// each rank's time went, the rest of the memory trace, and the run's status.
#include <cstdio>
#include <cstring>
#include <numeric>

#include "dist/collective_errors.h"
#include "io/hf_checkpoint.h"
#include "model/pipeline_split.h"
#include "train/pipeline_schedule.h"
#include "train/progress.h"
#include "train/trainer_phases.h"

namespace qwen3::trainer {
namespace {

// Where each rank's time went (/ranks, one row of `all` per rank: compute, pipeline wait, dp reduce, step seconds,
// then pp stage, tp rank, dp rank, then the host optimizer's CPU seconds per step and its elements) and each pipeline
// stage's layers (/stages).
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
  results.write_values("ranks/host_optimizer_cpu_s", cols[7],
                       "CPU seconds of the host optimizer's AdamW passes per optimizer step, mean of the steps after "
                       "the first (--offload-optimizer; 0 without it)");
  results.write_values("ranks/host_optimizer_elements", as_integers(cols[8]),
                       "elements of the optimizer state each step updates on the host (0 without it)");
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

// The host optimizer's CPU seconds per step, mean of the steps after the first (the first's alone in a one-step
// run), as the other per-rank times; 0 without a host part.
double host_optimizer_cpu_s(const std::vector<double>& per_step) {
  if (per_step.empty()) return 0;
  const auto from = per_step.begin() + (per_step.size() > 1 ? 1 : 0);
  return std::accumulate(from, per_step.end(), 0.0) / static_cast<double>(per_step.end() - from);
}

// Collective: per-rank timings of the steps after the first (all of them for a one-step run: then the first step's),
// gathered on rank 0 and written there.
void gather_rank_times(TrainingRun& run, const StepLoop& loop) {
  const Engine::HostOptimizerTimes host = run.st.engine->host_optimizer_times();
  const std::vector<double> mine = {loop.pipe_times.compute_s, loop.pipe_times.p2p_s, loop.reduce_s, loop.step_sum_s,
                                    static_cast<double>(run.groups.coords.pp),
                                    static_cast<double>(run.layout.coords(run.rank).tp),
                                    static_cast<double>(loop.dp_rank), host_optimizer_cpu_s(host.step_cpu_s),
                                    static_cast<double>(host.elements)};
  const auto all = run.world.gather(mine, 0);
  collectively(run.world, run.root, [&] {
    run.results.write([&](ResultsWriter& results) {
      write_rank_times(results, all, run.layout.pp(), run.stage_layers, loop.micro_steps);
    });
  });
}

}  // namespace

void save_and_export(TrainingRun& run, const StepLoop& loop, const CheckpointRun& ckpt_run) {
  const RunConfig& cfg = run.cfg;
  Engine& engine = *run.st.engine;
  const std::int64_t end_step = loop.preempted_at >= 0 ? loop.preempted_at : cfg.steps;
  if (!cfg.save.empty() && loop.last_saved != end_step) {
    save_checkpoint_of_step(run, end_step, ckpt_run);
    if (run.root)  // never blocking: a pre-empted run's launcher may have stopped reading (train/progress.h)
      print_without_blocking("qwen3-pretrain: saved a checkpoint of step " + std::to_string(end_step) + " under " + cfg.save);
  }
  if (!cfg.export_hf.empty() && loop.preempted_at < 0) {  // the final weights, gathered tensor by tensor, rank 0 writes
    collectively(run.world, true, [&] {
      HfExportOptions o;
      o.dtype = cfg.export_dtype == "fp32" ? "F32" : "BF16";
      o.overwrite = cfg.overwrite;
      write_hf_checkpoint(cfg.export_hf, cfg.model, engine.params(),
                          [&](const std::string& name) { return engine.weights(name); }, run.root, o);
    });
    if (run.root) print_without_blocking("qwen3-pretrain: exported the weights to " + cfg.export_hf + " (Hugging Face format)");
  }
}

int finish_run(TrainingRun& run, const StepLoop& loop) {
  const RunConfig& cfg = run.cfg;
  const std::int64_t preempted_at = loop.preempted_at;
  const int preempt_signal = loop.preempt_signal;
  gather_rank_times(run, loop);
  run.st.tracer->stop();
  run.results.flush_progress(*run.st.tracer, nullptr);  // the rest of every rank's trace, the final timings
  if (run.root) {
    if (preempted_at < 0) {
      run.results.finish_ok();
    } else {
      run.results.finish_preempted(
          preempted_at, "stopped by signal " + std::to_string(preempt_signal) + " (" + strsignal(preempt_signal) +
                            ") after step " + std::to_string(preempted_at) + " of " + std::to_string(cfg.steps) +
                            "; checkpoint under " + cfg.save + " (--resume or --auto-resume continues it)");
    }
    print_without_blocking("qwen3-pretrain: wrote " + cfg.out);
    if (preempted_at >= 0)
      print_without_blocking("qwen3-pretrain: preempted after step " + std::to_string(preempted_at) + " of " +
                             std::to_string(cfg.steps) + "; the checkpoint is under " + cfg.save);
  }
  return preempted_at >= 0 ? static_cast<int>(ExitCode::preempted) : 0;
}

}  // namespace qwen3::trainer
