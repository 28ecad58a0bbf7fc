// Sequence-length rules of a parallel layout (see sequence_layout.h).
#include "model/sequence_layout.h"

#include <string>

#include "core/error.h"

namespace qwen3 {

void check_sequence_layout(std::int64_t batch, std::int64_t seq, int tp, int cp, bool cuda) {
  if (cp > 1 && seq % (2 * cp) != 0)
    throw UsageError("--cp " + std::to_string(cp) + ": --seq-len " + std::to_string(seq) +
                     " must divide by 2 × cp = " + std::to_string(2 * cp) + " (each rank holds two chunks of every sequence)");
  const std::int64_t tokens = batch * seq / cp;  // this context-parallel rank's tokens of the micro-batch
  if (cuda && tp > 1 && tokens % tp != 0)
    throw UsageError("--tp " + std::to_string(tp) + " with --device cuda: the micro-batch's " + std::to_string(tokens) +
                     " tokens" + (cp > 1 ? " on each context-parallel rank" : "") +
                     " must divide by the tensor-parallel size (sequence parallelism splits them evenly)");
}

std::int64_t lse_rows(std::int64_t seq, int cp) {
  if (cp <= 1) return seq;
  const std::int64_t chunk = seq / (2 * cp);
  return 2 * ((chunk + 3) / 4 * 4);
}

}  // namespace qwen3
