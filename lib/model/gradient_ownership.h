// Who owns which gradient under tensor and pipeline parallelism, shared by both engines: the replicated weights whose
// gradients are partial sums a group must add (norms over the tensor-parallel group, K/V projections over their KV
// group when tp exceeds the KV heads), and which rank's copy of each tensor the gradient norm counts (each once).
#pragma once
#include <cstddef>
#include <vector>

#include "model/param_table.h"
#include "model/tensor_parallel.h"

namespace qwen3 {

struct GradientOwnership {
  std::vector<std::size_t> tp_replicated;  // whole on every tensor-parallel rank: all-reduced over the group
  std::vector<std::size_t> kv_replicated;  // k_proj, v_proj held by each rank of a KV group: all-reduced over it
  std::vector<bool> counted;               // per tensor: this rank's copy counts in the gradient norm
};

// full: the model's table; d: this rank's tensor-parallel share; reports: per tensor, this pipeline stage's copy is
// the one reported (a tied embedding on the first stage only; other stages' tensors not at all).
GradientOwnership gradient_ownership(const ParamTable& full, const TpDims& d, const std::vector<bool>& reports);

}  // namespace qwen3
