// Gradient ownership (see gradient_ownership.h).
#include "model/gradient_ownership.h"

#include <algorithm>

namespace qwen3 {

GradientOwnership gradient_ownership(const ParamTable& full, const TpDims& d, const std::vector<bool>& reports) {
  GradientOwnership o;
  o.counted.assign(full.entries().size(), false);
  if (d.size > 1)
    for (std::size_t i = 0; i < full.entries().size(); ++i)
      if (shard_spec(full, i, d).dim < 0) o.tp_replicated.push_back(i);
  if (d.size > 1 && d.kv_replicas > 1)
    for (const auto& l : full.layers) o.kv_replicated.insert(o.kv_replicated.end(), {l.k_proj, l.v_proj});
  auto in = [](const std::vector<std::size_t>& v, std::size_t i) { return std::find(v.begin(), v.end(), i) != v.end(); };
  for (std::size_t i = 0; i < o.counted.size(); ++i) {
    // Sharded tensors count on every rank; replicated ones on tp rank 0, a KV head on its KV group's first rank.
    bool counted = !in(o.tp_replicated, i) || d.rank == 0;
    if (in(o.kv_replicated, i)) counted = d.rank % d.kv_replicas == 0;
    o.counted[i] = reports[i] && counted;
  }
  return o;
}

}  // namespace qwen3
