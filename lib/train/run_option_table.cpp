// The option table of qwen3-pretrain (see run_option_table.h): general options first, then the run's, in --help's
// order.
#include "train/run_option_table.h"

#include <nlohmann/json.hpp>

#include <optional>

#include "core/error.h"
#include "core/format.h"
#include "core/parse.h"
#include "model/pipeline_split.h"
#include "model/memory_policy.h"
#include "train/fp8_estimate.h"
#include "train/memory_plan.h"
#include "train/run_config.h"

namespace qwen3 {
namespace {

using S = RunOption::Section;
using K = RunOption::Kind;
using Check = std::function<void(const RunConfig&)>;

std::string num(double v) { return format_shortest(v); }

// A command-line name as a --config, /config and sweep key: '_' for '-'.
std::string key_of(const std::string& name) {
  std::string k = name;
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

// An option; a run option's /config key is its name with '_' for '-' unless given (a general one records none).
RunOption opt(std::string name, S section, K kind, RunOption::Field field, bool shows_default, std::string help,
              std::optional<std::string> config_key = std::nullopt) {
  RunOption o;
  o.config_key = config_key ? *config_key : section == S::run ? key_of(name) : "";
  o.name = std::move(name), o.section = section, o.kind = kind, o.field = field, o.shows_default = shows_default;
  o.help = std::move(help);
  return o;
}

// "--name must be positive, got v" when the field is not.
template <class T>
Check positive(const char* option, T RunConfig::*field) {
  return [option, field](const RunConfig& c) {
    if (!(c.*field > 0)) throw UsageError(std::string(option) + " must be positive, got " + num(static_cast<double>(c.*field)));
  };
}
Check at_least_one(const char* option, int RunConfig::*field) {
  return [option, field](const RunConfig& c) {
    if (c.*field < 1) throw UsageError(std::string(option) + " must be at least 1, got " + std::to_string(c.*field));
  };
}
// A choice option: its check and its list of values, from one list.
void set_choices(RunOption& o, const char* option, std::string RunConfig::*field, std::vector<std::string> valid) {
  o.choices = valid;
  o.check = [option, field, valid](const RunConfig& c) { require_choice(option, c.*field, valid); };
}
// A check that throws message(c) unless ok(c).
Check rule(std::function<bool(const RunConfig&)> ok, std::function<std::string(const RunConfig&)> message) {
  return [ok, message](const RunConfig& c) {
    if (!ok(c)) throw UsageError(message(c));
  };
}

std::string join_counts(const std::vector<std::int64_t>& v) {
  std::string out;
  for (auto n : v) out += (out.empty() ? "" : ",") + std::to_string(n);
  return out;
}

// What to do and the plan's machine: the command line only.
void add_general(std::vector<RunOption>& t) {
  t.push_back(opt("config", S::general, K::value, {}, false,
                  "INI file of the Run options below (keys without '--'; '_' may stand for '-'); the command line overrides "
                  "it"));
  t.push_back(opt("plan", S::general, K::flag, &RunConfig::plan, true,
                  "print the CUDA engine's memory per rank for this run and exit (no GPU, no mpirun needed): 0 if it fits "
                  "--device-memory, 3 if not"));
  t.push_back(opt("world-size", S::general, K::value, &RunConfig::plan_world_size, false,
                  "with --plan: the ranks to plan for (default: this job's)"));
  RunOption format = opt("format", S::general, K::value, &RunConfig::format, true,
                         "output of --plan, --list-models and --list-options: text (for people) or json (one line, for tools "
                         "such as qwen3-sweep)");
  set_choices(format, "--format", &RunConfig::format, {"text", "json"});
  t.push_back(format);
  t.push_back(opt("device-memory", S::general, K::value, &RunConfig::device_memory, false,
                  "memory of one device: a GPU name (" + known_gpu_names() + ", what CUDA gives a process on that card) or "
                  "a size in GiB/MiB (binary: 1 GiB = 2^30 bytes) or GB/MB (decimal: 1 GB = 10^9 bytes; 80GB is 74.5 GiB); "
                  "for --plan (default: the card --calibration was measured on, else " + std::string(kDefaultPlanDevice) + "), and for the check that stops a CUDA run "
                  "whose plan does not fit before it allocates (default: the device's own)"));
  RunOption host = opt("host-memory", S::general, K::value, &RunConfig::host_memory, false,
                       "memory of one node's host, which its ranks share for pinned buffers (offloaded inputs, an offloaded "
                       "optimizer): a size such as 2TB or 512GiB. --recompute auto aims within " +
                       std::to_string(static_cast<int>(kPinnableShare * 100)) + "% of it over the ranks on the node; a "
                       "run whose ranks would pin more than all of it is refused. For --plan (not checked when not given) and "
                       "a CUDA run (default: the host's available memory)");
  host.check = [](const RunConfig& c) {
    if (!c.host_memory.empty()) parse_byte_size("--host-memory", c.host_memory);
  };
  t.push_back(host);
  RunOption ranks = opt("ranks-per-node", S::general, K::value, &RunConfig::plan_ranks_per_node, false,
                        "with --plan: the ranks on one node, which share its host memory and CPU cores (default: the world "
                        "size, at most " + std::to_string(kPlanRanksPerNode) + ")");
  ranks.check = rule([](const RunConfig& c) { return c.plan && c.plan_ranks_per_node >= 1; },  // checked when given
                     [](const RunConfig&) { return "--ranks-per-node is for --plan (a run counts its own) and takes 1 or more"; });
  t.push_back(ranks);
  t.push_back(opt("calibration", S::general, K::value, &RunConfig::calibration, false,
                  "a GPU kind's measured costs (qwen3-calibrate's JSON): --plan then also predicts step time, tokens/s and "
                  "MFU, and the plan's runtime reserve is the measured one; default: calibration/<kind>.json beside the "
                  "executables for --device-memory's GPU name (--plan) or for the device's kind (a CUDA run), when there "
                  "is one"));
  RunOption estimate = opt("estimate-from", S::general, K::value, &RunConfig::estimate_from, false,
                           "another GPU kind's calibration (h100-80gb, h200, or a file) from which to estimate the FP8 "
                           "kernels the calibration lacks: each as this card's bf16 counterpart times that card's "
                           "FP8-over-bf16 ratio, and the prediction says so (docs/fp8.md); default: none, such a "
                           "prediction names what to measure");
  estimate.check = [](const RunConfig& c) {  // the other card's own kind is refused once the calibration is known
    if (c.estimate_from.empty()) return;
    if (!c.plan && c.device != "cuda")
      throw UsageError("--estimate-from prices the step prediction that --plan and CUDA runs make; this run is on "
                       "the " + c.device);
    estimate_source_path(c.estimate_from);
  };
  t.push_back(estimate);
  t.push_back(opt("force", S::general, K::flag, &RunConfig::force, true,
                  "run even when the memory plan says it does not fit"));
}

// The model, the data and the optimizer.
void add_model_and_optimizer(std::vector<RunOption>& t) {
  RunOption model = opt("model", S::run, K::value, {}, true, "preset: tiny, 0.6B, 1.7B, 4B, 8B, 14B, 32B");
  model.resolve = [](RunConfig& c, const std::string& v) { c.model = model_preset(v), c.model_source = v; };
  model.recorded = [](const RunConfig& c) { return c.model_source; };
  t.push_back(model);
  RunOption model_config = opt("model-config", S::run, K::value, {}, false,
                               "INI model config (Hugging Face key names) instead of a preset", "");  // /config: model
  model_config.resolve = [](RunConfig& c, const std::string& v) { c.model = load_model_config(v), c.model_source = v; };
  t.push_back(model_config);
  t.push_back(opt("data", S::run, K::value, &RunConfig::data, false, "dataset file (qwen3-dataset; docs/datasets.md)"));
  RunOption seq = opt("seq-len", S::run, K::value, &RunConfig::seq_len, false,
                      "sequence length = the dataset bucket to train on");
  seq.check = positive("--seq-len", &RunConfig::seq_len), seq.layout = true;
  t.push_back(seq);
  RunOption gb = opt("global-batch", S::run, K::value, &RunConfig::global_batch, true, "sequences per optimizer step");
  gb.check = positive("--global-batch", &RunConfig::global_batch), gb.layout = true;
  t.push_back(gb);
  RunOption mb = opt("micro-batch", S::run, K::value, &RunConfig::micro_batch, true, "sequences per forward/backward");
  mb.check = positive("--micro-batch", &RunConfig::micro_batch), mb.layout = true;
  t.push_back(mb);
  RunOption steps = opt("steps", S::run, K::value, &RunConfig::steps, true, "optimizer steps");
  steps.check = positive("--steps", &RunConfig::steps);
  t.push_back(steps);
  RunOption lr = opt("lr", S::run, K::value, &RunConfig::lr, true, "peak learning rate");
  lr.check = positive("--lr", &RunConfig::lr);
  t.push_back(lr);
  RunOption min_lr = opt("min-lr", S::run, K::value, &RunConfig::min_lr, true, "learning rate at the last step (cosine decay)");
  min_lr.check = rule([](const RunConfig& c) { return c.min_lr >= 0 && c.min_lr <= c.lr; }, [](const RunConfig& c) {
    return "--min-lr must be between 0 and --lr (" + num(c.lr) + "), got " + num(c.min_lr);
  });
  t.push_back(min_lr);
  RunOption warmup = opt("warmup-steps", S::run, K::value, &RunConfig::warmup_steps, true, "linear warmup steps");
  warmup.check = rule([](const RunConfig& c) { return c.warmup_steps >= 0; }, [](const RunConfig& c) {
    return "--warmup-steps must be 0 or more, got " + std::to_string(c.warmup_steps);
  });
  t.push_back(warmup);
  RunOption wd = opt("weight-decay", S::run, K::value, &RunConfig::weight_decay, true, "AdamW decoupled decay (2-D weights)");
  wd.check = rule([](const RunConfig& c) { return c.weight_decay >= 0; },
                  [](const RunConfig& c) { return "--weight-decay must be 0 or more, got " + num(c.weight_decay); });
  t.push_back(wd);
  RunOption clip = opt("clip-grad", S::run, K::value, &RunConfig::clip_grad, true, "max global gradient norm; 0 = off");
  clip.check = rule([](const RunConfig& c) { return c.clip_grad >= 0; },
                    [](const RunConfig& c) { return "--clip-grad must be 0 (off) or positive, got " + num(c.clip_grad); });
  t.push_back(clip);
  RunOption beta1 = opt("beta1", S::run, K::value, &RunConfig::beta1, true, "AdamW beta1", "beta1");
  beta1.check = rule([](const RunConfig& c) { return c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1; },
                     [](const RunConfig&) { return "--beta1 and --beta2 must be in [0, 1)"; });
  t.push_back(beta1);
  t.push_back(opt("beta2", S::run, K::value, &RunConfig::beta2, true, "AdamW beta2", "beta2"));  // checked with beta1
  RunOption eps = opt("adam-eps", S::run, K::value, &RunConfig::adam_eps, true, "AdamW epsilon");
  eps.check = positive("--adam-eps", &RunConfig::adam_eps);
  t.push_back(eps);
  RunOption init = opt("init-std", S::run, K::value, &RunConfig::init_std, true, "std of the normal init of 2-D weights");
  init.check = positive("--init-std", &RunConfig::init_std);
  t.push_back(init);
  RunOption seed = opt("seed", S::run, K::value, {}, true, "seed for weights and document order");
  seed.resolve = [](RunConfig& c, const std::string& v) { c.seed = parse_seed("--seed", v); };
  seed.recorded = [](const RunConfig& c) { return std::to_string(c.seed); };
  t.push_back(seed);
}

// The backend, the layout and the memory policy.
void add_layout(std::vector<RunOption>& t) {
  RunOption device = opt("device", S::run, K::value, &RunConfig::device, true, "backend: cpu or cuda");
  set_choices(device, "--device", &RunConfig::device, {"cpu", "cuda"});
  t.push_back(device);
  t.push_back(opt("out", S::run, K::value, &RunConfig::out, false, "results file to write (docs/results.md)"));
  t.push_back(opt("overwrite", S::run, K::flag, &RunConfig::overwrite, true, "replace an existing results file"));
  for (auto [name, field, help] : {std::tuple{"tp", &RunConfig::tp, "tensor-parallel size"},
                                   std::tuple{"pp", &RunConfig::pp, "pipeline-parallel size"}}) {
    RunOption o = opt(name, S::run, K::value, field, true, help, name);
    o.check = at_least_one(name[0] == 't' ? "--tp" : "--pp", field), o.layout = true;
    t.push_back(o);
  }
  t.push_back(opt("recompute", S::run, K::value, &RunConfig::recompute, true,
                  "activation recomputation: none; selective (recompute the norm outputs and the normed, rotated q and k); "
                  "full (keep each layer's input, recompute the rest in the backward); or auto (the cheapest that the "
                  "memory plan says fits the device: none, selective, full, full with the inputs offloaded; then the same "
                  "with the smallest share of the optimizer on the host that fits, unless --offload-optimizer is given)"));
  t.push_back(opt("recompute-num-layers", S::run, K::value, &RunConfig::recompute_num_layers, true,
                  "with full recomputation: recompute only the first N layers of each pipeline stage (0: all)"));
  t.push_back(opt("offload-inputs", S::run, K::flag, &RunConfig::offload_inputs, true,
                  "with full recomputation: keep the recomputed layers' inputs in pinned host memory, copied out during the "
                  "forward and back during the backward (CUDA; on the CPU backend everything is in host memory already)"));
  t.push_back(opt("allow-cross-node-tp", S::run, K::flag, &RunConfig::allow_cross_node_tp, true,
                  "run even when a tensor- or context-parallel group spans nodes (refused by default: their collectives run "
                  "in every layer and belong inside a node's NVLink domain; start tp × cp ranks or more per node)"));
  RunOption offload = opt("offload-optimizer", S::run, K::value, &RunConfig::offload_optimizer, false,
                          "keep the fp32 master weights and AdamW moments in pinned host memory and run AdamW on the CPU "
                          "(CUDA): --offload-optimizer for all of this rank's optimizer state, --offload-optimizer=0.4 for "
                          "the last 40% of it (the rest stays on the device), =0 for none (auto then never offloads it)");
  offload.implicit = "1", offload.value_name = "FRACTION";
  offload.check = [](const RunConfig& c) {
    if (c.offload_optimizer >= 0) validate_optimizer_offload(c.offload_optimizer);
  };
  offload.recorded = [](const RunConfig& c) {
    return c.offload_optimizer >= 0 ? num(c.offload_optimizer) : c.recompute == "auto" ? "auto" : "0";
  };
  t.push_back(offload);
  t.push_back(opt("no-shard-optimizer", S::run, K::negated_flag, &RunConfig::shard_optimizer, true,
                  "keep the full fp32 master weights and AdamW state on every data-parallel replica (default: sharded, "
                  "ZeRO-1)",
                  "shard_optimizer"));
}

// Pipeline stages, context parallelism and the CUDA engine's settings.
// A --precision fp8 option's choices (the first the default), a layout check: any other value refused in bf16.
void fp8_choices(RunOption& o, const char* flag, std::string RunConfig::*field, std::vector<std::string> choices) {
  const std::string neutral = choices.front();
  set_choices(o, flag, field, std::move(choices));
  o.check = [values = o.check, flag, field, neutral](const RunConfig& c) {
    values(c);
    if (c.*field != neutral && c.precision != "fp8")
      throw UsageError(std::string(flag) + " " + c.*field + " applies to --precision fp8 only (this run is " + c.precision +
                       ")");
  };
  o.layout = true;
}

void add_engine(std::vector<RunOption>& t) {
  RunOption pp_layers = opt("pp-layers", S::run, K::value, {}, false,
                            "layers per pipeline stage, e.g. 3,4,4 (default: split to balance compute and memory, the "
                            "embedding and output projection counted)");
  pp_layers.resolve = [](RunConfig& c, const std::string& v) { c.pp_layers = parse_layer_list("--pp-layers", v); };
  pp_layers.recorded = [](const RunConfig& c) {
    return join_counts(pipeline_layer_counts(c.model, c.pp, c.seq_len, c.pp_layers));
  };
  t.push_back(pp_layers);
  RunOption cp = opt("cp", S::run, K::value, &RunConfig::cp, true, "context-parallel size");
  cp.check = at_least_one("--cp", &RunConfig::cp), cp.layout = true;
  t.push_back(cp);
  RunOption attention = opt("attention", S::run, K::value, &RunConfig::attention, true,
                            "CUDA attention: cudnn (cuDNN's fused flash attention; a run stops if cuDNN cannot run it) or own "
                            "(the project's kernels, whole sequences only: no --cp); --plan counts the chosen one's workspace");
  set_choices(attention, "--attention", &RunConfig::attention, {"cudnn", "own"});
  attention.layout = true;
  t.push_back(attention);
  RunOption precision = opt("precision", S::run, K::value, &RunConfig::precision, true,
                            "matrix multiplications of the decoder layers' linear layers: bf16, or fp8 (E4M3 weights and "
                            "activations, E5M2 gradients, per-tensor scaling (--fp8-scaling), fp32 accumulation; embeddings, "
                            "norms, attention, the output projection and the optimizer stay as in bf16: docs/fp8.md)");
  set_choices(precision, "--precision", &RunConfig::precision, {"bf16", "fp8"});
  precision.layout = true;
  t.push_back(precision);
  RunOption fp8_weights = opt("fp8-weights", S::run, K::value, &RunConfig::fp8_weights, true,
                              "with --precision fp8: kept (each layer's FP8 weight copies cast once per optimizer step and "
                              "kept: 2 bytes per linear weight), per-layer (cast into one layer's buffer before each "
                              "layer's forward and backward: less memory, more casts) or auto (kept, unless --recompute "
                              "auto needs the memory: it tries per-layer before each costlier activation policy; docs/fp8.md)");
  fp8_choices(fp8_weights, "--fp8-weights", &RunConfig::fp8_weights, {"auto", "kept", "per-layer"});
  t.push_back(fp8_weights);
  RunOption fp8_scaling = opt("fp8-scaling", S::run, K::value, &RunConfig::fp8_scaling, true,
                              "with --precision fp8: current (every FP8 tensor scaled by its own amax) or delayed (gate|up's "
                              "output gradient and down's input, which the SwiGLU backward and forward then write in FP8 "
                              "themselves, scaled by the largest amax of the same tensor over the previous step and every "
                              "rank — the gradient with one binade of margin; the first step as current; docs/fp8.md)");
  fp8_choices(fp8_scaling, "--fp8-scaling", &RunConfig::fp8_scaling, {"current", "delayed"});
  t.push_back(fp8_scaling);
  RunOption margin = opt("comm-sm-margin", S::run, K::value, &RunConfig::comm_sm_margin, true,
                         "CUDA with --tp: run the weight-gradient GEMMs that overlap the tensor-parallel collectives on all "
                         "but N SMs (0: all; measured on 4 x H100: no gain at 16)");
  margin.check = rule([](const RunConfig& c) { return c.comm_sm_margin >= 0; }, [](const RunConfig& c) {
    return "--comm-sm-margin must be 0 or more SMs, got " + std::to_string(c.comm_sm_margin);
  });
  margin.layout = true;
  t.push_back(margin);
  t.push_back(opt("no-gemm-autotune", S::run, K::negated_flag, &RunConfig::gemm_autotune, true,
                  "CUDA: take cuBLASLt's first heuristic algorithm per GEMM shape instead of timing its candidates at start",
                  "gemm_autotune"));
  t.push_back(opt("shared-gpu-staging", S::run, K::flag, &RunConfig::shared_gpu_staging, true,
                  "CUDA: let tensor-, pipeline- and data-parallel ranks that share one GPU exchange through host memory "
                  "(slow; for checking those paths on a host with fewer GPUs than ranks) instead of refusing them"));
  t.push_back(opt("op-times", S::run, K::flag, &RunConfig::op_times, true,
                  "CUDA: time every operation of the step with CUDA events and print the GPU time per operation at exit "
                  "(a benchmark aid: it synchronises and slows the step)"));
}

// Hugging Face weights, checkpoints, resumption and the memory trace.
void add_io(std::vector<RunOption>& t) {
  t.push_back(opt("init-from-hf", S::run, K::value, &RunConfig::init_from_hf, false,
                  "start from a Hugging Face Qwen3 checkpoint folder (config.json and *.safetensors, sharded or not, "
                  "bf16/fp16/fp32): the model comes from its config.json, the weights from its files, every name and shape "
                  "checked"));
  t.push_back(opt("export-hf", S::run, K::value, &RunConfig::export_hf, false,
                  "at the end of a successful run, write the weights there as a Hugging Face checkpoint (config.json, "
                  "safetensors)"));
  RunOption dtype = opt("export-dtype", S::run, K::value, &RunConfig::export_dtype, true, "--export-hf weights: bf16 or fp32");
  set_choices(dtype, "--export-dtype", &RunConfig::export_dtype, {"bf16", "fp32"});
  t.push_back(dtype);
  t.push_back(opt("save", S::run, K::value, &RunConfig::save, false,
                  "checkpoint folder: a checkpoint at the end (and every --save-interval steps), written by every rank in "
                  "parallel, published atomically (docs/checkpoints.md)"));
  RunOption interval = opt("save-interval", S::run, K::value, &RunConfig::save_interval, true,
                           "a checkpoint every N steps (0: only at the end)");
  interval.check = rule([](const RunConfig& c) { return c.save_interval >= 0; },
                        [](const RunConfig&) { return "--save-interval must be 0 (only at the end) or positive"; });
  t.push_back(interval);
  RunOption keep = opt("save-keep", S::run, K::value, &RunConfig::save_keep, true, "newest checkpoints kept under --save (0: all)");
  keep.check = rule([](const RunConfig& c) { return c.save_keep >= 0; },
                    [](const RunConfig&) { return "--save-keep must be 0 (keep all) or positive"; });
  t.push_back(keep);
  t.push_back(opt("auto-resume", S::run, K::flag, &RunConfig::auto_resume, true,
                  "resume from --save's latest checkpoint when it has one, else start fresh (for jobs that are requeued)"));
  RunOption grace = opt("preempt-grace", S::run, K::value, &RunConfig::preempt_grace_s, true,
                        "with --save: seconds a run stopped by SIGTERM/SIGUSR1 has to finish its step and save before it "
                        "exits anyway",
                        "preempt_grace_s");
  grace.check = rule([](const RunConfig& c) { return c.preempt_grace_s > 0; },
                     [](const RunConfig&) { return "--preempt-grace must be positive (seconds)"; });
  t.push_back(grace);
  t.push_back(opt("resume", S::run, K::value, &RunConfig::resume, false,
                  "continue from a checkpoint folder (or a --save folder: its latest), in any tp/pp/dp layout; --steps "
                  "counts from the start of the run"));
  RunOption trace = opt("memory-interval-ms", S::run, K::value, &RunConfig::memory_interval_ms, true,
                        "memory trace sampling interval");
  trace.check = rule([](const RunConfig& c) { return c.memory_interval_ms >= 1; }, [](const RunConfig& c) {
    return "--memory-interval-ms must be at least 1, got " + std::to_string(c.memory_interval_ms);
  });
  t.push_back(trace);
}

}  // namespace

const std::vector<RunOption>& run_option_table() {
  static const std::vector<RunOption> table = [] {
    std::vector<RunOption> t;
    add_general(t);
    add_model_and_optimizer(t);
    add_layout(t);
    add_engine(t);
    add_io(t);
    return t;
  }();
  return table;
}

const RunOption& run_option(const std::string& name) {
  for (const auto& o : run_option_table())
    if (o.name == name) return o;
  throw InternalError("no option --" + name + " in the option table");
}

std::string field_text(const RunConfig& c, const RunOption::Field& field) {
  return std::visit(
      [&](auto m) -> std::string {
        using M = decltype(m);
        if constexpr (std::is_same_v<M, std::monostate>) return "";
        else if constexpr (std::is_same_v<M, std::string RunConfig::*>) return c.*m;
        else if constexpr (std::is_same_v<M, bool RunConfig::*>) return c.*m ? "true" : "false";
        else if constexpr (std::is_same_v<M, double RunConfig::*>) return num(c.*m);
        else return std::to_string(c.*m);
      },
      field);
}

std::string recorded_value(const RunConfig& c, const RunOption& o) {
  return o.recorded ? o.recorded(c) : field_text(c, o.field);
}

namespace {

const char* type_name(const RunOption& o) {
  if (o.kind != K::value) return "flag";
  return std::visit(
      [](auto m) -> const char* {
        using M = decltype(m);
        if constexpr (std::is_same_v<M, double RunConfig::*>) return "number";
        else if constexpr (std::is_same_v<M, std::int64_t RunConfig::*> || std::is_same_v<M, int RunConfig::*>)
          return "integer";
        else return "text";
      },
      o.field);
}

// The default as text: the field's (or the resolved one's record) in a default RunConfig; null when not given is its
// own state.
nlohmann::json default_of(const RunOption& o) {
  if (!o.shows_default) return nullptr;
  static const RunConfig defaults;
  if (o.kind == K::negated_flag || o.kind == K::flag) return "false";
  if (std::holds_alternative<std::monostate>(o.field)) return o.recorded ? o.recorded(defaults) : "";
  return field_text(defaults, o.field);
}

}  // namespace

std::string run_options_json() {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& o : run_option_table())
    out.push_back({{"name", o.name}, {"key", key_of(o.name)}, {"section", o.section == S::run ? "run" : "general"},
                   {"type", type_name(o)}, {"default", default_of(o)}, {"help", o.help},
                   {"config_key", o.config_key.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.config_key)},
                   {"choices", o.choices.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.choices)}});
  return out.dump();
}

std::string run_options_text() {
  std::string out;
  for (const auto& o : run_option_table()) {
    const nlohmann::json d = default_of(o);
    out += "--" + o.name + " (" + type_name(o) + (o.section == S::run ? ", --config key " + key_of(o.name) : "") +
           (d.is_null() ? "" : ", default " + d.get<std::string>()) + ")\n";
  }
  return out;
}

}  // namespace qwen3
