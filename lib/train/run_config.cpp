// Validation and serialisation of RunConfig (see run_config.h).
#include "train/run_config.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/format.h"
#include "model/recompute.h"
#include "model/pipeline_split.h"
#include "model/sequence_layout.h"
#include "model/tensor_parallel.h"
#include "dist/layout.h"

namespace qwen3 {
namespace {
std::string join_counts(const std::vector<std::int64_t>& v) {
  std::string out;
  for (auto n : v) out += (out.empty() ? "" : ",") + std::to_string(n);
  return out;
}
std::string num(double v) { return format_shortest(v); }
void positive(const char* option, double v) {
  if (!(v > 0)) throw UsageError(std::string(option) + " must be positive, got " + num(v));
}
}  // namespace

void RunConfig::validate_layout(int world, bool cuda) const {
  if (offload_optimizer > 0 && !cuda)
    throw UsageError("--offload-optimizer: the CUDA backend's (the CPU backend's optimizer state is in host memory already)");
  model.validate();
  positive("--seq-len", static_cast<double>(seq_len));
  positive("--global-batch", static_cast<double>(global_batch));
  positive("--micro-batch", static_cast<double>(micro_batch));
  for (auto [name, v] : {std::pair{"--tp", tp}, std::pair{"--pp", pp}, std::pair{"--cp", cp}}) {
    if (v < 1) throw UsageError(std::string(name) + " must be at least 1, got " + std::to_string(v));
  }
  check_sequence_layout(micro_batch, seq_len, tp, cp, cuda);
  if (attention != "cudnn" && attention != "own")
    throw UsageError("--attention: invalid value '" + attention + "' (valid: cudnn, own)");
  if (comm_sm_margin < 0) throw UsageError("--comm-sm-margin must be 0 or more SMs, got " + std::to_string(comm_sm_margin));
  if (cuda && cp > 1 && attention == "own")
    throw UsageError("--cp " + std::to_string(cp) + " with --device cuda needs --attention cudnn (the project's own "
                     "attention kernels attend whole sequences only)");
  if (!pp_layers.empty() && pp == 1 && pp_layers.size() != 1)
    throw UsageError("--pp-layers lists " + std::to_string(pp_layers.size()) + " stages but --pp is 1");
  pipeline_layer_counts(model, pp, seq_len, pp_layers);  // pp ≤ layers; an explicit split is complete
  if (tp > 1) {
    tp_dims(model, 0, tp);  // heads, KV heads, intermediate size and vocabulary divisible (or KV heads replicable)
  }
  ParallelLayout layout(world, tp, cp, pp);  // world divisible by tp·cp·pp
  const std::int64_t dp = layout.dp();
  if (global_batch % (micro_batch * dp) != 0)
    throw UsageError("--global-batch " + std::to_string(global_batch) + " is not divisible by --micro-batch × data-parallel size = " +
                     std::to_string(micro_batch) + " × " + std::to_string(dp) + " = " + std::to_string(micro_batch * dp));
}

void RunConfig::validate(int world) const {
  if (data.empty()) throw UsageError("--data is required (a dataset file; make one with qwen3-dataset synthetic)");
  if (out.empty()) throw UsageError("--out is required (the results file to write)");
  positive("--steps", static_cast<double>(steps));
  positive("--lr", lr);
  if (!(min_lr >= 0 && min_lr <= lr)) throw UsageError("--min-lr must be between 0 and --lr (" + num(lr) + "), got " + num(min_lr));
  if (warmup_steps < 0) throw UsageError("--warmup-steps must be 0 or more, got " + std::to_string(warmup_steps));
  if (!(weight_decay >= 0)) throw UsageError("--weight-decay must be 0 or more, got " + num(weight_decay));
  if (!(clip_grad >= 0)) throw UsageError("--clip-grad must be 0 (off) or positive, got " + num(clip_grad));
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) throw UsageError("--beta1 and --beta2 must be in [0, 1)");
  positive("--adam-eps", adam_eps);
  positive("--init-std", init_std);
  if (memory_interval_ms < 1) throw UsageError("--memory-interval-ms must be at least 1, got " + std::to_string(memory_interval_ms));
  if (recompute != "auto") {
    RecomputePolicy{parse_recompute(recompute), recompute_num_layers, offload_inputs, std::max(0.0, offload_optimizer)}.validate();
  } else {
    RecomputePolicy{Recompute::full, recompute_num_layers, false, std::max(0.0, offload_optimizer)}.validate();
    if (offload_inputs) throw UsageError("--offload-inputs with --recompute auto: auto chooses offloading itself when it is needed");
  }
  if (save_interval < 0) throw UsageError("--save-interval must be 0 (only at the end) or positive");
  if (save_keep < 0) throw UsageError("--save-keep must be 0 (keep all) or positive");
  if (save_interval > 0 && save.empty()) throw UsageError("--save-interval needs --save DIR");
  if (auto_resume && save.empty()) throw UsageError("--auto-resume needs --save DIR (the folder it resumes from)");
  if (auto_resume && !resume.empty()) throw UsageError("--auto-resume and --resume are exclusive");
  if (!(preempt_grace_s > 0)) throw UsageError("--preempt-grace must be positive (seconds)");
  if (!resume.empty() && !init_from_hf.empty())
    throw UsageError("--resume and --init-from-hf are exclusive: a checkpoint holds the weights already");
  if (export_dtype != "bf16" && export_dtype != "fp32")
    throw UsageError("--export-dtype: invalid value '" + export_dtype + "' (valid: bf16, fp32)");
  if (!export_hf.empty() && std::filesystem::exists(export_hf) && !overwrite)
    throw OutputError("--export-hf: '" + export_hf + "' exists (pass --overwrite to replace it)");
  if (!save.empty() && std::filesystem::exists(save) && !std::filesystem::is_directory(save))
    throw OutputError("--save: '" + save + "' is a file, not a folder of checkpoints");
  if (device != "cpu" && device != "cuda") throw UsageError("--device: invalid value '" + device + "' (valid: cpu, cuda)");
  validate_layout(world, device == "cuda");
}

