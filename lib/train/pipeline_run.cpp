// The 1F1B driver (see pipeline_run.h).
#include "train/pipeline_run.h"

#include <chrono>

#include "core/error.h"
#include "train/pipeline_schedule.h"

namespace qwen3 {

cpu::LossSum run_pipeline_step(Engine& engine, int stage, int stages, int micro_batches,
                               const std::function<MicroBatch(int)>& batch, double grad_scale, PipelineTimes& times,
                               std::vector<float>* logits_of_first) {
  using Clock = std::chrono::steady_clock;
  Communicator* comm = engine.pipeline_comm();
  if (comm == nullptr || comm->size() != stages || comm->rank() != stage)
    throw InternalError("pipeline step: the engine's pipeline communicator does not match stage " + std::to_string(stage) +
                        " of " + std::to_string(stages));
  auto tokens = [&](int micro) {
    const MicroBatch mb = batch(micro);
    return mb.batch * mb.seq;
  };
  cpu::LossSum loss{0.0, 0};
  for (const PipeOp& op : one_f_one_b(stage, stages, micro_batches)) {
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
  return loss;
}

}  // namespace qwen3
