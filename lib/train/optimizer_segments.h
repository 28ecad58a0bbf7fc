// AdamW's chunk list for one rank, grouped by forward segment — 0 the embedding, 1 + l layer l, L + 1 the final norm
// (and an untied output projection) — so the CUDA engine's optimizer step can overlap the next forward segment by
// segment. Backend-neutral: the buffer table counts the same list the engine uploads.
#pragma once
#include <utility>
#include <vector>

#include "model/param_table.h"
#include "model/shard_window.h"
#include "ops/adamw_chunks.h"

namespace qwen3 {

struct OptimizerSegments {
  std::vector<AdamWChunk> chunks;               // in shard coordinates (element 0 = the window's first)
  std::vector<std::pair<int, int>> segments;    // (first chunk, chunk count), num_layers + 2 of them
  std::vector<std::vector<AdamWChunk>> host;    // per segment: its tensors' runs at or after host_begin (unsplit)
};

// table: this rank's tensors (the flat layout; the order is embedding, layers, final norm, output projection).
// host_begin: window coordinate where the host's part begins (ShardWindow::host_begin; shard.size: none).
OptimizerSegments optimizer_segments(const ParamTable& table, std::int64_t num_layers, const ShardWindow& shard,
                                     std::int64_t host_begin);

}  // namespace qwen3
