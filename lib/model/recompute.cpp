// Activation recomputation policy (see model/recompute.h).
#include "model/recompute.h"

#include <algorithm>

#include "core/error.h"

namespace qwen3 {

std::int64_t RecomputePolicy::full_layers(std::int64_t layers) const {
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

std::string RecomputePolicy::describe() const {
  if (mode != Recompute::full) return recompute_name(mode);
  std::string s = "full";
  if (num_layers > 0) s += " (first " + std::to_string(num_layers) + " layers of each stage)";
  if (offload_inputs) s += ", inputs offloaded to host";
  return s;
}

void RecomputePolicy::validate() const {
  if (num_layers < 0) throw UsageError("--recompute-num-layers must be 0 (all layers) or positive");
  if (num_layers > 0 && mode != Recompute::full)
    throw UsageError("--recompute-num-layers applies to --recompute full (or auto) only");
  if (offload_inputs && mode != Recompute::full)
    throw UsageError("--offload-inputs needs --recompute full (or auto): only the kept layer inputs are offloaded");
}

Recompute parse_recompute(const std::string& text) {
  if (text == "none") return Recompute::none;
  if (text == "selective") return Recompute::selective;
  if (text == "full") return Recompute::full;
  throw UsageError("--recompute: invalid value '" + text + "' (valid: none, selective, full, auto)");
}

}  // namespace qwen3
