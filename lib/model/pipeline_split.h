// Pipeline stages as pure arithmetic: which decoder layers each of pp stages holds. Stage 0 also holds the embedding,
// the last stage the final norm and the output projection (and, with tied embeddings, a copy of the embedding whose
// gradient is summed with stage 0's). The default split balances each stage's training compute — the output
// projection and its cross-entropy counted as the layers they are worth — and, among equally fast splits, the
// memory of the stage holding the most: weights, gradients and optimizer state, plus activations times the
// micro-batches a stage keeps in flight under 1F1B (pp − s on stage s).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "model/param_table.h"

namespace qwen3 {

struct StageRange {
  std::int64_t first_layer = 0, last_layer = 0;  // layers [first_layer, last_layer)
  bool first = true, last = true;                // holds the embedding / the final norm and output projection
  std::int64_t layers() const { return last_layer - first_layer; }
};

// The layer count of each stage: `override_layers` (from --pp-layers "3,4,4,…") when non-empty, checked (pp entries,
// each ≥ 1, summing to the model's layers; UsageError naming the problem); else the balanced split for seq_len tokens.
std::vector<std::int64_t> pipeline_layer_counts(const ModelConfig& c, int pp, std::int64_t seq_len,
                                                const std::vector<std::int64_t>& override_layers = {});
// Stage `stage` of the split `counts`.
StageRange stage_range(const std::vector<std::int64_t>& counts, int stage);
// Per tensor of a Qwen3 table (ParamTable order): whether the stage uses it — its layers' tensors, the embedding on
// the first stage, the final norm and output projection on the last (with tied embeddings, the embedding there too).
std::vector<bool> stage_tensors(const ParamTable& table, const StageRange& stage);

// "3,4,4" → {3, 4, 4}; UsageError on anything that is not a comma-separated list of positive integers.
std::vector<std::int64_t> parse_layer_list(const std::string& option, const std::string& text);

}  // namespace qwen3
