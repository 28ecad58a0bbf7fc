// qwen3-calibrate's measurements on one GPU (train/calibration.h): each kernel of the step's inventory
// (train/step_model.h) run alone through the engine's own code (cuBLASLt GEMMs with the engine's autotuning, cuDNN
// attention, the ops/cuda kernels) and timed with CUDA events over back-to-back calls after a warm-up, so that a
// kernel bound by its launch shows its launch rate; pinned host↔device copies; the CPU's AdamW on the host's threads;
// a host round trip; and the device memory the CUDA context, the libraries and the loaded kernels hold.
#pragma once
#include <cstdint>
#include <memory>

#include "train/calibration.h"
#include "train/step_model.h"

namespace qwen3::cuda {

// Elements adamw and sum_squares are timed at (their time is linear in the elements beyond it).
inline constexpr std::int64_t kCalibrationOptimizerElements = 1ll << 26;

class OpBench {
 public:
  OpBench();  // on the current device: the GEMM workspace and handle, the cuDNN handle
  ~OpBench();
  OpBench(const OpBench&) = delete;
  OpBench& operator=(const OpBench&) = delete;
  // Seconds per call of op (one sequence for attention). Throws InternalError when the engine has no such kernel here
  // (attention without cuDNN).
  double time(const OpShape& op);
  // The share of AdamW's time hidden when it runs on the least-priority stream beside the next step's forward (on a
  // stream of the engine's main priority) as the engine runs the two (global batch 1): segment by segment, one
  // 1.7B-shaped layer's AdamW each, each layer's forward (its own weights) at `tokens` rows waiting for its own
  // segment: (t_forwards + t_adamw − t_both) / min(t_forwards, t_adamw) over 28 layers (passes of them to about 60 ms),
  // clamped to [0, 1], the best of three.
  double optimizer_hidden_share(std::int64_t tokens);
  // How much longer a forward GEMM of 1.7B's gate|up at 4,096 tokens takes while `sms` SMs are held by another
  // stream's kernel (as NCCL's blocks hold them while a collective runs beside the backward's weight-gradient GEMMs):
  // t_with / t_alone, each about 20 ms of GEMMs, the best of three.
  double gemm_slowdown_with_sms_held(int sms);
  // Device bytes it holds itself (the GEMM workspace, the buffer that evicts the L2 cache between calls).
  std::int64_t own_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Device bytes in use (cudaMemGetInfo: total − free, every process on the device, as nvidia-smi counts it).
std::int64_t device_used_bytes();

// Fills c's host figures: pinned copies both ways, the CPU's AdamW (threads: OpenMP's), a host round trip; and the
// device memory that mapping pinned host memory takes (the GPU's page tables), per pinned byte.
void measure_host(Calibration& c, int threads);

// Device bytes that `streams` streams and `events` events take (the engine's and the host optimizer's), measured.
std::int64_t stream_bytes(int streams, int events);

}  // namespace qwen3::cuda
