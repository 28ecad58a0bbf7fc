// What a layout asks of the sequences it trains on: the one place every caller (option validation, --plan, the
// sweep through --plan, both engines per micro-batch) checks a sequence length against tp and cp.
#pragma once
#include <cstdint>

namespace qwen3 {

// Throws UsageError naming the rule when a micro-batch of `batch` sequences of `seq` tokens cannot run with this
// tensor- and context-parallel size: with cp > 1 each rank holds two chunks of every sequence (seq divides by
// 2·cp); on the CUDA backend sequence parallelism splits this rank's batch·seq/cp tokens evenly over tp (the CPU
// reference pads them instead).
void check_sequence_layout(std::int64_t batch, std::int64_t seq, int tp, int cp, bool cuda);

// Attention statistics (log-sum-exp) of one (sequence, head) on a rank: its rows of a sequence of `seq` tokens. With
// cp > 1 two chunks of seq / (2·cp), each starting at a multiple of 4 floats (16 bytes, as cuDNN needs each chunk's
// first row): chunk j's rows begin at j · lse_rows(seq, cp) / 2.
std::int64_t lse_rows(std::int64_t seq, int cp);

}  // namespace qwen3
