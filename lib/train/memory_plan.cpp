// Memory planner (see memory_plan.h): the CUDA engine's allocation list, item by item.
#include "train/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/param_table.h"
#include "model/pipeline_split.h"
#include "model/sequence_layout.h"
#include "model/tensor_parallel.h"

namespace qwen3 {
namespace {
constexpr std::int64_t kGemmWorkspace = 64ll << 20;      // cuda_engine.cpp
constexpr std::int64_t kLogitChunkBytes = 2ll << 30;     // cuda_engine.cpp
constexpr std::int64_t kAdamWChunkElements = 1 << 16;   // ops/cuda/optimizer.h
constexpr std::int64_t kNormBlocks = 1024;              // ops/cuda/optimizer.h
constexpr std::int64_t kAdamWChunkBytes = 24;           // sizeof(cuda::AdamWChunk): two int64 and an int, padded
const char* const kCategories[] = {"weights", "gradients", "optimizer_state", "activations", "workspace"};

std::string gib(std::int64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", static_cast<double>(b) / (1ll << 30));
  return s;
}
}  // namespace

std::int64_t MemoryPlan::total() const {
  std::int64_t t = 0;
  for (const auto& i : items) t += i.bytes;
  return t;
}

std::vector<std::pair<std::string, std::int64_t>> MemoryPlan::by_category() const {
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (const char* c : kCategories) {
    std::int64_t b = 0;
    for (const auto& i : items)
      if (i.category == c) b += i.bytes;
    out.emplace_back(c, b);
  }
  return out;
}

MemoryPlan plan_cuda_rank_memory(const MemoryPlanInput& in) {
  const ModelConfig& c = in.model;
  const int cp = std::max(1, in.cp);
  check_sequence_layout(in.micro_batch, in.seq_len, in.tp, cp, in.cuda_rules);
  if (cp > 1 && !in.cudnn_attention)
    throw UsageError("--cp " + std::to_string(cp) + ": context parallelism on the GPU runs on cuDNN fused attention only");
  c.validate();
  const TpDims d = tp_dims(c, 0, in.tp);  // every tensor-parallel rank holds the same shapes
  const auto counts = pipeline_layer_counts(c, in.pp, in.seq_len, in.stage_layers);
  const StageRange stage = stage_range(counts, in.stage);
  const ParamTable table = ParamTable(c, d.q_dim, d.kv_dim, d.inter, d.vocab).restricted(stage_tensors(ParamTable(c), stage));
  const std::int64_t slots = in.pp > 1 ? std::min<std::int64_t>(in.pp - in.stage, std::max<std::int64_t>(1, in.micro_batches)) : 1;
  const std::int64_t T = in.micro_batch * in.seq_len / cp, Tl = T / std::max(1, in.tp);  // this rank's tokens
  const std::int64_t P = table.total_elements(), H = c.hidden_size, I = d.inter, qd = d.q_dim, kvd = d.kv_dim;
  const std::int64_t V = d.vocab, nh = d.heads, nkv = d.kv_heads, hd = c.head_dim, L = stage.layers();
  const std::int64_t shards = static_cast<std::int64_t>(in.dp) * cp;  // the optimizer shards over data × context ranks
  const bool zero1 = in.shard_optimizer && shards > 1;
  const std::int64_t shard = zero1 ? ((P + shards - 1) / shards + 63) / 64 * 64 : P, padded = zero1 ? shard * shards : P;
  const std::int64_t chunk = std::max<std::int64_t>(1, std::min(T, kLogitChunkBytes / (2 * V)));
  MemoryPlan p;
  auto add = [&](const char* cat, const std::string& what, std::int64_t bytes) { p.items.push_back({cat, what, bytes}); };
  const std::string of_shard = zero1 ? " (1/" + std::to_string(shards) + " shard, distributed optimizer)" : "";
  add("weights", "fp32 master weights" + of_shard, 4 * shard);
  add("weights", "bf16 compute weights", 2 * padded);
  add("gradients", "fp32 gradients", 4 * padded);
  add("optimizer_state", "AdamW moments (fp32 m, v)" + of_shard, 8 * shard);
  std::int64_t chunks = 0;  // per tensor, its part in this rank's shard (data-parallel rank 0's)
  for (const auto& e : table.entries()) {
    const std::int64_t n = std::max<std::int64_t>(0, std::min(e.offset + e.numel, shard) - e.offset);
    chunks += (n + kAdamWChunkElements - 1) / kAdamWChunkElements;
  }
  add("optimizer_state", "AdamW chunk table", kAdamWChunkBytes * chunks);
  // What one layer keeps without recomputation (the engine's LayerActs), and the parts selective recomputation drops.
  const std::int64_t per_layer = 2 * (Tl * H * 2 + T * (qd + 2 * kvd) + T * qd + T * kvd + (in.cudnn_attention ? 0 : T * kvd) +
                                      T * qd + T * H * 2 + T * 2 * I) +
                                 4 * (2 * Tl + T * nh + in.micro_batch * nh * lse_rows(in.seq_len, cp) + T * nkv);
  const std::int64_t dropped = 2 * (T * qd + T * kvd + 2 * T * H), input = 2 * Tl * H;
  const std::string in_flight = slots > 1 ? " × " + std::to_string(slots) + " micro-batches in flight" : "";
  const RecomputePolicy& rc = in.recompute;
  const std::int64_t F = rc.full_layers(L), R = L - F;  // fully recomputed layers (the stage's first F), the rest
  if (R > 0 && rc.mode == Recompute::selective) {
    add("activations", std::to_string(R) + " layers × " + gib(per_layer - dropped) +
                           " (inputs, q|k|v, attention, gate|up; norm outputs and q, k recomputed)" + in_flight,
        R * (per_layer - dropped) * slots);
    add("activations", "norm outputs and q, k of the layer being recomputed (selective)", dropped);
  } else if (R > 0) {
    add("activations", std::to_string(R) + " layers × " + gib(per_layer) + " (inputs, q|k|v, attention, norms, gate|up)" +
                           in_flight, R * per_layer * slots);
  }
  if (F > 0) {  // the engine: each layer's input per slot, one shared layer for the recomputed rest, its scratch output
    const std::int64_t offloaded = rc.offload_inputs ? F - 1 : 0;  // every recomputed layer but the stage's first
    add("activations", std::to_string(F - offloaded) + " layer input" + (F - offloaded > 1 ? "s" : "") +
                           " (recomputation)" + in_flight, (F - offloaded) * input * slots);
    if (offloaded > 0) {
      add("activations", "two device buffers for the inputs moving to and from the host", std::min<std::int64_t>(2, offloaded) * input);
      p.host_pinned_bytes = offloaded * input * slots;
    }
    add("activations", "one layer recomputed in the backward (its input read, its output to scratch)", per_layer);
  }
  if (!stage.last) add("activations", "stage output (sent to the next stage)", 2 * Tl * H * slots);
  // The output projection and loss on the last stage, the token ids (per slot) on the first (engine: the same gates).
  if (stage.last) {
    add("activations", "final hidden state and norm", 2 * Tl * H + 2 * T * H + 4 * Tl);
    add("workspace", "logits of one token chunk (" + std::to_string(chunk) + " tokens) and per-token loss",
        2 * chunk * V + 4 * T);
  }
  add("workspace", "backward scratch (gradients of every block)",
      2 * T * I + 4 * Tl * H + 4 * T * H + 2 * T * std::max(H, qd) + 2 * T * qd * 2 + 2 * T * kvd * 2 +
          2 * T * (qd + 2 * kvd) + 2 * T * I + 2 * T * 2 * I);
  add("workspace", "RoPE tables, token ids, labels",
      2 * 4 * (in.seq_len / cp) * (hd / 2) + (stage.first ? 4 * T * slots : 0) + (stage.last ? 4 * T : 0));
  if (cp > 1)  // this rank's keys|values, every rank's (rank order, sequence order) and two gradient buffers, bf16
    add("workspace", "context-parallel keys|values of the whole sequence and their gradients (one layer at a time)",
        2 * (T * 2 * kvd + 4 * cp * T * 2 * kvd));
  if (in.tp > 1) {
    // norm output and reduce-scattered rows (Tl, bf16), row-parallel partial sums and two gathered gradients (T, bf16),
    // the reduce-scattered and the gathered fp32 gradient, vocabulary-parallel cross-entropy statistics
    add("workspace", "sequence-parallel buffers",
        2 * Tl * H * 2 + 3 * T * H * 2 + 4 * Tl * H + (stage.first ? 4 * T * H : 0) + (stage.last ? 4 * 4 * chunk : 0));
  }
  // cuDNN's backward: its own workspace plus an fp32 dQ accumulator (both about B·H·S·D·4) and row sums of dO∘O;
  // the own kernels: row sums and the dQ accumulator. With context parallelism S is one chunk (two calls per layer).
  const std::int64_t q_rows = in.seq_len / (cp > 1 ? 2 * cp : 1);
  const std::int64_t bhsd = in.micro_batch * nh * q_rows * hd, bhs = in.micro_batch * nh * q_rows;
  add("workspace", in.cudnn_attention ? "cuDNN attention workspace (estimated)" : "attention workspace",
      in.cudnn_attention ? 2 * 4 * bhsd + 4 * bhs : 4 * bhsd + 4 * bhs);
  add("workspace", "reductions and cuBLASLt workspace", 8 * kNormBlocks + 8 + kGemmWorkspace);
  return p;
}

std::pair<int, MemoryPlan> plan_worst_stage(MemoryPlanInput in) {
  std::pair<int, MemoryPlan> worst{0, {}};
  for (int s = 0; s < std::max(1, in.pp); ++s) {
    in.stage = s;
    MemoryPlan p = plan_cuda_rank_memory(in);
    if (s == 0 || p.total() > worst.second.total()) worst = {s, std::move(p)};
  }
  return worst;
}

RecomputePolicy choose_recompute(const std::string& policy, std::int64_t num_layers, bool offload_inputs,
                                 MemoryPlanInput in, std::int64_t device_bytes) {
  if (policy != "auto") {
    RecomputePolicy p{parse_recompute(policy), num_layers, offload_inputs};
    p.validate();
    return p;
  }
  if (offload_inputs) throw UsageError("--offload-inputs with --recompute auto: auto chooses offloading itself when it is needed");
  const RecomputePolicy candidates[] = {{Recompute::none, 0, false},
                                        {Recompute::selective, 0, false},
                                        {Recompute::full, num_layers, false},
                                        {Recompute::full, num_layers, true}};
  for (const RecomputePolicy& c : candidates) {
    if (num_layers > 0 && c.mode != Recompute::full) continue;  // a layer count asks for full recomputation
    c.validate();
    in.recompute = c;
    if (plan_worst_stage(in).second.total() + kRuntimeReserveBytes <= device_bytes) return c;
  }
  return candidates[3];
}

const std::vector<GpuMemory>& known_gpus() {
  // The memory the CUDA runtime gives a process on each card (cudaDeviceProp::totalGlobalMem, torch's total_memory):
  // what a run checks its plan against. The marketing "80GB" is decimal and rounded; nvidia-smi's memory.total
  // (81,559 and 143,771 MiB) also counts ~0.5 GiB the driver keeps. Read on the cards; the runtime's figure moves by a
  // few MiB between drivers (H100: 81,082-81,090 MiB seen), so each entry is the lowest seen, rounded down.
  static const std::vector<GpuMemory> gpus = {
      {"h100-80gb", 81080ll << 20}, {"h100", 81080ll << 20}, {"h200", 143150ll << 20}};
  return gpus;
}

std::string known_gpu_names() {
  std::string out;
  for (const auto& g : known_gpus()) {
    char line[64];
    std::snprintf(line, sizeof line, "%s%s = %.1f GiB", out.empty() ? "" : ", ", g.name, g.bytes / 1073741824.0);
    out += line;
  }
  return out;
}

std::int64_t parse_memory_size(const std::string& option, const std::string& text) {
  std::string lower = text;
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const auto& g : known_gpus())
    if (lower == g.name) return g.bytes;
  static const std::map<std::string, double> units = {
      {"", 1},         {"B", 1},         {"KB", 1e3},        {"MB", 1e6},        {"GB", 1e9},
      {"TB", 1e12},    {"KiB", 1 << 10}, {"MiB", 1 << 20},   {"GiB", 1ll << 30}, {"TiB", 1ll << 40}};
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const auto unit = units.find(text.substr(used));
  if (used == 0 || unit == units.end() || !(value > 0) || !std::isfinite(value))
    throw UsageError(option + ": '" + text + "' is neither a GPU name (" + known_gpu_names() +
                     ") nor a memory size (80GiB, 81559MiB: binary units; 85GB: decimal, 10^9 bytes)");
  return static_cast<std::int64_t>(value * unit->second);
}

