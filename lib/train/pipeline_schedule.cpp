// 1F1B schedule (see pipeline_schedule.h).
#include "train/pipeline_schedule.h"

#include <algorithm>

#include "core/error.h"

namespace qwen3 {

std::vector<PipeOp> one_f_one_b(int s, int p, int m) {
  if (p < 1 || s < 0 || s >= p || m < 1) throw InternalError("1F1B schedule: bad stage, stage count or micro-batches");
  const bool first = s == 0, last = s == p - 1;
  std::vector<PipeOp> ops;
  auto exchange = [&](int send_fwd, int recv_fwd, int send_bwd, int recv_bwd) {
    PipeOp op;
    op.send_fwd = last ? -1 : send_fwd;
    op.recv_fwd = first ? -1 : recv_fwd;
    op.send_bwd = first ? -1 : send_bwd;
    op.recv_bwd = last ? -1 : recv_bwd;
    if (op.send_fwd >= 0 || op.recv_fwd >= 0 || op.send_bwd >= 0 || op.recv_bwd >= 0) ops.push_back(op);
  };
  auto compute = [&](PipeOp::Kind k, int micro) {
    PipeOp op;
    op.kind = k;
    op.micro = micro;
    ops.push_back(op);
  };
  const int warmup = std::min(p - s - 1, m), steady = m - warmup;
  for (int i = 0; i < warmup; ++i) {
    exchange(-1, i, -1, -1);
    compute(PipeOp::forward, i);
    exchange(i, -1, -1, -1);
  }
  if (steady > 0) exchange(-1, warmup, -1, -1);
  for (int i = 0; i < steady; ++i) {
    const int f = warmup + i;
    compute(PipeOp::forward, f);
    exchange(f, -1, -1, i);  // send this forward's output, receive the oldest micro-batch's output gradient
    compute(PipeOp::backward, i);
    exchange(-1, i + 1 < steady ? f + 1 : -1, i, -1);  // send its input gradient, receive the next input
  }
  for (int i = steady; i < m; ++i) {
    exchange(-1, -1, -1, i);
    compute(PipeOp::backward, i);
    exchange(-1, -1, i, -1);
  }
  return ops;
}

int in_flight(int s, int p, int m) { return std::min(p - s, m); }

double bubble_fraction(int p, int m) { return static_cast<double>(p - 1) / static_cast<double>(m + p - 1); }

std::string describe(const PipeOp& op) {
  if (op.kind == PipeOp::forward) return "F" + std::to_string(op.micro);
  if (op.kind == PipeOp::backward) return "B" + std::to_string(op.micro);
  std::string out;
  auto add = [&](const char* what, int micro) {
    if (micro < 0) return;
    out += (out.empty() ? "" : " + ") + std::string(what) + std::to_string(micro);
  };
  add("send F", op.send_fwd);
  add("recv F", op.recv_fwd);
  add("send B", op.send_bwd);
  add("recv B", op.recv_bwd);
  return out;
}

}  // namespace qwen3
