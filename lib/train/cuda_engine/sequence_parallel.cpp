// The sequence-parallel region (see sequence_parallel.h).
#include "train/cuda_engine/sequence_parallel.h"

#include "ops/cuda/elementwise.h"
#include "ops/cuda/rmsnorm.h"

namespace qwen3::cuda {

SequenceParallel::SequenceParallel(const EngineContext& ctx, DeviceGroup* tp, const DeviceBuffers& b,
                                   const Scratch& scratch, Linears& linears, int overlapped_gemm_sms)
    : ctx_(ctx), tp_(tp), scratch_(scratch), lin_(linears), gemm_sms_(overlapped_gemm_sms) {
  if (!tp_) return;
  h_local_ = b.get<bf16>(Buf::sp_h_local);
  partial_ = b.get<bf16>(Buf::sp_partial);
  sum_local_ = b.get<bf16>(Buf::sp_sum_local);
  for (int i = 0; i < 2; ++i) gathered_[i] = b.get<bf16>(Buf::sp_dy_gathered, i);
  dh_local_ = b.get<float>(Buf::sp_dh_local);
  dres_full_ = b.get<float>(Buf::sp_dres_full);
  comm_ = Stream(stream_priorities().greatest);
}

void SequenceParallel::norm_gathered(const bf16* x, std::size_t w, bf16* full, float* rstd, const MicroDims& d,
                                     float* amax) {
  rmsnorm_forward(x, ctx_.W(w), tp_ ? h_local_ : full, rstd, d.Tl, d.H, d.eps, ctx_.stream, amax);
  ctx_.mark("rmsnorm fwd");
  if (!tp_) return;
  tp_->all_gather_bf16(h_local_, full, static_cast<std::size_t>(d.Tl * d.H));
  ctx_.mark("all-gather (sequence parallel)");
}

void SequenceParallel::row_parallel(const bf16* in, std::int64_t l, Fp8Linear w, const LayerActs& a,
                                    const bf16* residual, bf16* out, const char* what, const MicroDims& d) {
  if (!tp_) {
    lin_.forward(in, l, w, a, out, residual, d.T);
    ctx_.mark(what);
    return;
  }
  lin_.forward(in, l, w, a, partial_, nullptr, d.T);
  ctx_.mark(what);
  tp_->reduce_scatter_sum_bf16(partial_, sum_local_, static_cast<std::size_t>(d.Tl * d.H));
  ctx_.mark("reduce-scatter (sequence parallel)");
  add(residual, sum_local_, out, d.Tl * d.H, ctx_.stream);
  ctx_.mark("residual add");
}

void SequenceParallel::embed_forward(const std::int32_t* tokens, bf16* x, const MicroDims& d) {
  const std::size_t embed = ctx_.table.embed;
  if (!tp_) {
    embedding_forward(tokens, ctx_.W(embed), x, d.T, d.H, ctx_.stream);
  } else {  // vocabulary-parallel: rows of this rank's tokens, zeros elsewhere, summed and scattered
    embedding_forward(tokens, ctx_.W(embed), partial_, d.T, d.H, ctx_.stream, d.v0, d.V);
    tp_->reduce_scatter_sum_bf16(partial_, x, static_cast<std::size_t>(d.Tl * d.H));
  }
  ctx_.mark("embedding fwd");
}

void SequenceParallel::gather_first_dy(const MicroDims& d) {
  cur_ = 0;
  if (!tp_) return;
  tp_->all_gather_bf16(scratch_.dy, gathered_[cur_], static_cast<std::size_t>(d.Tl * d.H));
  ctx_.mark("all-gather (sequence parallel)");
}

const float* SequenceParallel::scatter_dh(const MicroDims& d) {
  if (!tp_) return scratch_.dh;
  tp_->reduce_scatter_sum(scratch_.dh, dh_local_, static_cast<std::size_t>(d.Tl * d.H));
  ctx_.mark("reduce-scatter (sequence parallel)");
  return dh_local_;
}

void SequenceParallel::block_tail(const bf16* x, std::size_t norm, const float* rstd, bool more,
                                  const std::function<void()>& wgrads, const MicroDims& d) {
  const cudaStream_t st = ctx_.stream;
  bf16* next_dy = more ? scratch_.dy : nullptr;
  if (!tp_) {
    wgrads();  // before the norm backward: its dy amax overwrites the slot's (the GEMMs read the slot's inverse scale)
    rmsnorm_backward(x, ctx_.W(norm), rstd, scratch_.dh, scratch_.dres, ctx_.G(norm), d.Tl, d.H, true, st, next_dy,
                     more ? lin_.produce_grad_amax(0) : nullptr);
    ctx_.mark("rmsnorm bwd");
    return;
  }
  fork(st, comm_, fork_);
  ctx_.timer.start(comm_);
  tp_->set_stream(comm_);
  tp_->reduce_scatter_sum(scratch_.dh, dh_local_, static_cast<std::size_t>(d.Tl * d.H));
  ctx_.timer.mark(comm_, "reduce-scatter (sequence parallel, comm stream)");
  rmsnorm_backward(x, ctx_.W(norm), rstd, dh_local_, scratch_.dres, ctx_.G(norm), d.Tl, d.H, true, comm_, next_dy,
                   more ? lin_.produce_grad_amax(0) : nullptr);
  ctx_.timer.mark(comm_, "rmsnorm bwd (comm stream)");
  if (more) {
    tp_->all_gather_bf16(scratch_.dy, gathered_[cur_ ^ 1], static_cast<std::size_t>(d.Tl * d.H));
    ctx_.timer.mark(comm_, "all-gather (sequence parallel, comm stream)");
  }
  tp_->set_stream(st);
  join_.record(comm_);
  ctx_.gemm.set_sm_count_target(gemm_sms_);
  wgrads();
  ctx_.gemm.set_sm_count_target(0);
  join_.wait_on(st);
  ctx_.mark("wait for the comm stream");
  cur_ ^= 1;
}

void SequenceParallel::embed_backward(const std::int32_t* tokens, const MicroDims& d) {
  const std::size_t embed = ctx_.table.embed;
  if (!tp_) {
    embedding_backward(tokens, scratch_.dres, ctx_.G(embed), d.T, d.H, ctx_.stream);
  } else {  // every token's gradient on every rank; each adds the rows of its vocabulary slice
    tp_->all_gather(scratch_.dres, dres_full_, static_cast<std::size_t>(d.Tl * d.H));
    embedding_backward(tokens, dres_full_, ctx_.G(embed), d.T, d.H, ctx_.stream, d.v0, d.V);
  }
  ctx_.mark("embedding bwd");
}

}  // namespace qwen3::cuda
