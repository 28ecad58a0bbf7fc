// The 1F1B pipeline schedule as pure arithmetic (PipeDream-flush, as Megatron-Core's non-interleaved schedule):
// stage s of p runs min(p − s − 1, m) warm-up forwards, then alternates one forward and one backward, then drains the
// remaining backwards. Point-to-point transfers are paired where two neighbours would otherwise both send first
// (send the forward output while receiving a backward gradient, and the reverse), so blocking transfers cannot
// deadlock. A stage holds at most min(p − s, m) micro-batches' activations at once.
#pragma once
#include <string>
#include <vector>

namespace qwen3 {

struct PipeOp {
  enum Kind { forward, backward, exchange } kind = exchange;
  int micro = -1;  // forward / backward: the micro-batch
  // exchange: the transfers posted together (−1: none). send_fwd sends micro's output activation to the next stage,
  // recv_fwd receives micro's input from the previous one; send_bwd sends the gradient of micro's input to the
  // previous stage, recv_bwd receives the gradient of micro's output from the next.
  int send_fwd = -1, recv_fwd = -1, send_bwd = -1, recv_bwd = -1;
};

// Stage `stage`'s operations for one optimizer step of `micro_batches` micro-batches over `stages` stages.
// Transfers to or from a stage that does not exist (before the first, after the last) are left out.
std::vector<PipeOp> one_f_one_b(int stage, int stages, int micro_batches);

// The micro-batches stage `stage` holds in flight at most (its activation slots).
int in_flight(int stage, int stages, int micro_batches);

// 1F1B's idle share of a step with equal stages: (p − 1) / (m + p − 1).
double bubble_fraction(int stages, int micro_batches);

std::string describe(const PipeOp& op);  // "F3", "B0", "send F2 + recv B0"

}  // namespace qwen3
