// Memory planner: the device bytes one rank of the CUDA engine allocates (train/cuda_engine.cpp takes all of its
// memory at start-up, so this is its peak), computed from the model, the micro-batch shape and the layout without a
// GPU — by category (weights, gradients, optimizer state, activations, workspace) and item. The engine's own
// allocation list and this one must stay the same: a GPU test compares them (tests/unit/cuda_engine_test.cpp).
// Pipeline parallelism: one stage's rank (its layers, its micro-batches in flight). The distributed optimizer's
// shards. Activation recomputation (none, selective, full, per layer) and layer inputs offloaded to pinned host
// memory (counted apart from the device). Context parallelism: each rank's share of every sequence, plus the keys and
// values of whole sequences, one layer at a time.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/model_config.h"
#include "model/memory_policy.h"
#include "train/rank_plan.h"

namespace qwen3 {

struct MemoryItem {
  std::string category;  // weights, gradients, optimizer_state, activations, workspace; runtime (outside the allocator)
  std::string what;
  std::int64_t bytes;
};

// Bytes the CUDA runtime, cuBLAS, cuDNN and NCCL hold outside the engine's allocator when no calibration of the GPU
// kind measured them (train/calibration.h runtime_reserve): added when checking a plan against a device's memory.
inline constexpr std::int64_t kRuntimeReserveBytes = 1ll << 30;

// A run as the memory planner and the step model (train/step_model.h) see it before it starts: the model, the
// micro-batch, the layout, the memory policy; which stage's rank (planned_rank gives its RankPlan).
struct PlannedRun {
  ModelConfig model;
  std::int64_t micro_batch = 1, seq_len = 0;
  int tp = 1, dp = 1, pp = 1, cp = 1;
  bool cudnn_attention = true;  // the engine's default; the own kernels' workspace otherwise
  bool fp8 = false;             // --precision fp8: the FP8 copies and casts' scratch (model/fp8_layout.h)
  bool fp8_delayed = false;     // --fp8-scaling delayed (the step model's casts)
  // The CUDA backend's sequence rules (model/sequence_layout.h): --plan of a CPU run applies the CPU's instead.
  bool cuda_rules = true;
  bool shard_optimizer = true;  // ZeRO-1 over dp × cp (the default of qwen3-pretrain)
  int optimizer_shards = 0;     // the shards a running engine reports (Engine::optimizer_shards); 0: dp × cp
  MemoryPolicy recompute;    // model/memory_policy.h
  int stage = 0;                // pipeline: which stage's rank
  int cp_rank = 0;              // context parallelism: which rank of the group (0: the one with the most keys)
  std::vector<std::int64_t> stage_layers;  // pipeline: layers per stage (empty: the balanced split)
  std::int64_t micro_batches = 1;          // per step and data-parallel replica (a stage keeps min(pp − stage, m))
  // Device bytes outside the engine's allocator, item by item (train/calibration.h runtime_reserve: measured for a
  // calibrated GPU kind); empty: the flat kRuntimeReserveBytes.
  std::vector<MemoryItem> reserve;
  double pinned_map_rate = 0;  // device bytes per pinned host byte (the GPU's page tables), measured; added to reserve
};

struct MemoryPlan {
  std::vector<MemoryItem> items;          // device memory
  std::vector<MemoryItem> host_items;     // pinned host memory (offloaded layer inputs, the optimizer on the host)
  std::int64_t host_pinned_bytes = 0;     // their sum: not on the device
  std::vector<MemoryItem> reserve_items;  // outside the allocator (the input's reserve, or the flat one)
  std::int64_t total() const;             // the allocator's bytes
  std::int64_t reserve() const;
  std::int64_t peak() const { return total() + reserve(); }  // what the device holds for this rank
  std::vector<std::pair<std::string, std::int64_t>> by_category() const;  // in the allocator's category order
};

// The rank the plan is for (train/rank_plan.h): the first of stage `in.stage`, the optimizer sharded over the data ×
// context-parallel ranks (or as a running engine reported). Throws UsageError for a layout the engine refuses.
RankPlan planned_rank(const PlannedRun& in);
// That rank's buffer table summed (train/buffer_table.h), the attention workspace estimated.
MemoryPlan plan_cuda_rank_memory(const PlannedRun& in);
// The stage whose rank needs the most (0 without pipeline parallelism) and its plan.
std::pair<int, MemoryPlan> plan_worst_stage(PlannedRun in);

// What the user asked of the memory policy: --recompute, --recompute-num-layers, --offload-inputs and
// --offload-optimizer (the fraction of the optimizer state on the host; < 0 when not given).
struct MemoryRequest {
  std::string recompute = "none";
  std::int64_t num_layers = 0;
  bool offload_inputs = false;
  double offload_optimizer = -1;
  std::string fp8_weights = "auto";  // --fp8-weights: kept | per-layer | auto (kept, unless --recompute auto needs per-layer)
};

// The policy as given, or for --recompute auto the cheapest that fits device_bytes with the runtime reserve and pins
// at most host_bytes per rank (<= 0: unchecked): none, selective, full, full with the inputs offloaded; then (unless
// --offload-optimizer was given) the same four with the smallest fraction of the optimizer on the host, in steps of
// 5%, that fits (when the host's limit rules out every share: the first that fits the device alone, which the run
// then refuses naming the host's memory). The last (everything offloaded) may still not fit. Throws UsageError for an
// invalid request.
MemoryPolicy choose_memory_policy(const MemoryRequest& request, PlannedRun in, std::int64_t device_bytes,
                                 std::int64_t host_bytes);

// A GPU model and the memory CUDA gives a process on it (cudaDeviceProp::totalGlobalMem).
struct GpuMemory {
  const char* name;  // lower case, as --device-memory takes it: "h100-80gb", "h200"
  std::int64_t bytes;
};
const std::vector<GpuMemory>& known_gpus();
// "h100-80gb = 79.2 GiB, h200 = 139.8 GiB, ...": the names for --help and messages.
std::string known_gpu_names();
// The device --plan plans for when --device-memory is not given.
inline constexpr const char* kDefaultPlanDevice = "h100-80gb";

// A GPU name of known_gpus() (its real size), or a size: "80GiB", "81559MiB" (binary units), "141GB" (decimal: 10^9
// bytes), "1e11" (bytes) → bytes. Throws UsageError naming `option` otherwise.
std::int64_t parse_memory_size(const std::string& option, const std::string& text);
// A size only, as parse_memory_size takes it (no GPU names): --host-memory.
std::int64_t parse_byte_size(const std::string& option, const std::string& text);

// Pinned host memory (offloaded inputs, an offloaded optimizer) against the host's: the ranks on a node share its
// memory. --recompute auto aims within 90% of it (the processes, MPI and the page cache keep the rest), an equal share
// each; a run is refused only when its ranks would pin more than all of it.
inline constexpr double kPinnableShare = 0.9;
// The ranks on a node --plan assumes when not told (--ranks-per-node): the plan's, up to a node of 8 GPUs.
inline constexpr int kPlanRanksPerNode = 8;
// --recompute auto's aim for one of ranks_on_host ranks on a host of host_bytes; 0 (unchecked) when host_bytes <= 0.
std::int64_t pinnable_bytes_per_rank(std::int64_t host_bytes, std::int64_t ranks_on_host);
// The most pinned host memory a rank of `in` needs, over its stages (the first: most micro-batches in flight).
std::int64_t max_pinned_bytes(PlannedRun in);

// A plan's host side: what the node's ranks pin (each as much as the rank that pins most) against its memory.
struct HostCheck {
  std::int64_t pinned = 0;         // max_pinned_bytes
  std::int64_t host_bytes = 0;     // the node's memory; <= 0: not known, unchecked
  std::int64_t ranks_on_host = 1;  // the ranks sharing it
  std::int64_t pinnable() const { return pinnable_bytes_per_rank(host_bytes, ranks_on_host); }  // auto's aim per rank
  bool fits() const { return host_bytes <= 0 || pinned * ranks_on_host <= host_bytes; }  // the run's refusal rule
};

// The plan of the rank that needs the most (stage `worst`) as one JSON object for tools (qwen3-sweep): {"model",
// "seq_len", "micro_batch", "tp", "pp", "cp", "dp", "worst_stage", the memory policy as separate fields ("recompute":
// none|selective|full, "recompute_num_layers", "offload_inputs", "offload_optimizer": fraction 0..1) and in words
// ("memory_policy"), "plan_bytes", "reserve_bytes", "reserve": [{"what", "bytes"}], "peak_bytes" (plan + reserve),
// "device_bytes", "fits_device", "host_pinned_bytes" (the rank that pins most), "host_bytes" and "host_pinnable_bytes"
// (null when unchecked), "ranks_per_node", "fits_host", "fits" (both), "by_category": {category: bytes}}. Every field
// is listed in docs/cli.md (a test holds the two to each other); qwen3-pretrain adds "predicted".
std::string plan_json(const PlannedRun& in, int worst, const MemoryPlan& plan, std::int64_t device_bytes,
                      const HostCheck& host);

// The plan as text for people: one line per category with its largest items, the total, and the verdicts against
// device_bytes (with the runtime reserve) and the host's memory (when known).
std::string describe_plan(const MemoryPlan& plan, std::int64_t device_bytes, const HostCheck& host);

}  // namespace qwen3
