// The sequence-parallel region of tensor parallelism (Megatron's mappings, each collective beside its conjugate): the
// residual stream and its norms hold this rank's Tl = T / tp rows; a column-parallel block's input is all-gathered to
// T rows in the forward — its gradient reduce-scattered back in the backward — and a row-parallel block's partial
// sums reduce-scattered to Tl rows in the forward — its output gradient all-gathered in the backward. The backward's
// collectives run on a comm stream overlapping the weight-gradient GEMMs. The vocabulary-parallel embedding too.
// Without tensor parallelism every operation is the plain one on the main stream.
#pragma once
#include <cstdint>
#include <functional>

#include "train/cuda_engine/activations.h"
#include "train/cuda_engine/device_group.h"
#include "train/cuda_engine/engine_context.h"
#include "train/cuda_engine/linears.h"
#include "train/cuda_engine/streams.h"

namespace qwen3::cuda {

class SequenceParallel {
 public:
  // tp: the tensor-parallel group on the device (null: no tensor parallelism). overlapped_gemm_sms: the SM target of
  // the weight-gradient GEMMs that overlap the comm stream (0: all).
  SequenceParallel(const EngineContext& ctx, DeviceGroup* tp, const DeviceBuffers& buffers, const Scratch& scratch,
                   Linears& linears, int overlapped_gemm_sms);
  DeviceGroup* group() const { return tp_; }

  // ---- forward ----
  // full[T, H] ← RMSNorm of this rank's rows x[Tl, H] (weight w, statistics rstd[Tl]), all-gathered; amax
  // (optional, FP8: Linears::produce_input_amax) receives the amax of this rank's rows.
  void norm_gathered(const bf16* x, std::size_t w, bf16* full, float* rstd, const MicroDims& d, float* amax = nullptr);
  // out[Tl, H] = residual + this rank's rows of Σ_ranks in[T, k]·Wᵀ (reduce-scatter) for layer l's linear w (o or
  // down; a: the layer's activations); one GEMM with the residual in its epilogue without tensor parallelism.
  void row_parallel(const bf16* in, std::int64_t l, Fp8Linear w, const LayerActs& a, const bf16* residual, bf16* out,
                    const char* what, const MicroDims& d);
  // x[Tl, H] ← the embedding rows of tokens[T] (vocabulary-parallel: each rank its slice, summed and scattered).
  void embed_forward(const std::int32_t* tokens, bf16* x, const MicroDims& d);

  // ---- backward ----
  // The last block's output gradient: scratch.dy (this rank's rows, bf16) gathered to T rows.
  void gather_first_dy(const MicroDims& d);
  // The current block's output gradient [T, H].
  const bf16* dy() const { return tp_ ? gathered_[cur_] : scratch_.dy; }
  // scratch.dh (T rows of partial sums) reduced to this rank's Tl rows (the norm-output gradient).
  const float* scatter_dh(const MicroDims& d);
  // A block's tail: the norm backward (x, norm weight, statistics) from scratch.dh into scratch.dres and, when `more`
  // blocks follow, its bf16 copy gathered as their dy (in FP8 with its amax, the next grad()'s: slot 0) — on the comm
  // stream while `wgrads` (the block's weight-gradient GEMMs) runs on the main stream.
  void block_tail(const bf16* x, std::size_t norm, const float* rstd, bool more, const std::function<void()>& wgrads,
                  const MicroDims& d);
  // The embedding's gradient from dres (this rank's rows; every token's rows gathered for the vocabulary slice).
  void embed_backward(const std::int32_t* tokens, const MicroDims& d);

 private:
  const EngineContext& ctx_;
  DeviceGroup* tp_;
  Scratch scratch_;
  Linears& lin_;
  int gemm_sms_ = 0;
  bf16 *h_local_ = nullptr, *partial_ = nullptr, *sum_local_ = nullptr;  // [Tl, H], [T, H], [Tl, H]
  bf16* gathered_[2] = {nullptr, nullptr};  // [T, H] ×2: one read by the GEMMs while the next is gathered
  float *dh_local_ = nullptr, *dres_full_ = nullptr;  // [Tl, H], [T, H] (first stage)
  int cur_ = 0;
  Stream comm_;
  Event fork_, join_;
};

}  // namespace qwen3::cuda
