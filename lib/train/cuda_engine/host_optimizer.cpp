// The optimizer's host part (see host_optimizer.h).
#include "train/cuda_engine/host_optimizer.h"

#include <chrono>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.h"
#include "gpu/check.h"

namespace qwen3::cuda {

HostOptimizer::HostOptimizer(const DeviceBuffers& buffers, std::int64_t host_begin,
                             const std::vector<std::vector<AdamWChunk>>& runs, int threads)
    : begin_(host_begin),
      state_{buffers.get<float>(Buf::host_master), buffers.get<float>(Buf::host_adam_m), buffers.get<float>(Buf::host_adam_v)},
      grad_stage_{buffers.get<float>(Buf::host_grad_stage, 0), buffers.get<float>(Buf::host_grad_stage, 1)},
      weight_stage_{buffers.get<std::uint16_t>(Buf::host_weight_stage, 0), buffers.get<std::uint16_t>(Buf::host_weight_stage, 1)},
      threads_(threads),
      down_(stream_priorities().least), cpu_(stream_priorities().least), up_(stream_priorities().least) {
  QWEN3_ASSERT(state_[0] && state_[1] && state_[2] && grad_stage_[1] && weight_stage_[1],
               "the buffer table's host optimizer state");
  // Pieces of at most kHostAdamWPieceElements, each in one run (one decay setting), the slots alternating in the
  // order a step queues them.
  int k = 0;
  for (const auto& segment : runs) {
    pieces_.emplace_back();
    for (const AdamWChunk& r : segment) {
      QWEN3_ASSERT(r.begin >= begin_, "a host optimizer run before the host part");
      for (std::int64_t b = r.begin; b < r.end; b += kHostAdamWPieceElements)
        pieces_.back().push_back({this, b, std::min(r.end, b + kHostAdamWPieceElements), r.decay, k++ % 2});
      elements_ += r.end - r.begin;
    }
  }
}

void HostOptimizer::begin_step(const cpu::AdamWStep& args, const Event& grads_ready) {
  // The previous step's CPU passes read args_: they are done before it changes (the forward waited for them).
  CUDA_CHECK(cudaStreamSynchronize(cpu_));
  args_ = args;
  step_cpu_s_.push_back(0.0);
  grads_ready.wait_on(down_);
}

void HostOptimizer::update_segment(std::size_t seg, const float* g, bf16* wb, cudaStream_t after) {
  if (pieces_[seg].empty()) return;
  for (Piece& p : pieces_[seg]) {
    const std::int64_t n = p.end - p.begin;
    const int s = p.slot;
    cpu_done_[s].wait_on(down_);  // the slot's gradients were consumed by the piece two before
    CUDA_CHECK(cudaMemcpyAsync(grad_stage_[s], g + p.begin, n * sizeof(float), cudaMemcpyDeviceToHost, down_));
    down_done_[s].record(down_);
    down_done_[s].wait_on(cpu_);
    up_done_[s].wait_on(cpu_);  // the slot's bf16 weights went up
    CUDA_CHECK(cudaLaunchHostFunc(cpu_, &HostOptimizer::run_piece, &p));
    cpu_done_[s].record(cpu_);
    cpu_done_[s].wait_on(up_);
    CUDA_CHECK(cudaMemcpyAsync(wb + p.begin, weight_stage_[s], n * sizeof(bf16), cudaMemcpyHostToDevice, up_));
    up_done_[s].record(up_);
  }
  segment_up_.record(up_);
  segment_up_.wait_on(after);
}

std::vector<double> HostOptimizer::step_cpu_seconds() {
  CUDA_CHECK(cudaStreamSynchronize(cpu_));
  return step_cpu_s_;
}

void CUDART_CB HostOptimizer::run_piece(void* piece) {
  const Piece& p = *static_cast<const Piece*>(piece);
  p.owner->cpu_pass(p);
}

void HostOptimizer::cpu_pass(const Piece& p) {
  // On CUDA's host-function thread: no CUDA calls here.
#ifdef _OPENMP
  if (threads_ > 0) omp_set_num_threads(threads_);
#endif
  cpu::AdamWStep a = args_;
  if (!p.decay) a.weight_decay = 0;
  const std::int64_t i = p.begin - begin_, n = p.end - p.begin;
  const auto t0 = std::chrono::steady_clock::now();
  cpu::adamw_step_f32(state_[0] + i, state_[1] + i, state_[2] + i, grad_stage_[p.slot], weight_stage_[p.slot], n, a);
  step_cpu_s_.back() += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace qwen3::cuda
