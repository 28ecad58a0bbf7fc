// AdamW's chunks by forward segment (see optimizer_segments.h).
#include "train/optimizer_segments.h"

#include <algorithm>

namespace qwen3 {

OptimizerSegments optimizer_segments(const ParamTable& table, std::int64_t num_layers, const ShardWindow& shard,
                                     std::int64_t host_begin) {
  std::vector<std::vector<AdamWChunk>> by_segment(static_cast<std::size_t>(num_layers + 2));
  OptimizerSegments out;
  out.host.resize(by_segment.size());
  std::vector<int> segment_of(table.entries().size(), static_cast<int>(num_layers + 1));
  segment_of[table.embed] = 0;
  for (std::int64_t l = 0; l < num_layers; ++l) {
    const auto& p = table.layers[static_cast<std::size_t>(l)];
    for (std::size_t i : {p.q_proj, p.k_proj, p.v_proj, p.o_proj, p.q_norm, p.k_norm, p.gate_proj, p.up_proj,
                          p.down_proj, p.input_norm, p.post_norm})
      segment_of[i] = static_cast<int>(1 + l);
  }
  for (std::size_t i = 0; i < table.entries().size(); ++i) {
    const auto& p = table.entries()[i];  // the part in this rank's shard, in shard coordinates
    const auto [b, e] = shard.overlap(p.offset, p.numel);
    const std::int64_t lo = b - shard.begin, hi = e - shard.begin, split = std::clamp(host_begin, lo, std::max(lo, hi));
    const auto seg = static_cast<std::size_t>(segment_of[i]);
    if (split > lo) by_segment[seg].push_back({lo, split, p.decay ? 1 : 0});
    if (hi > split) out.host[seg].push_back({split, hi, p.decay ? 1 : 0});
  }
  for (const auto& tensors : by_segment) {
    const auto seg = make_adamw_chunks(tensors);
    out.segments.emplace_back(static_cast<int>(out.chunks.size()), static_cast<int>(seg.size()));
    out.chunks.insert(out.chunks.end(), seg.begin(), seg.end());
  }
  return out;
}

}  // namespace qwen3
