// The training run's step loop (train/trainer_phases.h): one step — micro-batches forward and backward (through the
// pipeline's stages when pipelined), gradients reduced over data-parallel replicas, AdamW — then its progress line,
// its checkpoint (--save-interval) and the pre-emption check at the step boundary.
#include <cmath>
#include <cstdio>

#include "core/format.h"
#include "train/lr_schedule.h"
#include "train/progress.h"
#include "train/trainer_phases.h"

namespace qwen3::trainer {
namespace {

// Inputs and next-token labels for documents [count, L]: label[t] = token[t+1]; the last position has none.
void make_labels(const std::vector<std::int32_t>& tokens, std::int64_t L, std::vector<std::int32_t>& labels) {
  labels.resize(tokens.size());
  for (std::size_t d = 0; d < tokens.size() / static_cast<std::size_t>(L); ++d)
    for (std::int64_t t = 0; t < L; ++t)
      labels[d * L + t] = t + 1 < L ? tokens[d * L + t + 1] : cpu::kIgnoreLabel;
}

// Forward and backward of every micro-batch of `step` on this rank: loss_sum = {Σ loss, Σ tokens counted} (with
// pipeline parallelism, the last stage's, on every stage); step_pipe: the time in compute and pipeline transfers.
void run_micro_batches(TrainingRun& run, StepLoop& loop, std::int64_t step, double loss_sum[2],
                       PipelineTimes& step_pipe) {
  Engine& engine = *run.st.engine;
  const std::int64_t L = run.cfg.seq_len, MB = run.cfg.micro_batch;
  const auto t_compute = Clock::now();
  if (!loop.pipelined) {
    for (std::int64_t m = 0; m < loop.micro_steps; ++m) {
      loop.tokens = run.st.data->read_documents(loop.sampler.micro_batch(step, loop.dp_rank, run.layout.dp(), m, MB));
      make_labels(loop.tokens, L, loop.labels);
      const MicroBatch mb{loop.tokens.data(), loop.labels.data(), MB, L};
      const auto l = engine.forward_backward(mb, 1.0 / loop.counted_tokens);
      loss_sum[0] += l.sum;
      loss_sum[1] += static_cast<double>(l.count);
    }
    engine.synchronize();
    step_pipe.compute_s = seconds_since(t_compute);
  } else {
    // Each micro-batch read when the schedule first asks for it (its forward, or sizing its first transfer), not all
    // before the first operation: a later stage reads while it waits for its neighbour.
    std::vector<char> read(static_cast<std::size_t>(loop.micro_steps), 0);
    const auto batch = [&](int m) {
      if (!read[static_cast<std::size_t>(m)]) {
        loop.step_tokens[m] = run.st.data->read_documents(loop.sampler.micro_batch(step, loop.dp_rank, run.layout.dp(), m, MB));
        make_labels(loop.step_tokens[m], L, loop.step_labels[m]);
        read[static_cast<std::size_t>(m)] = 1;
      }
      return MicroBatch{loop.step_tokens[m].data(), loop.step_labels[m].data(), MB, L};
    };
    const auto l = run_pipeline_step(engine, run.groups.coords.pp, run.layout.pp(), static_cast<int>(loop.micro_steps),
                                     batch, 1.0 / loop.counted_tokens, step_pipe);
    loss_sum[0] = l.sum;
    loss_sum[1] = static_cast<double>(l.count);
    run.groups.pp->all_reduce_sum(loss_sum, 2);  // the last stage's loss, on every stage
  }
}

// Collective, before the optimizer applies `step`: a loss or gradient norm that is not finite on any rank stops the
// run on every rank alike (one reduction, no abort), with the weights still those after the step before.
void stop_if_diverged(TrainingRun& run, const StepLoop& loop, std::int64_t step, double loss, double norm) {
  double bad = std::isfinite(loss) && std::isfinite(norm) ? 0 : 1;
  run.world.all_reduce_max(&bad, 1);
  if (bad == 0) return;
  char msg[400];
  std::snprintf(msg, sizeof msg,
                "diverged at step %lld: loss %g, gradient norm %g (not finite); stopped before applying it — %s "
                "(lower --lr, lengthen --warmup-steps or set --clip-grad)",
                static_cast<long long>(step + 1), loss, norm,
                loop.last_saved >= 0 ? ("the newest checkpoint is step " + std::to_string(loop.last_saved)).c_str()
                                     : "no checkpoint was written");
  throw Diverged(msg, step + 1);
}

// Collective: one training step, its record flushed to the results file and (rank 0) its progress line printed.
void train_step(TrainingRun& run, StepLoop& loop, std::int64_t step) {
  const RunConfig& cfg = run.cfg;
  Engine& engine = *run.st.engine;
  Communicator& dp_comm = *run.groups.dp;
  const auto t0 = Clock::now();
  engine.zero_grad();
  double loss_sum[2] = {0, 0};  // Σ loss, Σ tokens counted
  PipelineTimes step_pipe;
  run_micro_batches(run, loop, step, loss_sum, step_pipe);
  const auto t_reduce = Clock::now();
  engine.reduce_gradients(dp_comm);
  dp_comm.all_reduce_sum(loss_sum, 2);
  engine.synchronize();
  const std::int64_t start_step = loop.start_step;
  const bool timed = step > start_step || cfg.steps - start_step == 1;  // the first pays for warm-up, unless alone
  if (timed) {
    loop.pipe_times.compute_s += step_pipe.compute_s;
    loop.pipe_times.p2p_s += step_pipe.p2p_s;
    loop.reduce_s += seconds_since(t_reduce);
  }
  const double norm = engine.grad_norm();
  stop_if_diverged(run, loop, step, loss_sum[0] / loss_sum[1], norm);
  const double clip_scale = (cfg.clip_grad > 0 && norm > cfg.clip_grad) ? cfg.clip_grad / (norm + 1e-6) : 1.0;
  const double lr = learning_rate(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr);
  engine.optimizer_step(lr, loop.adamw, clip_scale);
  if (step + 1 == cfg.steps) engine.synchronize();  // an overlapped optimizer step ends inside the next step
  run.st.tracer->sample_now();
  double dt = seconds_since(t0);
  run.world.all_reduce_max(&dt, 1);  // the step takes as long as its slowest rank
  if (step == start_step)
    run.results.add_first_step_time(dt);
  else
    loop.later_steps_s += dt;
  if (timed) loop.step_sum_s += dt;

  const std::int64_t L = cfg.seq_len, GB = cfg.global_batch;
  const StepRecord rec{loss_sum[0] / loss_sum[1], norm, lr, dt, static_cast<double>(GB * L) / dt,
                       loop.flops_per_step / run.W / dt / 1e12};
  run.results.flush_progress(*run.st.tracer, &rec);
  if (run.root) {
    const double mean = step > start_step ? loop.later_steps_s / static_cast<double>(step - start_step)
                                          : run.results.first_step_s();
    print_without_blocking(progress_line(step + 1, cfg.steps, rec, run.st.tracer->peak_bytes(),
                                         mean * static_cast<double>(cfg.steps - step - 1)));
  }
}

// Collective, after `step`: its checkpoint when --save-interval says so, then whether a stop asked of any rank is
// taken by all at this boundary (true: stop; loop.preempted_at and loop.preempt_signal say so).
bool checkpoint_or_stop(TrainingRun& run, StepLoop& loop, std::int64_t step, const CheckpointRun& ckpt_run,
                        const TerminationWatch& watch) {
  const RunConfig& cfg = run.cfg;
  if (!cfg.save.empty() && cfg.save_interval > 0 && (step + 1) % cfg.save_interval == 0 && step + 1 < cfg.steps) {
    save_checkpoint_of_step(run, step + 1, ckpt_run);
    loop.last_saved = step + 1;
  }
  if (!cfg.save.empty() && step + 1 < cfg.steps) {  // a stop asked of any rank is taken by all at this boundary
    double asked = watch.requested();
    run.world.all_reduce_max(&asked, 1);
    if (asked > 0) {
      loop.preempted_at = step + 1;
      loop.preempt_signal = static_cast<int>(asked);
      return true;
    }
  }
  return false;
}

}  // namespace

void save_checkpoint_of_step(TrainingRun& run, std::int64_t step, const CheckpointRun& ckpt_run) {
  try {
    save_checkpoint(run.cfg.save, step, *run.st.engine, run.world, ckpt_run, static_cast<int>(run.cfg.save_keep));
  } catch (const Error& e) {  // the checkpoint refused non-finite weights: the step that made them diverged
    if (e.code() != ExitCode::diverged) throw;
    throw Diverged("diverged at step " + std::to_string(step) + ": " + e.what(), step);
  }
}

StepLoop::StepLoop(const TrainingRun& run, const Restored& restored)
    : start_step(restored.start_step),
      micro_steps(run.cfg.micro_batches_per_step(run.W)),
      counted_tokens(static_cast<double>(run.cfg.global_batch * (run.cfg.seq_len - 1))),
      flops_per_step(run.cfg.model.training_flops_per_sequence(run.cfg.seq_len) *
                     static_cast<double>(run.cfg.global_batch)),
      sampler(run.st.data->num_documents(), run.cfg.global_batch, run.cfg.seed),
      adamw{run.cfg.beta1, run.cfg.beta2, run.cfg.adam_eps, run.cfg.weight_decay},
      dp_rank(run.layout.coords(run.rank).dp),
      pipelined(run.layout.pp() > 1),
      last_saved(restored.resumed ? restored.start_step : -1) {}  // the checkpoint it resumed is on disk

void print_run_line(const TrainingRun& run, const StepLoop& loop) {
  const RunConfig& cfg = run.cfg;
  const std::int64_t L = cfg.seq_len, GB = cfg.global_batch, MB = cfg.micro_batch;
  if (!run.root) return;
  char line[512];
  std::snprintf(line, sizeof line, "qwen3-pretrain: %s (%s parameters), %s, %s, seq %lld, global batch %lld = %lld "
                "micro-batches of %lld × %lld data-parallel ranks, %lld steps on %s", cfg.model_source.c_str(),
                format_parameter_count(cfg.model.parameter_count()).c_str(), cfg.precision_label().c_str(),
                run.layout.describe().c_str(), (long long)L,
                (long long)GB, (long long)loop.micro_steps, (long long)MB, (long long)run.layout.dp(), (long long)cfg.steps,
                run.st.engine->device_name().c_str());
  print_without_blocking(line);
}

void run_steps(TrainingRun& run, StepLoop& loop, const CheckpointRun& ckpt_run, const TerminationWatch& watch) {
  for (std::int64_t step = loop.start_step; step < run.cfg.steps; ++step) {
    train_step(run, loop, step);
    if (checkpoint_or_stop(run, loop, step, ckpt_run, watch)) break;
  }
}

}  // namespace qwen3::trainer
