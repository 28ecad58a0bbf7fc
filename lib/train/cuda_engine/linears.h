// The decoder layers' four linear layers (q|k|v, attention output, gate|up, down) at the run's precision: bf16 GEMMs
// on the compute weights, or with --precision fp8 (ops/fp8.h) FP8 GEMMs: the weights' E4M3 copies (row-major and
// transposed, model/fp8_layout.h) cast once after each change of the weights; each input cast to E4M3 before its
// forward GEMM, its amax kept for the transposed cast its weight gradient needs; each gradient cast once to E5M2,
// row-major for the data gradient and transposed for the weight gradient. An amax of a tensor split over ranks is
// reduced over the group that splits it, so a parallel run casts exactly as one rank would: tensor parallelism splits
// every weight, the inputs of the row-parallel layers (o, down) and the gradients of the column-parallel ones (q|k|v,
// gate|up) by columns; context parallelism splits every input and gradient by tokens.
// With delayed scaling (--fp8-scaling delayed) the SwiGLU backward writes gate|up's output gradient in E5M2 itself,
// scaled from the layer's history (the previous step's amax of the same tensor over every rank); the first step, and
// the first after a resume, cast it as current scaling does.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "model/fp8_layout.h"
#include "ops/cuda/elementwise.h"
#include "train/cuda_engine/activations.h"
#include "train/cuda_engine/device_buffers.h"
#include "train/cuda_engine/device_group.h"
#include "train/cuda_engine/engine_context.h"

namespace qwen3::cuda {

class Linears {
 public:
  // layout: this rank's linear layers' shapes (model/fp8_layout.h; in either precision) and, with fp8, its FP8
  // buffers. tp, cp: the groups that split tensors (null: none).
  // per_layer: FP8 weight copies cast per layer into one buffer (model/memory_policy.h fp8_weights_per_layer).
  // delayed: --fp8-scaling delayed (train/engine.h EngineOptions::fp8_delayed).
  Linears(const EngineContext& ctx, const DeviceBuffers& b, const Fp8Layout& layout, bool fp8, bool per_layer,
          bool delayed, DeviceGroup* tp, DeviceGroup* cp);
  bool fp8() const { return fp8_; }

  // FP8: layer l's weight copies from its bf16 compute weights: the row-major ones (the forward) and/or the
  // transposed ones (the data gradient). Kept copies: both, once after the weights change; cast per layer
  // (per_layer()): into the one layer's buffer before each use. fresh_amax: the weights changed since layer l's last
  // cast, so their amaxes are taken again (collective over tp); else the kept ones scale the cast.
  void cast_weights(std::int64_t l, bool rows, bool cols, bool fresh_amax);
  bool per_layer() const { return per_layer_; }

  // Where the kernel producing w's input x, or a gradient of `slot`, writes that tensor's amax as it writes the tensor
  // (this rank's part of it; the next forward(…, w, …) or grad(…, slot, …) then reduces it over the groups and skips
  // its own amax pass); null in bf16. Ask only from the kernel that writes the very tensor the next call reads.
  float* produce_input_amax(const LayerActs& a, Fp8Linear w);
  float* produce_grad_amax(int slot);

  // Delayed scaling, once a step has ended with a source for layer l (ops/fp8.h fp8_delayed_source): where the
  // SwiGLU backward writes layer l's gate|up output gradient as the
  // two E5M2 operands of gradient slot `slot` (ops/cuda/elementwise.h SwigluGradFp8), so that the next
  // grad(…, gate_up, slot, …) casts nothing. Null otherwise: the producer then writes bf16 and its amax, which grad()
  // also folds into the layer's history. Ask right before that kernel.
  const SwigluGradFp8* produce_grad_fp8(std::int64_t l, int slot, std::int64_t T);
  // Delayed scaling, once a step has ended with a source for layer l's down input: where the SwiGLU forward writes
  // that input as down's row-major E4M3 operand (ops/cuda/elementwise.h SwigluFwdFp8) and its amax (this micro-batch's,
  // in a, for the weight gradient's transposed copy), so that the next forward(…, down, …) casts nothing. Null
  // otherwise: the producer then writes bf16 and its amax, which forward() also folds into the layer's history.
  const SwigluFwdFp8* produce_input_fp8(std::int64_t l, const LayerActs& a, std::int64_t T);
  // After a step's last backward (delayed scaling): this step's amaxes of each layer's produced tensors, max-reduced
  // over `groups` (the tensor-, context- and data-parallel ones, on the host), become the next step's sources.
  // Synchronises the stream (two floats a layer). Nothing otherwise.
  void end_step(const std::vector<Communicator*>& groups);

