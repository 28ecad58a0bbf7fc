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
#include "train/buffer_table.h"

namespace qwen3 {
namespace {

constexpr std::int64_t kCudaMallocPage = 2ll << 20;  // cudaMalloc's granularity for large allocations (Hopper)

std::string gib(std::int64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", static_cast<double>(b) / (1ll << 30));
  return s;
}

// The plan's items on the device (host: in pinned host memory): the table's entries summed by (category, name) in
// table order; a name that spans several layers says how many and what one layer takes, and the micro-batches in flight.
std::vector<MemoryItem> plan_items(const std::vector<BufferSpec>& table, int slots, bool host) {
  struct Group {
    BufferCategory category;
    std::string what;
    std::int64_t bytes = 0;
    std::vector<int> layers;
    bool per_slot = false;
  };
  std::vector<Group> groups;
  for (const auto& s : table) {
    if ((s.category == BufferCategory::host_pinned) != host || s.bytes() == 0) continue;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.category == s.category && x.what == s.what; });
    if (g == groups.end()) g = groups.insert(groups.end(), Group{s.category, s.what, 0, {}, false});
    g->bytes += s.bytes();
    if (s.layer >= 0 && std::find(g->layers.begin(), g->layers.end(), s.layer) == g->layers.end()) g->layers.push_back(s.layer);
    g->per_slot |= s.slot > 0 && !double_buffered(s.id);
  }
  std::vector<MemoryItem> items;
  for (const auto& g : groups) {
    const std::int64_t n = static_cast<std::int64_t>(g.layers.size()), copies = g.per_slot ? slots : 1;
    std::string what = g.what;
    if (n > 1) what = std::to_string(n) + " layers × " + gib(g.bytes / (n * copies)) + ": " + what;
    if (g.per_slot) what += " × " + std::to_string(slots) + " micro-batches in flight";
    items.push_back({buffer_category_name(g.category), what, g.bytes});
  }
  return items;
}

}  // namespace

RankPlan planned_rank(const PlannedRun& in) {
  RankPlanInput r;
  r.model = in.model;
  r.rank.tp = in.tp, r.rank.cp = std::max(1, in.cp), r.rank.pp = in.pp, r.rank.pp_rank = in.stage;
  r.rank.cp_rank = in.cp_rank;
  // Data × context-parallel ranks hold the same weights (a running engine says what it did: Engine::optimizer_shards).
  r.rank.shards = in.optimizer_shards > 0 ? in.optimizer_shards : in.shard_optimizer ? in.dp * r.rank.cp : 1;
  r.stage_layers = in.stage_layers;
  r.max_batch = in.micro_batch, r.max_seq = in.seq_len;
  r.micro_batches = in.micro_batches;
  r.recompute = in.recompute;
  r.cudnn_attention = in.cudnn_attention;
  r.fp8 = in.fp8, r.fp8_delayed = in.fp8_delayed;
  r.cuda_rules = in.cuda_rules;
  return plan_rank(r);
}

std::int64_t MemoryPlan::total() const {
  std::int64_t t = 0;
  for (const auto& i : items) t += i.bytes;
  return t;
}

std::int64_t MemoryPlan::reserve() const {
  std::int64_t t = 0;
  for (const auto& i : reserve_items) t += i.bytes;
  return t;
}

std::vector<std::pair<std::string, std::int64_t>> MemoryPlan::by_category() const {
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (int c = 0; c < kDeviceCategories; ++c) {
    const char* name = buffer_category_name(static_cast<BufferCategory>(c));
    std::int64_t b = 0;
    for (const auto& i : items)
      if (i.category == name) b += i.bytes;
    out.emplace_back(name, b);
  }
  return out;
}