std::string describe_plan(const MemoryPlan& plan, std::int64_t device_bytes) {
  std::string out;
  for (const auto& [category, bytes] : plan.by_category()) {
    out += "  " + category + std::string(18 - std::min<std::size_t>(17, category.size()), ' ') + gib(bytes) + "\n";
    for (const auto& i : plan.items)
      if (i.category == category) out += "      " + gib(i.bytes) + "  " + i.what + "\n";
  }
  const std::int64_t total = plan.total() + kRuntimeReserveBytes;
  out += "  runtime reserve   " + gib(kRuntimeReserveBytes) + " (CUDA context, cuBLAS, cuDNN, NCCL)\n";
  if (plan.host_pinned_bytes > 0)
    out += "  host (pinned)     " + gib(plan.host_pinned_bytes) + " per rank: offloaded layer inputs, not on the device\n";
  out += "  peak per rank     " + gib(total) + " of " + gib(device_bytes) + ": " +
         (total <= device_bytes ? "fits" : "does NOT fit") + "\n";
  return out;
}

std::string plan_json(const MemoryPlanInput& in, int worst, const MemoryPlan& plan, std::int64_t device_bytes) {
  nlohmann::json categories = nlohmann::json::object();
  for (const auto& [category, bytes] : plan.by_category()) categories[category] = bytes;
  const std::int64_t peak = plan.total() + kRuntimeReserveBytes;
  return nlohmann::json{{"model", in.model.name},           {"seq_len", in.seq_len},
                        {"micro_batch", in.micro_batch},    {"tp", in.tp},
                        {"pp", in.pp},                      {"cp", in.cp},
                        {"dp", in.dp},                      {"worst_stage", worst},
                        {"recompute", in.recompute.describe()}, {"plan_bytes", plan.total()},
                        {"reserve_bytes", kRuntimeReserveBytes}, {"peak_bytes", peak},
                        {"device_bytes", device_bytes},     {"fits", peak <= device_bytes},
                        {"host_pinned_bytes", plan.host_pinned_bytes}, {"by_category", categories}}
      .dump();
}

}  // namespace qwen3