  // Where the kernel that recomputes w's input in the backward writes it transposed in E4M3 for w's weight gradient —
  // the copy backward_weight would cast, scaled by the forward's amax (amax; 1/s into inv) — so that backward_weight
  // casts nothing: [in, ld ≥ T], tokens T … ld − 1 zero. All null in bf16. Ask right before that kernel (the
  // transposed input buffer is the one every cast shares), after w's forward and before its backward_weight.
  struct InputT {
    std::uint8_t* cols = nullptr;
    std::int64_t ld = 0;
    const float* amax = nullptr;
    float* inv = nullptr;
  };
  InputT produce_input_t(const LayerActs& a, Fp8Linear w, std::int64_t T);

  // y[T, out] = x[T, in]·Wᵀ (+ residual) for layer l's linear w; a: the layer's activations (its inputs' amaxes).
  void forward(const bf16* x, std::int64_t l, Fp8Linear w, const LayerActs& a, bf16* y, const bf16* residual,
               std::int64_t T);

  // The output gradient dy [T, out] of a layer's linear w, ready for its backward GEMMs: in FP8 cast once into the
  // row-major operand and the transposed one of `slot` (0: a block's output gradient, 1: the one inside the block;
  // both are alive until the block's weight gradients) — or, after produce_grad_fp8, the operands its producer wrote
  // (dy unread). l: the layer (its delayed-scaling history).
  struct Grad {
    const bf16* dy;
    Fp8Linear w;
    int slot;
  };
  Grad grad(const bf16* dy, std::int64_t l, Fp8Linear w, int slot, std::int64_t T);
  // dx[T, in] = dy·W: fp32 (+= when accumulate), or bf16. FP8: g must be the latest grad() (one row-major operand).
  void backward_data(const Grad& g, std::int64_t l, float* dx, std::int64_t T, bool accumulate);
  void backward_data(const Grad& g, std::int64_t l, bf16* dx, std::int64_t T);
  // dW (fp32) (+)= dyᵀ·x; x the forward's input, cast (FP8) with the amax its forward kept in a — or, after
  // produce_input_t(a, g.w), the copy its producer wrote (x unread).
  void backward_weight(const Grad& g, const bf16* x, std::int64_t l, const LayerActs& a, std::int64_t T,
                       bool accumulate);

 private:
  std::size_t index(std::int64_t l, Fp8Linear w) const;  // the weight's entry in the parameter table
  const Fp8Weight& shape(Fp8Linear w) const { return layout_.weights[static_cast<std::size_t>(w)]; }
  Gemm::Fp8 weight_rows(std::int64_t l, Fp8Linear w) const;
  Gemm::Fp8 weight_cols(std::int64_t l, Fp8Linear w) const;
  Gemm::Fp8 grad_rows(const Grad& g) const;  // g's row-major FP8 operand (it must be the latest grad())
  // max-reduces n amaxes over the groups that split the tensor: tp when split_by_tp, and cp.
  void reduce_amax(float* amax, std::size_t n, bool split_by_tp) const;
  // The amax of a tensor about to be cast: its producer's (produce_*_amax; then split over tp too — under sequence
  // parallelism the producer saw this rank's tokens only) or one amax pass now; then reduced over the groups.
  void take_amax(const bf16* x, std::int64_t n, float* amax, bool& produced, bool split_by_tp);

  const EngineContext& ctx_;
  bool fp8_ = false;
  Fp8Layout layout_;
  DeviceGroup *tp_, *cp_;
  std::uint8_t* block(std::int64_t l) const;  // layer l's FP8 weight block
  bool per_layer_ = false;
  std::vector<std::uint8_t*> blocks_;  // each layer's block of FP8 weights (its own buffer), or the one cast per layer
  float* scales_ = nullptr;          // layout_.scale_floats()
  std::uint8_t *act_ = nullptr, *grad_ = nullptr, *grad_t_[2] = {nullptr, nullptr};
  int latest_grad_ = -1;             // the slot whose row-major operand grad_ holds
  bool input_amax_produced_[kFp8Linears] = {};  // produce_input_amax was asked since w's last forward
  bool grad_amax_produced_[2] = {};             // produce_grad_amax was asked since slot's last grad()
  bool input_t_produced_[kFp8Linears] = {};     // produce_input_t was asked since w's last backward_weight
  bool delayed_ = false;                        // delayed scaling
  // per stage layer and produced tensor (Fp8Layout::Produced): its history scales (empty before a step ends)
  std::vector<bool> sources_;
  bool source(std::int64_t l, Fp8Layout::Produced t) const;
  bool grad_fp8_produced_[2] = {};              // produce_grad_fp8 was asked since slot's last grad()
  bool input_fp8_produced_ = false;             // produce_input_fp8 was asked since down's last forward
  SwigluGradFp8 grad_fp8_;                      // what produce_grad_fp8 last returned
  SwigluFwdFp8 input_fp8_;                      // what produce_input_fp8 last returned
  // layer l's history of a produced tensor: its previous amax, then its running one
  float* history(std::int64_t l, Fp8Layout::Produced t) const {
    return scales_ + layout_.history_scale(l - ctx_.stage.first_layer) + Fp8Layout::history_of(t);
  }
};

}  // namespace qwen3::cuda
