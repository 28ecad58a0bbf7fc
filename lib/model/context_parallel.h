// Context parallelism's token arithmetic, shared by both engines (causal load balancing): a sequence of `seq` tokens
// is cut into 2·cp chunks and cp rank r holds chunks r and 2·cp − 1 − r, so every rank does the same attention work.
// Which tokens, labels and RoPE rows a rank takes, and how every rank's rows come back in sequence order.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "ops/cpu/rope.h"

namespace qwen3 {

// The position in the sequence of rank `rank`'s local token j (0 ≤ j < seq / cp).
std::int64_t context_parallel_position(int rank, std::int64_t j, std::int64_t seq, int cp);

// Those positions for j = 0 … seq / cp − 1 (0 … seq − 1 when cp = 1).
std::vector<std::int64_t> context_parallel_positions(int rank, int cp, std::int64_t seq);

// This rank's rows of full[B, seq, n] into local[B, seq / cp, n] (its two chunks of every sequence, in order).
template <typename T>
void context_parallel_rows(int rank, int cp, std::int64_t B, std::int64_t seq, std::int64_t n, const T* full, T* local) {
  const std::int64_t S = seq / cp;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < S; ++j) {
      const T* from = full + (b * seq + context_parallel_position(rank, j, seq, cp)) * n;
      T* to = local + (b * S + j) * n;
      for (std::int64_t i = 0; i < n; ++i) to[i] = from[i];
    }
}

// The RoPE tables (ops/cpu/rope.h) at this rank's positions of a sequence of `seq` tokens: [seq / cp, head_dim / 2].
cpu::RopeTable context_parallel_rope(int rank, int cp, std::int64_t seq, std::int64_t head_dim, double theta);

// Every cp rank's local rows [B, S, n] (S = its tokens of each sequence), all-gathered and put in sequence order:
// [B, S·cp, n] on every rank. Collective over cp.
std::vector<double> context_parallel_gather(Communicator& cp, const std::vector<double>& local, std::int64_t B,
                                            std::int64_t S, std::int64_t n);
std::vector<float> context_parallel_gather(Communicator& cp, const std::vector<float>& local, std::int64_t B,
                                           std::int64_t S, std::int64_t n);

}  // namespace qwen3
