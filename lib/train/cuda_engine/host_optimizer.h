// AdamW on the CPU for the part of this rank's optimizer shard kept in pinned host memory (--offload-optimizer,
// model/memory_policy.h). The fp32 master weights and moments of that part live on the host; each step its gradients
// stream down in pieces through two pinned staging slots, the host's AdamW (ops/cpu/adamw.h: the device kernel's float
// arithmetic, vectorised, over the rank's share of the cores) updates them and rounds the weights to bf16, and the
// bf16 weights stream back up. Three streams, one per stage — copy down, CPU pass (a host function), copy up — so piece k's CPU pass runs
// while piece k+1 comes down and piece k−1 goes up. The caller's stream waits for each forward segment's last piece.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/adamw_chunks.h"
#include "ops/cpu/adamw.h"
#include "train/cuda_engine/device_buffers.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/streams.h"

namespace qwen3::cuda {

class HostOptimizer {
 public:
  // host_begin: the window coordinate where the host's part begins; runs: per forward segment, the runs [begin, end)
  // (window coordinates, decay) it updates (train/optimizer_segments.h); threads: the CPU pass's OpenMP threads (0:
  // OpenMP's default).
  HostOptimizer(const DeviceBuffers& buffers, std::int64_t host_begin, const std::vector<std::vector<AdamWChunk>>& runs,
                int threads);
  HostOptimizer(const HostOptimizer&) = delete;  // its pieces point at it
  HostOptimizer& operator=(const HostOptimizer&) = delete;

  std::int64_t begin() const { return begin_; }
  // The host part's fp32 state: 0 master weights, 1 first moment, 2 second moment; element i of the window at
  // [i − begin()].
  float* state(int which) const { return state_[which]; }

  // A step's arguments (weight_decay: that of the decayed tensors), and the event after which the gradients are final.
  void begin_step(const cpu::AdamWStep& args, const Event& grads_ready);
  // Queues segment `seg`'s pieces: g and wb point at the window's first gradient (fp32) and bf16 weight on the device.
  // `after` (the optimizer's stream) then waits for the segment's last bf16 upload. No-op for a segment without runs.
  void update_segment(std::size_t seg, const float* g, bf16* wb, cudaStream_t after);

  // The CPU's own time: per optimizer step so far, the seconds its AdamW passes took (waits for the last step's
  // passes), and the elements a step updates — the host part's measured rate, beside qwen3-calibrate's.
  std::vector<double> step_cpu_seconds();
  std::int64_t elements() const { return elements_; }

 private:
  struct Piece {
    HostOptimizer* owner;
    std::int64_t begin, end;  // window coordinates
    int decay, slot;
  };
  static void CUDART_CB run_piece(void* piece);
  void cpu_pass(const Piece& p);

  std::int64_t begin_;
  float* state_[3];
  float* grad_stage_[2];
  std::uint16_t* weight_stage_[2];
  std::vector<std::vector<Piece>> pieces_;  // per segment
  int threads_;
  std::int64_t elements_ = 0;
  std::vector<double> step_cpu_s_;  // written by the CPU passes (one step's at a time), read after cpu_ is idle
  cpu::AdamWStep args_{};
  Stream down_, cpu_, up_;
  Event down_done_[2], cpu_done_[2], up_done_[2], segment_up_;
};

}  // namespace qwen3::cuda
