// The distributed optimizer's (ZeRO-1) shard of the flat parameter buffers as arithmetic, shared by both engines:
// each of `parts` ranks keeps elements [begin, begin + size) of the master weights and AdamW moments; the buffers are
// padded to parts · size.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

namespace qwen3 {

struct ShardWindow {
  std::int64_t begin = 0, size = 0, padded = 0;

  // The whole buffer of P elements (no sharding).
  static ShardWindow whole(std::int64_t P) { return {0, P, P}; }
  // Rank `rank` of `parts`: ceil(P / parts) elements rounded up to a multiple of `align`.
  static ShardWindow of(std::int64_t P, int parts, int rank, std::int64_t align) {
    const std::int64_t size = ((P + parts - 1) / parts + align - 1) / align * align;
    return {size * rank, size, size * parts};
  }
  // Where the part of the window on the host begins (window coordinates) when `host_fraction` of it is there
  // (--offload-optimizer): [0, result) stays on the device, [result, size) is on the host, a multiple of 64 elements
  // (or the whole window).
  std::int64_t host_begin(double host_fraction) const {
    const auto host = static_cast<std::int64_t>(host_fraction * static_cast<double>(size) + 63) / 64 * 64;
    return std::max<std::int64_t>(0, size - host);
  }
  // Flat elements [offset, offset + n) inside the window: [first, second), empty when second <= first.
  std::pair<std::int64_t, std::int64_t> overlap(std::int64_t offset, std::int64_t n) const {
    return {std::max(offset, begin), std::min(offset + n, begin + size)};
  }
};

}  // namespace qwen3