MemoryPlan plan_cuda_rank_memory(const PlannedRun& in) {
  const RankPlan rank = planned_rank(in);
  const std::vector<BufferSpec> table = buffer_table(rank, estimated_attention_workspace(rank));
  std::vector<MemoryItem> reserve = in.reserve;
  const bool measured = !reserve.empty();
  if (!measured) reserve.push_back({"runtime", "flat: CUDA context, cuBLAS, cuDNN, NCCL (no calibration)", kRuntimeReserveBytes});
  const std::int64_t pinned = host_pinned_bytes(table);
  if (measured) {  // each buffer is its own cudaMalloc: the driver maps large ones in 2 MiB pages
    std::int64_t rounding = 0, buffers = 0;
    for (const auto& b : table)
      if (b.category != BufferCategory::host_pinned && b.bytes() >= kCudaMallocPage)
        rounding += (kCudaMallocPage - b.bytes() % kCudaMallocPage) % kCudaMallocPage, ++buffers;
    reserve.push_back({"runtime", "cudaMalloc's 2 MiB pages, " + std::to_string(buffers) + " buffers rounded up", rounding});
  }
  if (pinned > 0 && in.pinned_map_rate > 0)
    reserve.push_back({"runtime", "the GPU's page tables of the pinned host memory (measured per byte)",
                       static_cast<std::int64_t>(std::ceil(static_cast<double>(pinned) * in.pinned_map_rate))});
  return {plan_items(table, rank.slots, false), plan_items(table, rank.slots, true), pinned, std::move(reserve)};
}

std::pair<int, MemoryPlan> plan_worst_stage(PlannedRun in) {
  std::pair<int, MemoryPlan> worst{0, {}};
  for (int s = 0; s < std::max(1, in.pp); ++s) {
    in.stage = s;
    MemoryPlan p = plan_cuda_rank_memory(in);
    if (s == 0 || p.total() > worst.second.total()) worst = {s, std::move(p)};
  }
  return worst;
}

namespace {

// Whether every stage's rank fits the device (with the runtime reserve) and pins at most host_bytes (<= 0: unchecked).
bool fits(PlannedRun in, std::int64_t device_bytes, std::int64_t host_bytes) {
  for (int s = 0; s < std::max(1, in.pp); ++s) {
    in.stage = s;
    const MemoryPlan p = plan_cuda_rank_memory(in);
    if (p.peak() > device_bytes || (host_bytes > 0 && p.host_pinned_bytes > host_bytes)) return false;
  }
  return true;
}

// The smallest fraction of the optimizer on the host, in steps of 5%, with which `in` fits (device bytes fall and
// host bytes grow with it); -1 when none does.
double smallest_optimizer_offload(PlannedRun in, std::int64_t device_bytes, std::int64_t host_bytes) {
  int lo = 1, hi = 20;  // twentieths
  in.recompute.offload_optimizer = 1.0;
  if (!fits(in, device_bytes, 0)) return -1;
  while (lo < hi) {  // the device alone decides the smallest; the host is checked at it (more only pins more)
    const int mid = (lo + hi) / 2;
    in.recompute.offload_optimizer = mid / 20.0;
    if (fits(in, device_bytes, 0))
      hi = mid;
    else
      lo = mid + 1;
  }
  in.recompute.offload_optimizer = lo / 20.0;
  return fits(in, device_bytes, host_bytes) ? in.recompute.offload_optimizer : -1;
}

}  // namespace

