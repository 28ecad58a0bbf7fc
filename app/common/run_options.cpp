// Option table of qwen3-pretrain (see run_options.h and docs/cli.md).
#include "common/run_options.h"

#include <boost/program_options.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "common/help.h"
#include "common/options_util.h"
#include "config/ini.h"
#include "core/error.h"
#include "model/recompute.h"
#include "core/format.h"
#include "io/hf_checkpoint.h"
#include "model/pipeline_split.h"
#include "train/engine.h"
#include "train/memory_plan.h"

namespace po = boost::program_options;

namespace qwen3 {
namespace {

// The --config file: keys as on the command line without '--', or with '_' for '-' as sweep specifications spell
// them (global_batch = 32); an unknown key is refused naming the closest valid one.
po::parsed_options parse_run_config_file(const std::string& path, const po::options_description& run,
                                         const po::options_description& general) {
  std::ifstream in(path);
  if (!in) throw UsageError("--config: cannot read '" + path + "'");
  po::parsed_options parsed = po::parse_config_file(in, run, /*allow_unregistered=*/true);
  std::vector<std::string> keys;
  for (const auto& o : run.options()) keys.push_back(o->long_name());
  for (auto& o : parsed.options) {
    if (!o.unregistered) continue;
    std::string key = o.string_key;
    std::replace(key.begin(), key.end(), '_', '-');
    if (run.find_nothrow(key, false) != nullptr) {
      o.string_key = key;
      o.unregistered = false;
    } else if (general.find_nothrow(key, false) != nullptr) {
      throw UsageError("--config '" + path + "': '" + o.string_key + "' is a command-line option only (--" + key + ")");
    } else {
      throw UsageError("--config '" + path + "': " + unknown_key_message(o.string_key, keys));
    }
  }
  return parsed;
}

// The exit codes qwen3-pretrain ends with, for --help.
std::string pretrain_exit_codes() {
  return exit_codes_help({{ExitCode::ok, "--plan: the plan fits"},
                          {ExitCode::internal},
                          {ExitCode::usage},
                          {ExitCode::input, "--plan: the plan does not fit the device memory"},
                          {ExitCode::output},
                          {ExitCode::out_of_memory},
                          {ExitCode::preempted, "only with --save"},
                          {ExitCode::diverged, "a loss or gradient norm was not finite (status diverged)"}});
}

// What the command line gives before it becomes a RunConfig's fields (resolved by resolve_run_options).
struct RawRunOptions {
  std::string model = "tiny", model_config, config_file, pp_layers, seed;
  bool no_shard = false, no_gemm_autotune = false;
};

// The command-line-only options (not keys of --config): what to do, and the plan's and the run's machine.
po::options_description general_options(RunConfig& c, RawRunOptions& raw) {
  po::options_description general("General");
  general.add_options()("help,h", "show this help")("list-devices", "print the backends that can run on this host (one per line) and exit")(
      "config", po::value(&raw.config_file), "INI file of the Run options below (keys without '--'; '_' may stand for '-'); "
      "the command line overrides it")(
      "plan", po::bool_switch(&c.plan), "print the CUDA engine's memory per rank for this run and exit (no GPU, no "
      "mpirun needed): 0 if it fits --device-memory, 3 if not")(
      "world-size", po::value(&c.plan_world_size), "with --plan: the ranks to plan for (default: this job's)")(
      "list-models", "print the model presets (name, vocabulary, layers, parameters) and exit")(
      "format", po::value(&c.format)->default_value(c.format),
      "output of --plan and --list-models: text (for people) or json (one line, for tools such as qwen3-sweep)")(
      "device-memory", po::value(&c.device_memory),
      ("memory of one device: a GPU name (" + known_gpu_names() + ", what CUDA gives a process on that card) or a "
       "size in GiB/MiB (binary: 1 GiB = 2^30 bytes) or GB/MB (decimal: 1 GB = 10^9 bytes; 80GB is 74.5 GiB); for "
       "--plan (default " + std::string(kDefaultPlanDevice) + "), and for the check that stops a CUDA run whose plan "
       "does not fit before it allocates (default: the device's own)").c_str())(
      "host-memory", po::value(&c.host_memory),
      ("memory of one node's host, which its ranks share for pinned buffers (offloaded inputs, an offloaded "
       "optimizer): a size such as 2TB or 512GiB. --recompute auto aims within " +
       std::to_string(static_cast<int>(kPinnableShare * 100)) + "% of it over the ranks on the node; a run whose ranks "
       "would pin more than all of it is refused. For --plan (not checked when not given) and a CUDA run (default: "
       "the host's available memory)").c_str())(
      "ranks-per-node", po::value(&c.plan_ranks_per_node),
      ("with --plan: the ranks on one node, which share its host memory and CPU cores (default: the world size, at "
       "most " + std::to_string(kPlanRanksPerNode) + ")").c_str())(
      "calibration", po::value(&c.calibration),
      "a GPU kind's measured costs (qwen3-calibrate's JSON): --plan then also predicts step time, tokens/s and MFU, "
      "and the plan's runtime reserve is the measured one; default: calibration/<kind>.json beside the executables for "
      "--device-memory's GPU name (--plan) or for the device's kind (a CUDA run), when there is one")(
      "force", po::bool_switch(&c.force), "run even when the memory plan says it does not fit");
  return general;
}

// The run's options, also keys of --config. Values that need resolving after parsing land in `raw`.
po::options_description run_options(RunConfig& c, RawRunOptions& raw) {
  po::options_description run("Run (also valid as keys in --config)");
  run.add_options()
      ("model", po::value(&raw.model)->default_value("tiny"), "preset: tiny, 0.6B, 1.7B, 4B, 8B, 14B, 32B")
      ("model-config", po::value(&raw.model_config), "INI model config (Hugging Face key names) instead of a preset")
      ("data", po::value(&c.data), "dataset file (qwen3-dataset; docs/datasets.md)")
      ("seq-len", po::value(&c.seq_len), "sequence length = the dataset bucket to train on")
      ("global-batch", po::value(&c.global_batch)->default_value(c.global_batch), "sequences per optimizer step")
      ("micro-batch", po::value(&c.micro_batch)->default_value(c.micro_batch), "sequences per forward/backward")
      ("steps", po::value(&c.steps)->default_value(c.steps), "optimizer steps")
      ("lr", number_value(&c.lr), "peak learning rate")
      ("min-lr", number_value(&c.min_lr), "learning rate at the last step (cosine decay)")
      ("warmup-steps", po::value(&c.warmup_steps)->default_value(c.warmup_steps), "linear warmup steps")
      ("weight-decay", number_value(&c.weight_decay), "AdamW decoupled decay (2-D weights)")
      ("clip-grad", number_value(&c.clip_grad), "max global gradient norm; 0 = off")
      ("beta1", number_value(&c.beta1), "AdamW beta1")
      ("beta2", number_value(&c.beta2), "AdamW beta2")
      ("adam-eps", number_value(&c.adam_eps), "AdamW epsilon")
      ("init-std", number_value(&c.init_std), "std of the normal init of 2-D weights")
      ("seed", po::value(&raw.seed)->default_value(raw.seed), "seed for weights and document order")
      ("device", po::value(&c.device)->default_value(c.device), "backend: cpu or cuda")
      ("out", po::value(&c.out), "results file to write (docs/results.md)")
      ("overwrite", po::bool_switch(&c.overwrite), "replace an existing results file")
      ("tp", po::value(&c.tp)->default_value(c.tp), "tensor-parallel size")
      ("pp", po::value(&c.pp)->default_value(c.pp), "pipeline-parallel size")
      ("recompute", po::value(&c.recompute)->default_value(c.recompute),
       "activation recomputation: none; selective (recompute the norm outputs and the normed, rotated q and k); full "
       "(keep each layer's input, recompute the rest in the backward); or auto (the cheapest that the memory plan "
       "says fits the device: none, selective, full, full with the inputs offloaded; then the same with the smallest "
       "share of the optimizer on the host that fits, unless --offload-optimizer is given)")
      ("recompute-num-layers", po::value(&c.recompute_num_layers)->default_value(c.recompute_num_layers),
       "with full recomputation: recompute only the first N layers of each pipeline stage (0: all)")
      ("offload-inputs", po::bool_switch(&c.offload_inputs),
       "with full recomputation: keep the recomputed layers' inputs in pinned host memory, copied out during the "
       "forward and back during the backward (CUDA; on the CPU backend everything is in host memory already)")
      ("allow-cross-node-tp", po::bool_switch(&c.allow_cross_node_tp),
       "run even when a tensor- or context-parallel group spans nodes (refused by default: their collectives run in "
       "every layer and belong inside a node's NVLink domain; start tp × cp ranks or more per node)")
      ("offload-optimizer", po::value(&c.offload_optimizer)->implicit_value(1.0, "1")->value_name("FRACTION"),
       "keep the fp32 master weights and AdamW moments in pinned host memory and run AdamW on the CPU (CUDA): "
       "--offload-optimizer for all of this rank's optimizer state, --offload-optimizer=0.4 for the last 40% of it "
       "(the rest stays on the device), =0 for none (auto then never offloads it)")
      ("no-shard-optimizer", po::bool_switch(&raw.no_shard),
       "keep the full fp32 master weights and AdamW state on every data-parallel replica (default: sharded, ZeRO-1)")
      ("pp-layers", po::value(&raw.pp_layers),
       "layers per pipeline stage, e.g. 3,4,4 (default: split to balance compute and memory, the embedding and output "
       "projection counted)")
      ("cp", po::value(&c.cp)->default_value(c.cp), "context-parallel size")
      ("attention", po::value(&c.attention)->default_value(c.attention),
       "CUDA attention: cudnn (cuDNN's fused flash attention; a run stops if cuDNN cannot run it) or own (the "
       "project's kernels, whole sequences only: no --cp); --plan counts the chosen one's workspace")
      ("comm-sm-margin", po::value(&c.comm_sm_margin)->default_value(c.comm_sm_margin),
       "CUDA with --tp: run the weight-gradient GEMMs that overlap the tensor-parallel collectives on all but N SMs "
       "(0: all; measured on 4 x H100: no gain at 16)")
      ("no-gemm-autotune", po::bool_switch(&raw.no_gemm_autotune),
       "CUDA: take cuBLASLt's first heuristic algorithm per GEMM shape instead of timing its candidates at start")
      ("init-from-hf", po::value(&c.init_from_hf),
       "start from a Hugging Face Qwen3 checkpoint folder (config.json and *.safetensors, sharded or not, bf16/fp16/fp32): "
       "the model comes from its config.json, the weights from its files, every name and shape checked")
      ("export-hf", po::value(&c.export_hf),
       "at the end of a successful run, write the weights there as a Hugging Face checkpoint (config.json, safetensors)")
      ("export-dtype", po::value(&c.export_dtype)->default_value(c.export_dtype), "--export-hf weights: bf16 or fp32")
      ("save", po::value(&c.save), "checkpoint folder: a checkpoint at the end (and every --save-interval steps), "
       "written by every rank in parallel, published atomically (docs/checkpoints.md)")
      ("save-interval", po::value(&c.save_interval)->default_value(c.save_interval), "a checkpoint every N steps (0: only at the end)")
      ("save-keep", po::value(&c.save_keep)->default_value(c.save_keep), "newest checkpoints kept under --save (0: all)")
      ("auto-resume", po::bool_switch(&c.auto_resume),
       "resume from --save's latest checkpoint when it has one, else start fresh (for jobs that are requeued)")
      ("preempt-grace", number_value(&c.preempt_grace_s),
       "with --save: seconds a run stopped by SIGTERM/SIGUSR1 has to finish its step and save before it exits anyway")
      ("resume", po::value(&c.resume), "continue from a checkpoint folder (or a --save folder: its latest), in any "
       "tp/pp/dp layout; --steps counts from the start of the run")
      ("memory-interval-ms", po::value(&c.memory_interval_ms)->default_value(c.memory_interval_ms),
       "memory trace sampling interval");
  return run;
}

// --list-models: the presets, one line each (text) or as one JSON array (qwen3-sweep reads it).
void print_model_presets(const std::string& format) {
  if (format == "json") {
    std::cout << presets_json() << "\n";
    return;
  }
  for (const auto& name : preset_names()) {
    const ModelConfig m = model_preset(name);
    std::printf("%-5s vocab %6lld, %2lld layers, hidden %5lld, %s parameters\n", name.c_str(),
                static_cast<long long>(m.vocab_size), static_cast<long long>(m.num_layers),
                static_cast<long long>(m.hidden_size), format_parameter_count(m.parameter_count()).c_str());
  }
}

// --list-devices: the backends that run here on stdout; those built in but not usable here said apart, on stderr.
void print_usable_devices() {
  for (const auto& d : usable_devices()) std::cout << d << "\n";
  for (const auto& d : available_devices())
    if (const std::string why = device_unusable_reason(d); !why.empty())
      std::cerr << "qwen3-pretrain: " << d << " is built in but cannot run here: " << why << "\n";
}

// The model (a preset, an INI config or a Hugging Face folder's config.json) and every value that needs resolving or
// checking once parsing is done.
void resolve_run_options(RunConfig& c, const RawRunOptions& raw, const po::variables_map& vm) {
  c.seed = parse_seed("--seed", raw.seed);
  if (vm.count("model-config") && !vm["model"].defaulted())
    throw UsageError("--model and --model-config are exclusive: give one");
  if (vm.count("init-from-hf") && (vm.count("model-config") || !vm["model"].defaulted()))
    throw UsageError("--init-from-hf takes the model from the folder's config.json: drop --model / --model-config");
  if (vm.count("init-from-hf")) {
    c.model = read_hf_config(c.init_from_hf);
    c.model_source = c.init_from_hf;
  } else if (vm.count("model-config")) {
    c.model = load_model_config(raw.model_config);
    c.model_source = raw.model_config;
  } else {
    c.model = model_preset(raw.model);
    c.model_source = raw.model;
  }
  require_choice("--device", c.device, {"cpu", "cuda"});
  if (c.plan && vm["device"].defaulted()) c.device = "cuda";  // --plan plans the CUDA engine's run unless told cpu
  if (!vm.count("seq-len")) throw UsageError("--seq-len is required (the dataset bucket to train on)");
  if (vm.count("offload-optimizer")) validate_optimizer_offload(c.offload_optimizer);
  if (vm.count("pp-layers")) c.pp_layers = parse_layer_list("--pp-layers", raw.pp_layers);
  if (vm.count("host-memory")) parse_byte_size("--host-memory", c.host_memory);  // refused here, before anything runs
  if (vm.count("ranks-per-node") && (!c.plan || c.plan_ranks_per_node < 1))
    throw UsageError("--ranks-per-node is for --plan (a run counts its own) and takes 1 or more");
  c.shard_optimizer = !raw.no_shard;
  c.gemm_autotune = !raw.no_gemm_autotune;
}

}  // namespace

std::optional<RunConfig> parse_run_options(int argc, char** argv) {
  RunConfig c;
  RawRunOptions raw;
  raw.seed = std::to_string(c.seed);
  const po::options_description general = general_options(c, raw), run = run_options(c, raw);
  po::options_description all(
      "qwen3-pretrain: pretrain a Qwen3 dense model (launch under mpirun: one rank per device)\n"
      "Usage: mpirun -np N qwen3-pretrain --data FILE --seq-len L --out FILE [options]");
  all.add(general).add(run);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, all, vm, nullptr, pretrain_exit_codes())) return std::nullopt;
  require_choice("--format", c.format, {"text", "json"});
  if (vm.count("list-models") || vm.count("list-devices")) {  // an answer instead of a run
    if (vm.count("list-models")) print_model_presets(c.format);
    else print_usable_devices();
    return std::nullopt;
  }
  if (!raw.config_file.empty()) {
    try {
      po::store(parse_run_config_file(raw.config_file, run, general), vm);  // values given on the command line win
      po::notify(vm);
    } catch (const po::error& e) {
      throw UsageError("--config '" + raw.config_file + "': " + e.what());
    }
  }
  resolve_run_options(c, raw, vm);
  return c;
}

}  // namespace qwen3