MemoryPlanInput RunConfig::plan_input(int world_size) const {
  MemoryPlanInput in;
  in.model = model;
  in.micro_batch = micro_batch, in.seq_len = seq_len;
  in.tp = tp, in.dp = static_cast<int>(dp_size(world_size)), in.pp = pp, in.cp = cp;
  in.cudnn_attention = attention == "cudnn";
  in.cuda_rules = device == "cuda";
  in.shard_optimizer = shard_optimizer;
  in.stage_layers = pp_layers;
  in.micro_batches = micro_batches_per_step(world_size);
  return in;
}

std::vector<std::pair<std::string, std::string>> RunConfig::key_values() const {
  return {
      {"model", model_source}, {"model.name", model.name}, {"model.vocab_size", std::to_string(model.vocab_size)},
      {"model.hidden_size", std::to_string(model.hidden_size)},
      {"model.intermediate_size", std::to_string(model.intermediate_size)},
      {"model.num_hidden_layers", std::to_string(model.num_layers)},
      {"model.num_attention_heads", std::to_string(model.num_heads)},
      {"model.num_key_value_heads", std::to_string(model.num_kv_heads)},
      {"model.head_dim", std::to_string(model.head_dim)},
      {"model.rope_theta", num(model.rope_theta)}, {"model.rms_norm_eps", num(model.rms_norm_eps)},
      {"model.tie_word_embeddings", model.tie_word_embeddings ? "true" : "false"},
      {"model.parameters", std::to_string(model.parameter_count())},
      {"data", data}, {"seq_len", std::to_string(seq_len)}, {"global_batch", std::to_string(global_batch)},
      {"micro_batch", std::to_string(micro_batch)}, {"steps", std::to_string(steps)}, {"lr", num(lr)},
      {"min_lr", num(min_lr)}, {"warmup_steps", std::to_string(warmup_steps)}, {"weight_decay", num(weight_decay)},
      {"clip_grad", num(clip_grad)}, {"beta1", num(beta1)}, {"beta2", num(beta2)}, {"adam_eps", num(adam_eps)},
      {"init_std", num(init_std)}, {"seed", std::to_string(seed)}, {"device", device}, {"out", out},
      {"overwrite", overwrite ? "true" : "false"}, {"tp", std::to_string(tp)}, {"pp", std::to_string(pp)},
      {"shard_optimizer", shard_optimizer ? "true" : "false"}, {"recompute", recompute},
      {"recompute_num_layers", std::to_string(recompute_num_layers)},
      {"offload_inputs", offload_inputs ? "true" : "false"},
      {"allow_cross_node_tp", allow_cross_node_tp ? "true" : "false"}, {"attention", attention},
      {"comm_sm_margin", std::to_string(comm_sm_margin)}, {"gemm_autotune", gemm_autotune ? "true" : "false"},
      {"offload_optimizer", offload_optimizer >= 0 ? num(offload_optimizer) : recompute == "auto" ? "auto" : "0"},
      {"pp_layers", join_counts(pipeline_layer_counts(model, pp, seq_len, pp_layers))},
      {"cp", std::to_string(cp)}, {"init_from_hf", init_from_hf}, {"export_hf", export_hf},
      {"export_dtype", export_dtype}, {"save", save}, {"save_interval", std::to_string(save_interval)},
      {"save_keep", std::to_string(save_keep)}, {"resume", resume}, {"auto_resume", auto_resume ? "true" : "false"},
      {"preempt_grace_s", num(preempt_grace_s)}, {"memory_interval_ms", std::to_string(memory_interval_ms)},
  };
}

}  // namespace qwen3