MemoryPolicy choose_memory_policy(const MemoryRequest& r, PlannedRun in, std::int64_t device_bytes,
                                 std::int64_t host_bytes) {
  const double optimizer = std::max(0.0, r.offload_optimizer);
  const bool per_layer = r.fp8_weights == "per-layer";
  if (r.recompute != "auto") {
    MemoryPolicy p{parse_recompute(r.recompute), r.num_layers, r.offload_inputs, optimizer, per_layer};
    p.validate();
    return p;
  }
  if (r.offload_inputs) throw UsageError("--offload-inputs with --recompute auto: auto chooses offloading itself when it is needed");
  std::vector<MemoryPolicy> ladder;
  for (const MemoryPolicy& c : {MemoryPolicy{Recompute::none, 0, false, optimizer},
                                   MemoryPolicy{Recompute::selective, 0, false, optimizer},
                                   MemoryPolicy{Recompute::full, r.num_layers, false, optimizer},
                                   MemoryPolicy{Recompute::full, r.num_layers, true, optimizer}}) {
    if (r.num_layers > 0 && c.mode != Recompute::full) continue;  // a layer count asks for full recomputation
    // With fp8 each step first keeps the FP8 weight copies, then casts them per layer (unless --fp8-weights says which).
    for (bool cast_per_layer : {false, true}) {
      const bool allowed = r.fp8_weights == "auto" ? (in.fp8 || !cast_per_layer) : cast_per_layer == per_layer;
      if (!allowed) continue;
      MemoryPolicy p = c;
      p.fp8_weights_per_layer = cast_per_layer;
      ladder.push_back(p);
    }
  }
  for (const MemoryPolicy& c : ladder) {
    c.validate();
    in.recompute = c;
    if (fits(in, device_bytes, host_bytes)) return c;
  }
  if (r.offload_optimizer >= 0) return ladder.back();  // the fraction was given: auto does not change it
  // The host's limit first; where it rules out every share, the choice without it (what --plan shows without
  // --host-memory): the run then stops naming the pinned bytes against the host's, --plan says it does not fit.
  for (std::int64_t host : {host_bytes, std::int64_t{0}})
    for (MemoryPolicy c : ladder) {
      in.recompute = c;
      c.offload_optimizer = smallest_optimizer_offload(in, device_bytes, host);
      if (c.offload_optimizer > 0) return c;
    }
  MemoryPolicy last = ladder.back();
  last.offload_optimizer = 1.0;
  return last;
}

const std::vector<GpuMemory>& known_gpus() {
  // The memory the CUDA runtime gives a process on each card (cudaDeviceProp::totalGlobalMem, torch's total_memory):
  // what a run checks its plan against. The marketing "80GB" is decimal and rounded; nvidia-smi's memory.total
  // (81,559 and 143,771 MiB) also counts ~0.5 GiB the driver keeps. Read on the cards; the runtime's figure moves by a
  // few MiB between cards and drivers (H100 80GB HBM3: 81,079 MiB on 2026-12-06, 81,082-81,090 before), so each entry is the lowest seen.
  static const std::vector<GpuMemory> gpus = {
      {"h100-80gb", 81079ll << 20}, {"h100", 81079ll << 20}, {"h200", 143150ll << 20}};
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
  try {
    return parse_byte_size(option, text);
  } catch (const UsageError&) {
    throw UsageError(option + ": '" + text + "' is neither a GPU name (" + known_gpu_names() +
                     ") nor a memory size (80GiB, 81559MiB: binary units; 85GB: decimal, 10^9 bytes)");
  }
}

std::int64_t parse_byte_size(const std::string& option, const std::string& text) {
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
    throw UsageError(option + ": '" + text + "' is not a memory size (512GiB, 125829120KiB: binary units; 2TB: "
                     "decimal, 10^12 bytes)");
  return static_cast<std::int64_t>(value * unit->second);
}

std::int64_t pinnable_bytes_per_rank(std::int64_t host_bytes, std::int64_t ranks_on_host) {
  if (host_bytes <= 0) return 0;
  return static_cast<std::int64_t>(kPinnableShare * static_cast<double>(host_bytes) /
                                   static_cast<double>(std::max<std::int64_t>(1, ranks_on_host)));
}

std::int64_t max_pinned_bytes(PlannedRun in) {
  std::int64_t most = 0;
  for (int s = 0; s < std::max(1, in.pp); ++s) {
    in.stage = s;
    most = std::max(most, plan_cuda_rank_memory(in).host_pinned_bytes);
  }
  return most;
}

