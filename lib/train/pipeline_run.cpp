// The 1F1B driver (see pipeline_run.h).
#include "train/pipeline_run.h"

#include <chrono>

#include "core/error.h"
#include "train/pipeline_schedule.h"
#ifdef QWEN3_HAVE_CUDA
#include <nvtx3/nvToolsExt.h>  // header-only: the schedule's phases appear as ranges in Nsight Systems
#endif

namespace qwen3 {

cpu::LossSum run_pipeline_step(Engine& engine, int stage, int stages, int micro_batches,
                               const std::function<MicroBatch(int)>& batch, double grad_scale, PipelineTimes& times,
                               std::vector<float>* logits_of_first) {
  using Clock = std::chrono::steady_clock;
  Communicator* comm = engine.pipeline_comm();
  if (comm == nullptr || comm->size() != stages || comm->rank() != stage)
    throw InternalError("pipeline step: the engine's pipeline communicator does not match stage " + std::to_string(stage) +
                        " of " + std::to_string(stages));
  if (in_flight(stage, stages, micro_batches) > engine.pipeline_slots())
    throw InternalError("pipeline step: stage " + std::to_string(stage) + " holds " +
                        std::to_string(in_flight(stage, stages, micro_batches)) + " micro-batches in flight, the engine was "
                        "sized for " + std::to_string(engine.pipeline_slots()) + " (EngineOptions::micro_batches)");
  auto tokens = [&](int micro) {
    const MicroBatch mb = batch(micro);
    return mb.batch * mb.seq;
  };
  cpu::LossSum loss{0.0, 0};
  const std::vector<PipeOp> ops = one_f_one_b(stage, stages, micro_batches);
  // Phases for the profiler: warm-up until the first backward, cool-down after the last forward, steady between.
  std::size_t first_backward = ops.size(), last_forward = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind == PipeOp::backward && first_backward == ops.size()) first_backward = i;
    if (ops[i].kind == PipeOp::forward) last_forward = i;
  }
  int phase = -1;
  auto enter_phase = [&](std::size_t i) {
    const int p = i < first_backward ? 0 : i > last_forward ? 2 : 1;
    if (p == phase) return;
#ifdef QWEN3_HAVE_CUDA
    static const char* const names[] = {"1F1B warm-up", "1F1B steady", "1F1B cool-down"};
    if (phase >= 0) nvtxRangePop();
    nvtxRangePushA(names[p]);
#endif
    phase = p;
  };
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const PipeOp& op = ops[i];
    enter_phase(i);
    const auto t0 = Clock::now();
    if (op.kind == PipeOp::forward) {
      const cpu::LossSum l = engine.stage_forward(op.micro, batch(op.micro), grad_scale, op.micro == 0 ? logits_of_first : nullptr);
      loss.sum += l.sum;
      loss.count += l.count;
    } else if (op.kind == PipeOp::backward) {
      engine.stage_backward(op.micro);
    } else {
      std::vector<Communicator::Transfer> transfers;
      auto add = [&](Engine::Boundary which, int micro, bool send, int peer) {
        if (micro < 0) return;
        Communicator::Transfer t = engine.boundary(which, micro, tokens(micro));
        t.send = send;
        t.peer = peer;
        transfers.push_back(t);
      };
      add(Engine::Boundary::output, op.send_fwd, true, stage + 1);
      add(Engine::Boundary::input, op.recv_fwd, false, stage - 1);
      add(Engine::Boundary::input_grad, op.send_bwd, true, stage - 1);
      add(Engine::Boundary::output_grad, op.recv_bwd, false, stage + 1);
      comm->exchange(transfers);
    }
    engine.synchronize_pipeline();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    (op.kind == PipeOp::exchange ? times.p2p_s : times.compute_s) += dt;
  }
#ifdef QWEN3_HAVE_CUDA
  if (phase >= 0) nvtxRangePop();
#endif
  return loss;
}

}  // namespace qwen3
