// The flat parameter state's step: zeroing, the replicated gradients' sums, the data-parallel reduction, the norm and
// AdamW on the side stream (see param_state.h).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "gpu/check.h"
#include "ops/cuda/optimizer.h"
#include "train/cuda_engine/param_state.h"

namespace qwen3::cuda {

bool ParamState::begin_micro_batch(bool replicated_partial) {
  if (replicated_ == Replicated::reduced)
    throw InternalError("CUDA engine: a micro-batch's forward/backward after the gradients were read needs zero_grad first");
  if (replicated_partial) replicated_ = Replicated::partial;
  const bool accumulate = !overwrite_grads_;
  overwrite_grads_ = false;
  return accumulate;
}

bool ParamState::take_update_pending() {
  const bool pending = update_pending_;
  update_pending_ = false;
  return pending;
}

void ParamState::wait_segment(std::size_t seg, cudaStream_t st, bool pending) const {
  if (pending) segment_done_[seg].wait_on(st);
}

void ParamState::wait_zero(cudaStream_t st) {  // before any gradient is written
  if (zero_pending_) zero_done_.wait_on(st);
  zero_pending_ = false;
}

void ParamState::zero_grad() {
  // On the side stream, after any pending AdamW has read these gradients; the backward waits for zero_done_.
  timer_.start(opt_stream_);
  for (std::size_t i : zeroed_by_memset_) {
    const auto& p = ctx_.table.entries()[i];
    CUDA_CHECK(cudaMemsetAsync(g_ + p.offset, 0, p.numel * sizeof(float), opt_stream_));
  }
  timer_.mark(opt_stream_, "zero grad (side stream)");
  zero_done_.record(opt_stream_);
  zero_pending_ = true;
  overwrite_grads_ = groups_.pp == nullptr;
  grads_scattered_ = false;
  replicated_ = Replicated::clean;
}

void ParamState::finish_replicated_grads() const {
  // Tensor parallelism: every rank added its share of the replicated weights' gradients in each micro-batch; the sums
  // are reduced once, when the gradients are first read after the last micro-batch. Reading ends the accumulation.
  if (replicated_ != Replicated::partial) return;
  replicated_ = Replicated::reduced;
  auto reduce = [&](DeviceGroup& group, const std::vector<std::size_t>& tensors) {
    group.group_start();
    for (std::size_t i : tensors) {
      const auto& e = ctx_.table.entries()[i];
      if (e.numel > 0) group.all_reduce_sum(g_ + e.offset, static_cast<std::size_t>(e.numel));
    }
    group.group_end();
  };
  if (groups_.tp_dev) reduce(*groups_.tp_dev, ownership_.tp_replicated);
  if (groups_.kv_dev) reduce(*groups_.kv_dev, ownership_.kv_replicated);
  if (groups_.embed_dev && (ctx_.stage.first || ctx_.stage.last)) reduce(*groups_.embed_dev, {full_.embed});
  // Context parallelism: each rank's gradients are its tokens' share; every rank then holds the whole sums (unless the
  // distributed optimizer's reduce-scatter over data × context-parallel ranks sums them).
  if (groups_.cp_dev && !groups_.zero_over_cp)
    groups_.cp_dev->all_reduce_sum(g_, static_cast<std::size_t>(ctx_.table.total_elements()));
}

void ParamState::reduce_gradients(Communicator& dp) {
  finish_replicated_grads();
  if (dp.size() == 1 && !zero1_) return;
  if (!dp_dev_) {  // collective over the group: every replica reaches its first reduction together
    Communicator& group = zero1_ ? *groups_.shards : dp;
    dp_dev_ = groups_.staged_dp ? make_host_staged_group(group, ctx_.stream) : make_nccl_group(group, ctx_.stream, "data parallelism");
  }
  timer_.start(ctx_.stream);
  if (zero1_) {  // each rank receives the sums of its shard, in place (fp32, on the main stream)
    if (dp.size() * (groups_.zero_over_cp ? ctx_.cp : 1) != groups_.shards->size())
      throw InternalError("reduce_gradients over another group than the optimizer's shards");
    dp_dev_->reduce_scatter_sum(g_, g_ + shard_.begin, static_cast<std::size_t>(shard_.size));
    grads_scattered_ = true;
    timer_.mark(ctx_.stream, "gradient reduce-scatter (distributed optimizer, NCCL)");
  } else {
    dp_dev_->all_reduce_sum(g_, static_cast<std::size_t>(ctx_.table.total_elements()));  // fp32 sums, main stream
    timer_.mark(ctx_.stream, "gradient all-reduce (data parallel, NCCL)");
  }
}

double ParamState::grad_norm() {
  finish_replicated_grads();
  if (groups_.zero_over_cp && !grads_scattered_) throw InternalError("CUDA engine: grad_norm before reduce_gradients");
  // This rank sums what it holds (its shard under the distributed optimizer) minus the tensors another rank counts
  // (gradient_ownership); the groups add up.
  const std::int64_t lo = grads_scattered_ ? shard_.begin : 0;
  const std::int64_t hi = grads_scattered_ ? shard_.begin + shard_.size : ctx_.table.total_elements();
  timer_.start(ctx_.stream);
  sum_squares(g_ + lo, std::min(hi, shard_.padded) - lo, partial_, scalar_, ctx_.stream);
  timer_.mark(ctx_.stream, "grad norm");
  double ss = device_scalar();
  for (std::size_t i = 0; i < ownership_.counted.size(); ++i) {
    if (ownership_.counted[i]) continue;
    const auto& e = ctx_.table.entries()[i];
    const std::int64_t b = std::max(e.offset, lo), end = std::min(e.offset + e.numel, hi);
    if (end <= b) continue;
    sum_squares(g_ + b, end - b, partial_, scalar_, ctx_.stream);
    ss -= device_scalar();
  }
  if (grads_scattered_) groups_.shards->all_reduce_sum(&ss, 1);
  if (groups_.tp) groups_.tp->all_reduce_sum(&ss, 1);
  if (groups_.pp) groups_.pp->all_reduce_sum(&ss, 1);
  return std::sqrt(std::max(ss, 0.0));
}

void ParamState::optimizer_step(double lr, const AdamWConfig& a, double grad_scale) {
  finish_replicated_grads();
  ++step_;
  AdamWArgs args{};
  args.lr = static_cast<float>(lr);
  args.beta1 = static_cast<float>(a.beta1);
  args.beta2 = static_cast<float>(a.beta2);
  args.eps = static_cast<float>(a.eps);
  args.weight_decay = static_cast<float>(a.weight_decay);
  args.bias_correction1 = static_cast<float>(1.0 - std::pow(a.beta1, static_cast<double>(step_)));
  args.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(a.beta2, static_cast<double>(step_))));
  args.grad_scale = static_cast<float>(grad_scale);
  if (zero1_ && !grads_scattered_) throw InternalError("the distributed optimizer steps after reduce_gradients only");
  fork(ctx_.stream, opt_stream_, grads_ready_);
  // The window's host part: the same step on the CPU (ops/cpu/adamw.h), same arguments.
  if (host_) host_->begin_step({lr, a.beta1, a.beta2, a.eps, a.weight_decay, step_, grad_scale}, grads_ready_);
  timer_.start(opt_stream_);
  for (std::size_t s = 0; s < segments_.size(); ++s) {
    if (segments_[s].second > 0)
      adamw_step(w_, m_, v_, g_ + shard_.begin, wb_ + shard_.begin, chunks_ + segments_[s].first, segments_[s].second,
                 args, opt_stream_);
    if (host_) host_->update_segment(s, g_ + shard_.begin, wb_ + shard_.begin, opt_stream_);
    if (!zero1_) segment_done_[s].record(opt_stream_);
  }
  timer_.mark(opt_stream_, "adamw (side stream, overlaps the next forward)");
  if (zero1_) {  // every replica's updated bf16 shard to every replica; the next forward waits for all of it
    dp_dev_->set_stream(opt_stream_);
    dp_dev_->all_gather_bf16(wb_ + shard_.begin, wb_, static_cast<std::size_t>(shard_.size));
    dp_dev_->set_stream(ctx_.stream);
    timer_.mark(opt_stream_, "bf16 weight all-gather (distributed optimizer)");
    for (auto& e : segment_done_) e.record(opt_stream_);
  }
  update_pending_ = true;
  if (timer_.enabled()) timer_.collect();  // timing only: waits for the step (no overlap measured across steps)
  if (step_ == 1) timer_.clear();  // the first step pays for cuBLASLt heuristics and lazy module loading
}

}  // namespace qwen3::cuda
