// The memory policy, shared by the engines and the memory planner: activation recomputation (--recompute,
// --recompute-num-layers, --offload-inputs) and the optimizer on the host (--offload-optimizer). What each layer keeps
// for its backward:
//   none       everything its backward reads;
//   selective  everything but the cheap-to-recompute, expensive-to-store parts — the two RMSNorm outputs and the
//              normed, rotated q and k ([T, H] twice and [T, q_dim + kv_dim]) — recomputed from what is kept (an
//              elementwise pass and, with sequence parallelism, the norm's all-gather) just before its backward;
//   full       only its input ([Tl, H]); its whole forward runs again just before its backward. With num_layers N > 0
//              only the first N layers of each pipeline stage, the rest keep everything (Megatron's "block" method).
// offload_inputs (full only): the kept inputs of the recomputed layers, except each stage's first layer (where the
// stage's input arrives), live in pinned host memory — copied out while the layer's forward runs, copied back while
// the layer after it runs its backward — so device memory no longer grows with layers × micro-batches in flight.
// offload_optimizer (CUDA): the fraction of this rank's optimizer shard — fp32 master weights and AdamW moments, 12
// bytes per parameter — kept in pinned host memory and updated there by the CPU (the tail of the rank's window of the
// flat buffers: without data-parallel sharding, the last layers, which the next forward reads last); the rest stays on
// the device.
// fp8_weights_per_layer (--precision fp8): each layer's FP8 weight copies are cast into one layer's buffer just before
// its forward and again before its backward, instead of once per optimizer step into a buffer for every layer (2 bytes
// per linear weight element of the stage kept: docs/fp8.md).
#pragma once
#include <cstdint>
#include <string>

namespace qwen3 {

enum class Recompute { none, selective, full };

struct MemoryPolicy {
  Recompute mode = Recompute::none;
  std::int64_t num_layers = 0;  // full: the first num_layers layers of each stage (0: all)
  bool offload_inputs = false;  // full: inputs of recomputed layers (but each stage's first) in pinned host memory
  double offload_optimizer = 0;  // fraction of the optimizer shard in pinned host memory, 0 (none) to 1 (all)
  bool fp8_weights_per_layer = false;  // --precision fp8: FP8 weight copies cast per layer and use, not kept

  // Whether the index-th layer of a stage (0-based) is fully recomputed, recomputed selectively, its input offloaded.
  bool full(std::int64_t index) const { return mode == Recompute::full && (num_layers == 0 || index < num_layers); }
  bool selective(std::int64_t index) const { return mode == Recompute::selective && index >= 0; }
  bool offloaded(std::int64_t index) const { return offload_inputs && index > 0 && full(index); }
  // Fully recomputed layers among a stage's `layers`.
  std::int64_t full_layers(std::int64_t layers) const;
  // "none", "selective", "full", "full (first 4 layers of each stage)", "full, inputs offloaded to host", and
  // ", optimizer on host" or ", 40% of the optimizer on host", and ", FP8 weights cast per layer".
  std::string describe() const;
  // Throws UsageError naming the option for an inconsistent policy (offload without full, negative layer count, an
  // optimizer fraction outside [0, 1]).
  void validate() const;
};

// Throws UsageError naming --offload-optimizer unless 0 <= fraction <= 1 (NaN too).
void validate_optimizer_offload(double fraction);

// "none" | "selective" | "full" → the mode; anything else throws UsageError naming --recompute and the valid values.
Recompute parse_recompute(const std::string& text);
const char* recompute_name(Recompute mode);  // the inverse

}  // namespace qwen3
