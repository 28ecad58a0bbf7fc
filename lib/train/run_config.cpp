// Validation and serialisation of RunConfig (see run_config.h).
#include "train/run_config.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/format.h"
#include "train/run_option_table.h"
#include "model/memory_policy.h"
#include "model/pipeline_split.h"
#include "dist/layout.h"

namespace qwen3 {
namespace {

// Runs the check of every run option of the table whose layout flag is `layout` (the general ones, command line
// only, are checked where they are parsed, when given).
void check_options(const RunConfig& c, bool layout) {
  for (const auto& o : run_option_table())
    if (o.check && o.layout == layout && o.section == RunOption::Section::run) o.check(c);
}

}  // namespace

void RunConfig::validate_layout(int world, bool cuda) const {
  if (offload_optimizer > 0 && !cuda)
    throw UsageError("--offload-optimizer: the CUDA backend's (the CPU backend's optimizer state is in host memory already)");
  model.validate();
  check_options(*this, true);  // sizes, tp/pp/cp, attention, the SM margin
  if (!pp_layers.empty() && pp == 1 && pp_layers.size() != 1)
    throw UsageError("--pp-layers lists " + std::to_string(pp_layers.size()) + " stages but --pp is 1");
  // The rank rules (train/rank_plan.h): the sequence's split, tp against the heads (or KV heads replicable), pp
  // against the layers (an explicit split complete), the attention kernels under context parallelism.
  planned_rank(plan_input(tp * cp * pp));
  ParallelLayout layout(world, tp, cp, pp);  // world divisible by tp·cp·pp
  const std::int64_t dp = layout.dp();
  if (global_batch % (micro_batch * dp) != 0)
    throw UsageError("--global-batch " + std::to_string(global_batch) + " is not divisible by --micro-batch × data-parallel size = " +
                     std::to_string(micro_batch) + " × " + std::to_string(dp) + " = " + std::to_string(micro_batch * dp));
}

void RunConfig::validate(int world) const {
  if (data.empty()) throw UsageError("--data is required (a dataset file; make one with qwen3-dataset synthetic)");
  if (out.empty()) throw UsageError("--out is required (the results file to write)");
  check_options(*this, false);  // each option's own rule (train/run_option_table.h)
  if (recompute != "auto") {
    MemoryPolicy{parse_recompute(recompute), recompute_num_layers, offload_inputs, std::max(0.0, offload_optimizer)}.validate();
  } else {
    MemoryPolicy{Recompute::full, recompute_num_layers, false, std::max(0.0, offload_optimizer)}.validate();
    if (offload_inputs) throw UsageError("--offload-inputs with --recompute auto: auto chooses offloading itself when it is needed");
  }
  if (save_interval > 0 && save.empty()) throw UsageError("--save-interval needs --save DIR");
  if (auto_resume && save.empty()) throw UsageError("--auto-resume needs --save DIR (the folder it resumes from)");
  if (auto_resume && !resume.empty()) throw UsageError("--auto-resume and --resume are exclusive");
  if (!resume.empty() && !init_from_hf.empty())
    throw UsageError("--resume and --init-from-hf are exclusive: a checkpoint holds the weights already");
  if (!export_hf.empty() && std::filesystem::exists(export_hf) && !overwrite)
    throw OutputError("--export-hf: '" + export_hf + "' exists (pass --overwrite to replace it)");
  if (!save.empty() && std::filesystem::exists(save) && !std::filesystem::is_directory(save))
    throw OutputError("--save: '" + save + "' is a file, not a folder of checkpoints");
  validate_layout(world, device == "cuda");
}

PlannedRun RunConfig::plan_input(int world_size) const {
  PlannedRun in;
  in.model = model;
  in.micro_batch = micro_batch, in.seq_len = seq_len;
  in.tp = tp, in.dp = static_cast<int>(dp_size(world_size)), in.pp = pp, in.cp = cp;
  in.cudnn_attention = attention == "cudnn";
  in.fp8 = precision == "fp8";
  in.fp8_delayed = fp8_delayed();
  in.cuda_rules = device == "cuda";
  in.shard_optimizer = shard_optimizer;
  in.stage_layers = pp_layers;
  in.micro_batches = micro_batches_per_step(world_size);
  return in;
}

std::vector<std::pair<std::string, std::string>> RunConfig::key_values() const {
  std::vector<std::pair<std::string, std::string>> out = {
      {"model.name", model.name}, {"model.vocab_size", std::to_string(model.vocab_size)},
      {"model.hidden_size", std::to_string(model.hidden_size)},
      {"model.intermediate_size", std::to_string(model.intermediate_size)},
      {"model.num_hidden_layers", std::to_string(model.num_layers)},
      {"model.num_attention_heads", std::to_string(model.num_heads)},
      {"model.num_key_value_heads", std::to_string(model.num_kv_heads)},
      {"model.head_dim", std::to_string(model.head_dim)}, {"model.rope_theta", format_shortest(model.rope_theta)},
      {"model.rms_norm_eps", format_shortest(model.rms_norm_eps)},
      {"model.tie_word_embeddings", model.tie_word_embeddings ? "true" : "false"},
      {"model.parameters", std::to_string(model.parameter_count())},
  };
  for (const auto& o : run_option_table())
    if (!o.config_key.empty()) out.emplace_back(o.config_key, recorded_value(*this, o));
  return out;
}

}  // namespace qwen3
