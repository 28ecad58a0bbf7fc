// Balanced pipeline stage split (see pipeline_split.h): exhaustive dynamic programme over contiguous partitions.
#include "model/pipeline_split.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/error.h"

namespace qwen3 {
namespace {

// Training FLOPs per token of one decoder layer and of the output projection with its loss (6 × weights, causal
// attention counted once), and bytes per layer / per embedding of weights + gradients + optimizer state (18 bytes a
// parameter: fp32 master, bf16 copy, fp32 gradient, two fp32 moments) and of activations per token.
struct Costs {
  double layer_flops, head_flops, layer_state, embed_state, head_state, layer_act;
};

Costs costs(const ModelConfig& c, std::int64_t seq) {
  const double H = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size);
  const double q = static_cast<double>(c.q_dim()), kv = static_cast<double>(c.kv_dim()), V = static_cast<double>(c.vocab_size);
  const double layer_weights = H * q + 2 * H * kv + q * H + 3 * H * I;
  Costs k{};
  k.layer_flops = 6 * layer_weights + 6 * static_cast<double>(c.num_heads * c.head_dim) * static_cast<double>(seq);
  k.head_flops = 6 * V * H + 10 * V;  // GEMMs plus the softmax passes over the logits
  k.layer_state = 18 * layer_weights;
  k.embed_state = 18 * V * H;
  k.head_state = 18 * V * H;  // untied: lm_head; tied: the last stage's own copy of the embedding
  k.layer_act = 2 * (6 * H + 3 * q + 3 * kv + 2 * I) * static_cast<double>(seq);
  return k;
}

}  // namespace

std::vector<std::int64_t> parse_layer_list(const std::string& option, const std::string& text) {
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 1)
      throw UsageError(option + ": '" + text + "' is not a comma-separated list of positive layer counts (e.g. 3,4,4)");
    out.push_back(v);
    pos = comma + 1;
  }
  return out;
}

std::vector<std::int64_t> pipeline_layer_counts(const ModelConfig& c, int pp, std::int64_t seq_len,
                                                const std::vector<std::int64_t>& override_layers) {
  const std::int64_t L = c.num_layers;
  if (pp < 1) throw UsageError("--pp must be at least 1");
  if (pp > L)
    throw UsageError("--pp " + std::to_string(pp) + " exceeds the model's " + std::to_string(L) +
                     " layers: every stage needs at least one");
  if (!override_layers.empty()) {
    std::int64_t sum = 0;
    for (auto n : override_layers) sum += n;
    if (static_cast<int>(override_layers.size()) != pp || sum != L)
      throw UsageError("--pp-layers lists " + std::to_string(override_layers.size()) + " stages holding " +
                       std::to_string(sum) + " layers; --pp " + std::to_string(pp) + " over this model needs " +
                       std::to_string(pp) + " counts summing to " + std::to_string(L));
    return override_layers;
  }
  // best[s][l]: the best (max compute, max memory) over stages s..pp-1 holding layers l..L-1.
  const Costs k = costs(c, std::max<std::int64_t>(seq_len, 1));
  using Score = std::pair<double, double>;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<Score>> best(static_cast<std::size_t>(pp) + 1, std::vector<Score>(static_cast<std::size_t>(L) + 1, {inf, inf}));
  std::vector<std::vector<std::int64_t>> take(best.size(), std::vector<std::int64_t>(best[0].size(), 0));
  best[pp][L] = {0, 0};
  for (int s = pp - 1; s >= 0; --s)
    for (std::int64_t l = L - (pp - s); l >= s; --l)
      for (std::int64_t n = 1; l + n <= L - (pp - s - 1); ++n) {
        const Score& rest = best[s + 1][l + n];
        if (rest.first == inf) continue;
        double flops = static_cast<double>(n) * k.layer_flops, bytes = static_cast<double>(n) * k.layer_state;
        bytes += static_cast<double>(n) * k.layer_act * static_cast<double>(pp - s);  // micro-batches in flight
        if (s == 0) bytes += k.embed_state;
        if (s == pp - 1) flops += k.head_flops, bytes += k.head_state;
        // Compute within 1% counts as equal, so that memory decides between near-equal splits.
        const Score here{std::max(flops, rest.first), std::max(bytes, rest.second)};
        const Score& cur = best[s][l];
        const bool better = here.first < cur.first * 0.99 ||
                            (here.first <= cur.first * 1.01 && (here.second < cur.second || cur.first == inf));
        if (cur.first == inf || better) {
          best[s][l] = here;
          take[s][l] = n;
        }
      }
  std::vector<std::int64_t> counts;
  for (std::int64_t s = 0, l = 0; s < pp; ++s) {
    counts.push_back(take[s][l]);
    l += take[s][l];
  }
  return counts;
}

std::vector<bool> stage_tensors(const ParamTable& t, const StageRange& stage) {
  std::vector<bool> used(t.entries().size(), false);
  for (std::int64_t l = stage.first_layer; l < stage.last_layer; ++l) {
    const auto& p = t.layers[static_cast<std::size_t>(l)];
    for (std::size_t i : {p.q_proj, p.k_proj, p.v_proj, p.o_proj, p.q_norm, p.k_norm, p.gate_proj, p.up_proj,
                          p.down_proj, p.input_norm, p.post_norm})
      used[i] = true;
  }
  if (stage.first) used[t.embed] = true;
  if (stage.last) used[t.final_norm] = used[t.lm_head] = true;
  return used;
}

StageRange stage_range(const std::vector<std::int64_t>& counts, int stage) {
  StageRange r;
  for (int s = 0; s < stage; ++s) r.first_layer += counts[s];
  r.last_layer = r.first_layer + counts[stage];
  r.first = stage == 0;
  r.last = stage + 1 == static_cast<int>(counts.size());
  return r;
}

}  // namespace qwen3
