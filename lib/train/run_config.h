// One training run's settings, typed and validated (app/ fills it from the command line and an INI file). Each
// option's name, help, check and /config key is in train/run_option_table.h.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/model_config.h"
#include "train/memory_plan.h"

namespace qwen3 {

struct RunConfig {
  ModelConfig model;                 // from --model PRESET or --model-config FILE
  std::string model_source = "tiny"; // the preset name or the config file path
  std::string data;                  // dataset file (docs/datasets.md)
  std::int64_t seq_len = 0;          // tokens per sequence = the dataset bucket used
  std::int64_t global_batch = 32;    // sequences per optimizer step, over all data-parallel ranks
  std::int64_t micro_batch = 1;      // sequences per forward/backward
  std::int64_t steps = 50;
  double lr = 3e-4, min_lr = 3e-5;   // peak and final learning rate (cosine decay)
  std::int64_t warmup_steps = 10;    // linear warmup steps
  double weight_decay = 0.1;         // decoupled, 2-D weights only
  double clip_grad = 1.0;            // max global gradient norm; 0 = no clipping
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  double init_std = 0.02;
  std::uint64_t seed = 1234;
  std::string device = "cpu";        // cpu | cuda
  std::string out;                   // results file (docs/results.md)
  bool overwrite = false;
  int tp = 1, pp = 1, cp = 1;        // tensor, pipeline, context parallel sizes; dp = world / (tp·pp·cp)
  std::vector<std::int64_t> pp_layers;  // --pp-layers: layers per pipeline stage (empty: the balanced split)
  bool plan = false;                 // --plan: print the memory plan (train/memory_plan.h) and exit
  int plan_world_size = 0;           // --world-size for --plan (0: the job's)
  std::string format = "text";       // --format of --plan and --list-models: text (people) or json (tools)
  std::string device_memory;         // --device-memory: a device's memory for --plan (80GB when not given) and for
                                     // the check before a CUDA run allocates (the device's own when not given)
  std::string host_memory;           // --host-memory: a node's memory its ranks pin from, for --plan (unchecked when
                                     // not given) and a run (the host's available memory when not given)
  int plan_ranks_per_node = 0;       // --ranks-per-node for --plan (0: the world size, at most kPlanRanksPerNode)
  std::string calibration;           // --calibration: a GPU kind's measured costs (train/calibration.h); default: the
                                     // committed calibration/<kind>.json of --device-memory's GPU or the device's kind
  std::string estimate_from;         // --estimate-from: another card's calibration (a kind or a file) for the FP8
                                     // kernels the calibration lacks (train/calibration.h CalibrationPricer)
  std::string recompute = "none";   // none | selective | full | auto (--recompute; model/memory_policy.h)
  std::int64_t recompute_num_layers = 0;  // full: the first N layers of each stage (0: all)
  bool offload_inputs = false;      // full: kept layer inputs in pinned host memory
  double offload_optimizer = -1;     // --offload-optimizer[=F]: the optimizer shard's fraction on the host (< 0: not given)
  bool shard_optimizer = true;      // ZeRO-1 over data-parallel replicas (--no-shard-optimizer: every replica keeps all)
  std::string attention = "cudnn";   // --attention: cudnn (fused flash attention) | own (the project's kernels), CUDA
  std::string precision = "bf16";    // --precision: bf16 | fp8 (the decoder layers' linear layers in FP8: ops/fp8.h)
  std::string fp8_weights = "auto";  // --fp8-weights: kept | per-layer | auto (model/memory_policy.h)
  std::string fp8_scaling = "current";  // --fp8-scaling: current | delayed (train/engine.h EngineOptions::fp8_delayed)
  int comm_sm_margin = 0;            // --comm-sm-margin: SMs kept from the GEMMs beside tensor-parallel collectives
  bool gemm_autotune = true;         // --no-gemm-autotune: cuBLASLt's first heuristic algorithm, untimed
  bool shared_gpu_staging = false;   // --shared-gpu-staging: ranks sharing a GPU exchange through host memory
  bool op_times = false;             // --op-times: the CUDA engine's per-operation GPU times, printed at exit
  bool force = false;                // --force: run even when the memory plan does not fit
  bool allow_cross_node_tp = false;  // --allow-cross-node-tp: run tensor/context-parallel groups that span nodes
  std::string init_from_hf;          // --init-from-hf: a Hugging Face checkpoint folder (model and weights from it)
  std::string export_hf;             // --export-hf: write the final weights there as a Hugging Face checkpoint
  std::string export_dtype = "bf16"; // bf16 | fp32
  std::string save;                  // --save: checkpoint folder (train/checkpoint.h)
  std::int64_t save_interval = 0;    // a checkpoint every N steps (0: only at the end)
  std::int64_t save_keep = 2;        // newest checkpoints kept (0: all)
  std::string resume;                // --resume: a checkpoint folder, or a --save folder (its latest)
  bool auto_resume = false;          // --auto-resume: resume from --save's latest checkpoint when there is one
  double preempt_grace_s = 120;      // with --save: seconds a signalled run has to reach its next step and save
  std::int64_t memory_interval_ms = 100;

  // Throws UsageError naming the first bad field. world_size: ranks in the job.
  // --recompute, --recompute-num-layers, --offload-inputs and --offload-optimizer as the memory planner takes them.
  MemoryRequest memory_request() const {
    return {recompute, recompute_num_layers, offload_inputs, offload_optimizer, fp8_weights};
  }
  void validate(int world_size) const;
  // --fp8-scaling delayed in effect (an fp8 run's), and the precision as a run, --plan and the results name it
  // ("fp8 (delayed scaling)").
  bool fp8_delayed() const { return precision == "fp8" && fp8_scaling == "delayed"; }
  std::string precision_label() const { return precision + (fp8_delayed() ? " (delayed scaling)" : ""); }
  // The memory planner's and step model's view of this run on world_size ranks, before the memory policy is chosen:
  // the one description that --plan and a starting run share.
  PlannedRun plan_input(int world_size) const;
  // The part of validate that --plan needs (no data, no output): the model, the batch and sequence sizes, and the
  // layout of world_size ranks against them, with the rules of the CUDA backend when `cuda`.
  void validate_layout(int world_size, bool cuda) const;
  // Sequences each data-parallel rank runs per step, and micro-batches per step.
  std::int64_t dp_size(int world_size) const { return world_size / (tp * pp * cp); }
  std::int64_t micro_batches_per_step(int world_size) const { return global_batch / (micro_batch * dp_size(world_size)); }
  // Every setting as (name, value) text, for the results file's /config: the model's, then each option's that
  // records one (train/run_option_table.h).
  std::vector<std::pair<std::string, std::string>> key_values() const;
};

}  // namespace qwen3