namespace {

// The host's verdict for people: what the rank that pins most pins against its share, or why it is not checked.
std::string describe_host(const HostCheck& host) {
  if (host.pinned == 0) return "";
  if (host.host_bytes <= 0)
    return "  pinned per rank   " + gib(host.pinned) + ": not checked against a host (--host-memory: the node's "
           "memory)\n";
  const std::string ranks = std::to_string(host.ranks_on_host) + (host.ranks_on_host == 1 ? " rank" : " ranks");
  return "  pinned per rank   " + gib(host.pinned) + ", " + ranks + " on a node: " +
         gib(host.pinned * host.ranks_on_host) + " of the host's " + gib(host.host_bytes) + ": " +
         (host.fits() ? "fits" : "does NOT fit") + " (--recompute auto aims within " +
         std::to_string(static_cast<int>(kPinnableShare * 100)) + "%: " + gib(host.pinnable()) + " a rank)\n";
}

}  // namespace

std::string describe_plan(const MemoryPlan& plan, std::int64_t device_bytes, const HostCheck& host) {
  std::string out;
  for (const auto& [category, bytes] : plan.by_category()) {
    out += "  " + category + std::string(18 - std::min<std::size_t>(17, category.size()), ' ') + gib(bytes) + "\n";
    for (const auto& i : plan.items)
      if (i.category == category) out += "      " + gib(i.bytes) + "  " + i.what + "\n";
  }
  const std::int64_t total = plan.peak();
  out += "  runtime reserve   " + gib(plan.reserve()) + " (outside the allocator)\n";
  for (const auto& i : plan.reserve_items) out += "      " + gib(i.bytes) + "  " + i.what + "\n";
  if (plan.host_pinned_bytes > 0) {
    out += "  host (pinned)     " + gib(plan.host_pinned_bytes) + " per rank, not on the device\n";
    for (const auto& i : plan.host_items) out += "      " + gib(i.bytes) + "  " + i.what + "\n";
  }
  out += "  peak per rank     " + gib(total) + " of " + gib(device_bytes) + ": " +
         (total <= device_bytes ? "fits" : "does NOT fit") + "\n";
  return out + describe_host(host);
}

std::string plan_json(const PlannedRun& in, int worst, const MemoryPlan& plan, std::int64_t device_bytes,
                      const HostCheck& host) {
  nlohmann::json categories = nlohmann::json::object();
  for (const auto& [category, bytes] : plan.by_category()) categories[category] = bytes;
  const std::int64_t peak = plan.peak();
  nlohmann::json reserve = nlohmann::json::array();
  for (const auto& i : plan.reserve_items) reserve.push_back({{"what", i.what}, {"bytes", i.bytes}});
  return nlohmann::json{{"model", in.model.name},           {"seq_len", in.seq_len},
                        {"micro_batch", in.micro_batch},    {"tp", in.tp},
                        {"pp", in.pp},                      {"cp", in.cp},
                        {"dp", in.dp},                      {"worst_stage", worst},
                        {"recompute", recompute_name(in.recompute.mode)},
                        {"recompute_num_layers", in.recompute.num_layers},
                        {"offload_inputs", in.recompute.offload_inputs},
                        {"offload_optimizer", in.recompute.offload_optimizer},
                        {"memory_policy", in.recompute.describe()}, {"plan_bytes", plan.total()},
                        {"precision", in.fp8 ? "fp8" : "bf16"},
                        {"fp8_weights", in.fp8 ? nlohmann::json(in.recompute.fp8_weights_per_layer ? "per-layer" : "kept")
                                               : nlohmann::json()},
                        {"fp8_scaling", in.fp8 ? nlohmann::json(in.fp8_delayed ? "delayed" : "current") : nlohmann::json()},
                        {"reserve_bytes", plan.reserve()}, {"reserve", reserve}, {"peak_bytes", peak},
                        {"device_bytes", device_bytes},     {"fits_device", peak <= device_bytes},
                        {"host_pinned_bytes", host.pinned},
                        {"host_bytes", host.host_bytes > 0 ? nlohmann::json(host.host_bytes) : nlohmann::json()},
                        {"host_pinnable_bytes", host.host_bytes > 0 ? nlohmann::json(host.pinnable()) : nlohmann::json()},
                        {"ranks_per_node", host.ranks_on_host}, {"fits_host", host.fits()},
                        {"fits", peak <= device_bytes && host.fits()}, {"by_category", categories}}
      .dump();
}

}  // namespace qwen3
