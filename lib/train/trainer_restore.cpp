// The training run's restore step (train/trainer_phases.h): the state a run starts from — a checkpoint it resumes
// (--resume, --auto-resume) or Hugging Face weights (--init-from-hf); a fresh run keeps the engine's initialisation.
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "dist/collective_errors.h"
#include "io/hf_checkpoint.h"
#include "train/progress.h"
#include "train/trainer_phases.h"

namespace qwen3::trainer {
namespace {

// Rank 0 decides whether and from where to resume, and every rank takes its answer (the file system's view may
// differ between nodes). Collective with --auto-resume.
std::string resume_source(TrainingRun& run) {
  const RunConfig& cfg = run.cfg;
  std::string resume_from = cfg.resume;
  if (cfg.auto_resume)
    resume_from = run.world.all_gather(run.root && std::filesystem::exists(std::filesystem::path(cfg.save) / "latest")
                                           ? cfg.save
                                           : std::string())[0];
  return resume_from;
}

// Collective: weights, moments and the optimizer's step count from the checkpoint under resume_from; returns its
// step (the data position is the step).
std::int64_t resume_checkpoint(TrainingRun& run, const CheckpointRun& ckpt_run, const std::string& resume_from) {
  const RunConfig& cfg = run.cfg;
  std::string dir;
  collectively(run.world, run.root, [&] { dir = resolve_checkpoint(resume_from); });
  dir = run.world.all_gather(dir)[0];
  std::string schedule_note;
  const std::int64_t start_step = load_checkpoint(dir, *run.st.engine, run.world, ckpt_run, &schedule_note);
  if (run.root && !schedule_note.empty()) print_without_blocking("qwen3-pretrain: note: " + schedule_note);
  collectively(run.world, true, [&] {
    // A run asked to continue itself (--auto-resume) whose checkpoint is its last step has nothing to do: it ends
    // well, so a requeued or re-run cell completes; so does a conversion (--export-hf at the checkpoint's step).
    if (start_step > cfg.steps || (start_step == cfg.steps && cfg.export_hf.empty() && !cfg.auto_resume))
      throw UsageError("--resume: '" + dir + "' is at step " + std::to_string(start_step) + " and --steps is " +
                       std::to_string(cfg.steps) + ": nothing left to run");
  });
  collectively(run.world, run.root, [&] {
    run.results.write([&](ResultsWriter& results) {
      results.write_attribute("resumed_from", dir);
      results.write_attribute("resumed_from_step", start_step);
    });
    print_without_blocking("qwen3-pretrain: resumed from " + dir + " at step " + std::to_string(start_step));
  });
  return start_step;
}

}  // namespace

CheckpointRun checkpoint_run(const TrainingRun& run) {
  const RunConfig& cfg = run.cfg;
  CheckpointRun ckpt_run;
  ckpt_run.model = cfg.model, ckpt_run.seed = cfg.seed, ckpt_run.global_batch = cfg.global_batch;
  ckpt_run.seq_len = cfg.seq_len, ckpt_run.num_documents = run.st.data->num_documents(), ckpt_run.layout = run.layout.describe();
  ckpt_run.lr = cfg.lr, ckpt_run.min_lr = cfg.min_lr, ckpt_run.warmup_steps = cfg.warmup_steps, ckpt_run.steps = cfg.steps;
  return ckpt_run;
}

Restored restore(TrainingRun& run, const CheckpointRun& ckpt_run) {
  const RunConfig& cfg = run.cfg;
  Engine& engine = *run.st.engine;
  Restored restored;
  const std::string resume_from = resume_source(run);
  restored.resumed = !resume_from.empty();
  if (restored.resumed) restored.start_step = resume_checkpoint(run, ckpt_run, resume_from);
  if (!cfg.init_from_hf.empty() && resume_from.empty()) {  // (a resumed run has its weights) every rank reads every
    // tensor and keeps its own part (set_weights)
    collectively(run.world, true, [&] {
      const HfCheckpoint hf(cfg.init_from_hf);
      hf.check_against(engine.params());
      for (const auto& p : engine.params().entries()) engine.set_weights(p.name, hf.read(p.name));
    });
  }
  return restored;
}

}  // namespace qwen3::trainer
