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
#ifdef QWEN3_HAVE_CUDA
  if (device == "cuda") return cuda_device_total_bytes(local_rank);
#endif
  (void)device;
  (void)local_rank;
  return 0;
}

std::vector<std::string> available_devices() {
  std::vector<std::string> names;
  for (auto& [n, f] : registry()) names.push_back(n);
  return names;
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
