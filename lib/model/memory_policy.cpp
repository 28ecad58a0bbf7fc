// The memory policy: recomputation, input and optimizer offload (see model/memory_policy.h).
#include "model/memory_policy.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qwen3 {

std::int64_t MemoryPolicy::full_layers(std::int64_t layers) const {
  if (mode != Recompute::full) return 0;
  return num_layers == 0 ? layers : std::min(layers, num_layers);
}

const char* recompute_name(Recompute mode) {
  switch (mode) {
    case Recompute::none: return "none";
    case Recompute::selective: return "selective";
    case Recompute::full: return "full";
  }
  return "?";
}

std::string MemoryPolicy::describe() const {
  std::string s = recompute_name(mode);
  if (mode == Recompute::full && num_layers > 0) s += " (first " + std::to_string(num_layers) + " layers of each stage)";
  if (mode == Recompute::full && offload_inputs) s += ", inputs offloaded to host";
  if (offload_optimizer >= 1) s += ", optimizer on host";
  else if (offload_optimizer >= 0.01)
    s += ", " + std::to_string(static_cast<int>(std::lround(offload_optimizer * 100))) + "% of the optimizer on host";
  else if (offload_optimizer > 0)
    s += ", under 1% of the optimizer on host";
  if (fp8_weights_per_layer) s += ", FP8 weights cast per layer";
  return s;
}

void MemoryPolicy::validate() const {
  if (num_layers < 0) throw UsageError("--recompute-num-layers must be 0 (all layers) or positive");
  if (num_layers > 0 && mode != Recompute::full)
    throw UsageError("--recompute-num-layers applies to --recompute full (or auto) only");
  if (offload_inputs && mode != Recompute::full)
    throw UsageError("--offload-inputs needs --recompute full (or auto): only the kept layer inputs are offloaded");
  validate_optimizer_offload(offload_optimizer);
}

void validate_optimizer_offload(double fraction) {
  if (!(fraction >= 0 && fraction <= 1))
    throw UsageError("--offload-optimizer: the fraction of the optimizer state on the host must be between 0 and 1, got " +
                     std::to_string(fraction));
}

Recompute parse_recompute(const std::string& text) {
  if (text == "none") return Recompute::none;
  if (text == "selective") return Recompute::selective;
  if (text == "full") return Recompute::full;
  throw UsageError("--recompute: invalid value '" + text + "' (valid: none, selective, full, auto)");
}

}  // namespace qwen3
