// How AdamW walks the flat parameter buffers: runs of at most kAdamWChunkElements elements with one weight-decay
// setting, one thread block each. Backend-neutral: the CUDA kernel launches over these chunks, and the buffer table
// (train/buffer_table.h) counts the device bytes of their list.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace qwen3 {

// A run of the flat buffers with one weight-decay setting.
struct AdamWChunk {
  std::int64_t begin, end;  // element range in the flat buffers
  int decay;                // 1: decoupled weight decay applies (2-D tensors)
};

inline constexpr std::int64_t kAdamWChunkElements = 1 << 16;

// Splits tensors (begin, end, decay) into chunks of at most kAdamWChunkElements.
inline std::vector<AdamWChunk> make_adamw_chunks(const std::vector<AdamWChunk>& tensors) {
  std::vector<AdamWChunk> chunks;
  for (const auto& t : tensors)
    for (std::int64_t b = t.begin; b < t.end; b += kAdamWChunkElements)
      chunks.push_back({b, std::min(t.end, b + kAdamWChunkElements), t.decay});
  return chunks;
}

// The host's AdamW (--offload-optimizer) streams gradients down and bf16 weights up in pieces of at most this many
// elements, through two pinned staging slots each way (16 MiB of fp32 gradients per slot: measured on an H200 host,
// 1.5% faster than 64 MiB for 1.7B).
inline constexpr std::int64_t kHostAdamWPieceElements = 1 << 22;

// Blocks of the device reductions (sum, sum of squares): each writes one fp64 partial.
inline constexpr int kNormBlocks = 1024;

}  // namespace qwen3
