// Backend registry: maps --device names to engines built into this binary.
#include <functional>
#include <map>

#include "core/error.h"
#include "train/cpu_engine.h"
#include "train/engine.h"
#ifdef QWEN3_HAVE_CUDA
#include "train/cuda_engine.h"
#endif

namespace qwen3 {
namespace {
using Factory = std::function<std::unique_ptr<Engine>(const ModelConfig&, const EngineOptions&)>;
const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> r = {
      {"cpu", [](const ModelConfig& c, const EngineOptions& o) { return std::make_unique<CpuEngine>(c, o); }},
#ifdef QWEN3_HAVE_CUDA
      {"cuda", [](const ModelConfig& c, const EngineOptions& o) { return make_cuda_engine(c, o); }},
#endif
  };
  return r;
}
}  // namespace

std::int64_t device_memory_bytes(const std::string& device, int local_rank) {
  require_usable_device(device);
#ifdef QWEN3_HAVE_CUDA
  if (device == "cuda") return cuda_device_total_bytes(local_rank);
#endif
  (void)local_rank;
  return 0;
}

RankPlanInput engine_rank_input(const ModelConfig& cfg, const EngineOptions& o, Communicator* shards, bool cuda_rules) {
  RankPlanInput in;
  in.model = cfg;
  RankPlace& r = in.rank;
  auto place = [](Communicator* c, int& size, int& rank) {
    if (group_of(c)) size = c->size(), rank = c->rank();
  };
  place(o.tp_comm, r.tp, r.tp_rank);
  place(o.cp_comm, r.cp, r.cp_rank);
  place(o.pp_comm, r.pp, r.pp_rank);
  place(shards, r.shards, r.shard_rank);
  in.stage_layers = o.stage_layers;
  in.max_batch = o.max_batch, in.max_seq = o.max_seq;
  in.micro_batches = o.micro_batches;
  in.recompute = o.recompute;
  in.cudnn_attention = o.cudnn_attention;
  in.fp8 = o.fp8, in.fp8_delayed = o.fp8_delayed;
  in.cuda_rules = cuda_rules;
  return in;
}

std::vector<std::string> available_devices() {
  std::vector<std::string> names;
  for (auto& [n, f] : registry()) names.push_back(n);
  return names;
}

std::string device_unusable_reason(const std::string& device) {
#ifdef QWEN3_HAVE_CUDA
  if (device == "cuda") return cuda_unusable_reason();
#endif
  (void)device;
  return "";
}

std::vector<std::string> usable_devices() {
  std::vector<std::string> names;
  for (const auto& n : available_devices())
    if (device_unusable_reason(n).empty()) names.push_back(n);
  return names;
}

void require_usable_device(const std::string& device) {
  if (registry().find(device) == registry().end()) return;  // make_engine names the built backends
  const std::string why = device_unusable_reason(device);
  if (!why.empty())
    throw UsageError("--device " + device + ": no usable GPU on this host: " + why +
                     " (--list-devices shows what works here; --device cpu runs on the CPU)");
}

std::unique_ptr<Engine> make_engine(const std::string& device, const ModelConfig& cfg, const EngineOptions& opts) {
  auto it = registry().find(device);
  if (it == registry().end()) {
    std::string built;
    for (auto& n : available_devices()) built += (built.empty() ? "" : ", ") + n;
    throw UsageError("--device " + device + " is not available in this build (built backends: " + built + ")");
  }
  return it->second(cfg, opts);
}

}  // namespace qwen3

namespace qwen3 {

// Engines without pipeline parallelism.
cpu::LossSum Engine::stage_forward(int, const MicroBatch&, double, std::vector<float>*) {
  throw UsageError("pipeline parallelism (--pp > 1) is not available on the " + device_name() + " backend");
}
void Engine::stage_backward(int) {
  throw UsageError("pipeline parallelism (--pp > 1) is not available on the " + device_name() + " backend");
}
Communicator::Transfer Engine::boundary(Boundary, int, std::int64_t) {
  throw UsageError("pipeline parallelism (--pp > 1) is not available on the " + device_name() + " backend");
}

}  // namespace qwen3
