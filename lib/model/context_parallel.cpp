// Context parallelism's token arithmetic (see context_parallel.h).
#include "model/context_parallel.h"

#include <algorithm>

namespace qwen3 {

std::int64_t context_parallel_position(int r, std::int64_t j, std::int64_t seq, int cp) {
  const std::int64_t c = seq / (2 * cp);
  return j < c ? r * c + j : (2 * cp - 1 - r) * c + (j - c);
}

std::vector<std::int64_t> context_parallel_positions(int rank, int cp, std::int64_t seq) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(seq / cp));
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = context_parallel_position(rank, static_cast<std::int64_t>(j), seq, cp);
  return out;
}

cpu::RopeTable context_parallel_rope(int rank, int cp, std::int64_t seq, std::int64_t head_dim, double theta) {
  const cpu::RopeTable full = cpu::rope_table(seq, head_dim, theta);
  if (cp == 1) return full;
  cpu::RopeTable mine{seq / cp, full.half, std::vector<float>(static_cast<std::size_t>(seq / cp * full.half)), {}};
  mine.sin.resize(mine.cos.size());
  context_parallel_rows(rank, cp, 1, seq, full.half, full.cos.data(), mine.cos.data());
  context_parallel_rows(rank, cp, 1, seq, full.half, full.sin.data(), mine.sin.data());
  return mine;
}

namespace {
// The inverse of context_parallel_rows over the group: every rank's [B, S, n] blocks placed at their positions.
template <typename T>
std::vector<T> gather_in_sequence_order(Communicator& cp, const std::vector<T>& local, std::int64_t B, std::int64_t S,
                                        std::int64_t n) {
  const int size = cp.size();
  const std::int64_t S_full = S * size, block = B * S * n;
  std::vector<T> all(static_cast<std::size_t>(block * size)), full(static_cast<std::size_t>(B * S_full * n));
  cp.all_gather(local.data(), all.data(), static_cast<std::size_t>(block));
  for (int r = 0; r < size; ++r)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < S; ++j)
        std::copy_n(all.begin() + r * block + (b * S + j) * n, n,
                    full.begin() + (b * S_full + context_parallel_position(r, j, S_full, size)) * n);
  return full;
}
}  // namespace

std::vector<double> context_parallel_gather(Communicator& cp, const std::vector<double>& local, std::int64_t B,
                                            std::int64_t S, std::int64_t n) {
  return gather_in_sequence_order(cp, local, B, S, n);
}
std::vector<float> context_parallel_gather(Communicator& cp, const std::vector<float>& local, std::int64_t B,
                                           std::int64_t S, std::int64_t n) {
  return gather_in_sequence_order(cp, local, B, S, n);
}

}  // namespace qwen3
