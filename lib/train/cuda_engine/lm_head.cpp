// The last stage's head (see lm_head.h).
#include "train/cuda_engine/lm_head.h"

#include <algorithm>

#include "gpu/check.h"
#include "model/context_parallel.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/optimizer.h"
#include "ops/cuda/rmsnorm.h"

namespace qwen3::cuda {

LmHead::LmHead(const EngineContext& ctx, SequenceParallel& sp, const DeviceBuffers& b, const Scratch& scratch,
               Communicator* tp_host, Communicator* cp_host, double* partials, double* scalar, std::int64_t logit_chunk)
    : ctx_(ctx), sp_(sp), s_(scratch), tp_host_(tp_host), cp_host_(cp_host), partial_(partials), scalar_(scalar),
      chunk_(logit_chunk), x_final_(b.get<bf16>(Buf::x_final)), h_final_(b.get<bf16>(Buf::h_final)),
      logits_(b.get<bf16>(Buf::logits)), rstd_final_(b.get<float>(Buf::rstd_final)), row_loss_(b.get<float>(Buf::row_loss)),
      ce_m_(b.get<float>(Buf::ce_max)), ce_mg_(b.get<float>(Buf::ce_max_global)), ce_z_(b.get<float>(Buf::ce_sum_exp)),
      ce_t_(b.get<float>(Buf::ce_target)) {}

void LmHead::copy_logits(std::int64_t t0, std::int64_t tc, std::vector<float>& out, const MicroDims& d) const {
  // [T, full vocabulary]: every tensor-parallel rank's vocabulary slice side by side.
  const std::int64_t V = d.V, Vf = V * ctx_.tp.size;
  if (t0 == 0) out.assign(static_cast<std::size_t>(d.T * Vf), 0.0f);
  std::vector<bf16> chunk(static_cast<std::size_t>(tc * V));
  CUDA_CHECK(cudaMemcpyAsync(chunk.data(), logits_, chunk.size() * sizeof(bf16), cudaMemcpyDeviceToHost, ctx_.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  std::vector<double> mine(chunk.size()), all(chunk.size() * static_cast<std::size_t>(ctx_.tp.size));
  for (std::size_t i = 0; i < chunk.size(); ++i) mine[i] = __bfloat162float(chunk[i]);
  if (tp_host_) tp_host_->all_gather(mine.data(), all.data(), mine.size());
  else all = mine;
  for (int r = 0; r < ctx_.tp.size; ++r)
    for (std::int64_t row = 0; row < tc; ++row)
      for (std::int64_t j = 0; j < V; ++j)
        out[static_cast<std::size_t>((t0 + row) * Vf + r * V + j)] = static_cast<float>(all[static_cast<std::size_t>((r * tc + row) * V + j)]);
}

void LmHead::chunk_loss(const std::int32_t* labels, std::int64_t t0, std::int64_t tc, double grad_scale, const MicroDims& d) {
  const cudaStream_t st = ctx_.stream;
  const float scale = static_cast<float>(grad_scale);
  DeviceGroup* tp = sp_.group();
  if (!tp) {
    cross_entropy_forward_backward(logits_, labels + t0, row_loss_ + t0, tc, d.V, scale, st);
  } else {  // vocabulary-parallel: row max, then sum of exponentials and the target logit, over the group
    cross_entropy_vp_stats(logits_, labels + t0, ce_m_, ce_z_, ce_t_, tc, d.V, d.v0, st);
    CUDA_CHECK(cudaMemcpyAsync(ce_mg_, ce_m_, tc * sizeof(float), cudaMemcpyDeviceToDevice, st));
    tp->all_reduce_max(ce_mg_, static_cast<std::size_t>(tc));
    cross_entropy_vp_rescale(ce_m_, ce_mg_, ce_z_, tc, st);
    tp->all_reduce_sum(ce_z_, static_cast<std::size_t>(tc));
    tp->all_reduce_sum(ce_t_, static_cast<std::size_t>(tc));
    cross_entropy_vp_backward(logits_, labels + t0, ce_mg_, ce_z_, ce_t_, row_loss_ + t0, tc, d.V, d.v0, scale, st);
  }
  ctx_.mark("cross-entropy");
}

cpu::LossSum LmHead::head_forward_backward(const std::int32_t* labels, std::int64_t counted, double grad_scale,
                                           bool accumulate, std::vector<float>* logits_out, const MicroDims& d) {
  const cudaStream_t st = ctx_.stream;
  const std::size_t lm_head = ctx_.table.lm_head, final_norm = ctx_.table.final_norm;
  sp_.norm_gathered(x_final_, final_norm, h_final_, rstd_final_, d);
  for (std::int64_t t0 = 0; t0 < d.T; t0 += chunk_) {  // the norm-output gradient accumulates in scratch.dh
    const std::int64_t tc = std::min(chunk_, d.T - t0);
    ctx_.gemm.forward(h_final_ + t0 * d.H, ctx_.W(lm_head), logits_, nullptr, tc, d.H, d.V, st);
    ctx_.mark("gemm lm_head fwd");
    if (logits_out) copy_logits(t0, tc, *logits_out, d);
    chunk_loss(labels, t0, tc, grad_scale, d);
    ctx_.gemm.backward_data(logits_, ctx_.W(lm_head), s_.dh + t0 * d.H, tc, d.H, d.V, false, st);
    ctx_.mark("gemm lm_head bwd data");
    ctx_.gemm.backward_weight(logits_, h_final_ + t0 * d.H, ctx_.G(lm_head), tc, d.H, d.V, accumulate || t0 > 0, st);
    ctx_.mark("gemm lm_head bwd weight");
  }
  sum(row_loss_, d.T, partial_, scalar_, st);
  ctx_.mark("loss sum");
  cpu::LossSum result{read_scalar(scalar_, st), counted};
  if (cp_host_) {  // the whole sequences' loss: every context-parallel rank's tokens
    double pair[2] = {result.sum, static_cast<double>(result.count)};
    cp_host_->all_reduce_sum(pair, 2);
    result = {pair[0], static_cast<std::int64_t>(pair[1])};
    if (logits_out) *logits_out = context_parallel_gather(*cp_host_, *logits_out, d.B, d.S, d.V * ctx_.tp.size);
  }
  rmsnorm_backward(x_final_, ctx_.W(final_norm), rstd_final_, sp_.scatter_dh(d), s_.dres, ctx_.G(final_norm), d.Tl, d.H,
                   false, st, s_.dy);
  ctx_.mark("rmsnorm bwd");
  return result;
}

}  // namespace qwen3::cuda
