// The decoder layers' linear layers in bf16 or FP8 (see linears.h).
#include "train/cuda_engine/linears.h"

#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "gpu/check.h"
#include "ops/cuda/fp8_cast.h"

namespace qwen3::cuda {

Linears::Linears(const EngineContext& ctx, const DeviceBuffers& b, const Fp8Layout& layout, bool fp8, bool per_layer,
                 bool delayed, DeviceGroup* tp, DeviceGroup* cp)
    : ctx_(ctx), fp8_(fp8), layout_(layout), tp_(tp), cp_(cp), per_layer_(fp8 && per_layer), delayed_(fp8 && delayed) {
  if (!fp8_) return;
  for (std::int64_t i = 0; i < (per_layer_ ? 1 : layout.layers); ++i)
    blocks_.push_back(b.get<std::uint8_t>(Buf::fp8_weights, 0, static_cast<int>(i)));
  if (blocks_.empty() || !blocks_.back())
    throw InternalError("Linears: the buffer table holds no FP8 weight block for every layer of this stage");
  scales_ = b.get<float>(Buf::fp8_scales);
  act_ = b.get<std::uint8_t>(Buf::fp8_act);
  grad_ = b.get<std::uint8_t>(Buf::fp8_grad);
  for (int i = 0; i < 2; ++i) grad_t_[i] = b.get<std::uint8_t>(Buf::fp8_grad_t, i);
  if (delayed_)  // the running amaxes start from 0 (the previous ones are read only once a step has ended)
    CUDA_CHECK(cudaMemsetAsync(scales_ + layout_.history_scale(0), 0,
                               sizeof(float) * static_cast<std::size_t>(Fp8Layout::kHistoryGroup * layout_.layers), ctx_.stream));
}

bool Linears::source(std::int64_t l, Fp8Layout::Produced t) const {
  const auto i = static_cast<std::size_t>((l - ctx_.stage.first_layer) * Fp8Layout::kProduced + static_cast<int>(t));
  return delayed_ && i < sources_.size() && sources_[i];
}

const SwigluGradFp8* Linears::produce_grad_fp8(std::int64_t l, int slot, std::int64_t T) {
  if (!source(l, Fp8Layout::Produced::gate_up_grad)) return nullptr;
  grad_fp8_produced_[slot] = true;
  float* h = history(l, Fp8Layout::Produced::gate_up_grad);
  grad_fp8_ = {grad_, fp8_padded(shape(Fp8Linear::gate_up).out), grad_t_[slot], h, h + Fp8Layout::history_current(),
               scales_ + layout_.grad_scale(slot) + Fp8Layout::grad_inv()};
  (void)T;  // the transposed operand's rows are fp8_padded(T) tokens long, as grad()'s cast writes them
  return &grad_fp8_;
}

const SwigluFwdFp8* Linears::produce_input_fp8(std::int64_t l, const LayerActs& a, std::int64_t T) {
  if (!source(l, Fp8Layout::Produced::down_input)) return nullptr;
  input_fp8_produced_ = true;
  float* h = history(l, Fp8Layout::Produced::down_input);
  const int w = static_cast<int>(Fp8Linear::down);
  input_fp8_ = {act_, fp8_padded(shape(Fp8Linear::down).in), h, h + Fp8Layout::history_current(),
                a.fp8 + Fp8Layout::inv(w), a.fp8 + w};
  (void)T;  // act_ holds T rows of the widest input (Fp8Layout::act_bytes)
  return &input_fp8_;
}

void Linears::end_step(const std::vector<Communicator*>& groups) {
  if (!delayed_) return;
  const auto n = static_cast<std::size_t>(Fp8Layout::kHistoryGroup * layout_.layers);
  std::vector<float> h(n);
  float* device = scales_ + layout_.history_scale(0);
  CUDA_CHECK(cudaMemcpyAsync(h.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost, ctx_.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  constexpr auto len = static_cast<std::size_t>(Fp8Layout::kHistoryLen);
  std::vector<double> running(n / len);  // [layer][produced tensor]
  for (std::size_t i = 0; i < running.size(); ++i) running[i] = h[len * i + Fp8Layout::history_current()];
  for (Communicator* g : groups)
    if (g && g->size() > 1) g->all_reduce_max(running.data(), running.size());
  sources_.assign(running.size(), false);
  for (std::size_t i = 0; i < running.size(); ++i) {
    h[len * i] = static_cast<float>(running[i]);
    h[len * i + Fp8Layout::history_current()] = 0.0f;
    sources_[i] = fp8_delayed_source(running[i]);
  }
  CUDA_CHECK(cudaMemcpyAsync(device, h.data(), n * sizeof(float), cudaMemcpyHostToDevice, ctx_.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));  // h is freed on return
}

std::size_t Linears::index(std::int64_t l, Fp8Linear w) const {
  const auto& p = ctx_.table.layers[static_cast<std::size_t>(l)];
  switch (w) {
    case Fp8Linear::qkv: return p.q_proj;  // q, k, v adjacent: one [q_dim + 2·kv_dim, H] matrix
    case Fp8Linear::o: return p.o_proj;
    case Fp8Linear::gate_up: return p.gate_proj;  // gate, up adjacent: one [2·I, H] matrix
    case Fp8Linear::down: return p.down_proj;
  }
  throw InternalError("Linears: unknown linear layer");
}

std::uint8_t* Linears::block(std::int64_t l) const {
  return blocks_[per_layer_ ? 0 : static_cast<std::size_t>(l - ctx_.stage.first_layer)];
}

Gemm::Fp8 Linears::weight_rows(std::int64_t l, Fp8Linear w) const {
  const float* inv = scales_ + layout_.weight_scale(l - ctx_.stage.first_layer) + Fp8Layout::inv(static_cast<int>(w));
  return {block(l) + shape(w).rows, inv, fp8_padded(shape(w).in)};
}

Gemm::Fp8 Linears::weight_cols(std::int64_t l, Fp8Linear w) const {
  const float* inv = scales_ + layout_.weight_scale(l - ctx_.stage.first_layer) + Fp8Layout::inv(static_cast<int>(w));
  return {block(l) + shape(w).cols, inv, fp8_padded(shape(w).out)};
}

void Linears::reduce_amax(float* amax, std::size_t n, bool split_by_tp) const {
  if (split_by_tp && tp_) tp_->all_reduce_max(amax, n);
  if (cp_) cp_->all_reduce_max(amax, n);
}

float* Linears::produce_input_amax(const LayerActs& a, Fp8Linear w) {
  if (!fp8_) return nullptr;
  input_amax_produced_[static_cast<int>(w)] = true;
  return a.fp8 + static_cast<int>(w);
}

float* Linears::produce_grad_amax(int slot) {
  if (!fp8_) return nullptr;
  grad_amax_produced_[slot] = true;
  return scales_ + layout_.grad_scale(slot);
}

void Linears::take_amax(const bf16* x, std::int64_t n, float* amax, bool& produced, bool split_by_tp) {
  if (!produced) fp8_amax(x, n, amax, ctx_.stream);
  reduce_amax(amax, 1, split_by_tp || produced);
  produced = false;
}

void Linears::cast_weights(std::int64_t l, bool rows, bool cols, bool fresh_amax) {
  if (!fp8_) return;
  const cudaStream_t st = ctx_.stream;
  const std::int64_t i = l - ctx_.stage.first_layer;
  float* amax = scales_ + layout_.weight_scale(i);  // each layer's own, in either mode
  if (fresh_amax) {
    for (int w = 0; w < kFp8Linears; ++w) {
      const Fp8Weight& s = layout_.weights[static_cast<std::size_t>(w)];
      fp8_amax(ctx_.W(index(l, static_cast<Fp8Linear>(w))), s.out * s.in, amax + w, st);
    }
    if (tp_) tp_->all_reduce_max(amax, kFp8Linears);  // every weight is split over tp (replicated K/V heads: no max)
  }
  for (int w = 0; w < kFp8Linears; ++w) {
    const Fp8Weight& s = layout_.weights[static_cast<std::size_t>(w)];
    std::uint8_t* b = block(l);
    const Fp8Copies copies{rows ? b + s.rows : nullptr, fp8_padded(s.in), cols ? b + s.cols : nullptr, fp8_padded(s.out)};
    fp8_cast(ctx_.W(index(l, static_cast<Fp8Linear>(w))), s.out, s.in, amax + w, Fp8Format::e4m3, copies,
             amax + Fp8Layout::inv(w), st);
  }
  ctx_.mark("fp8 cast weights");
}

Linears::InputT Linears::produce_input_t(const LayerActs& a, Fp8Linear w, std::int64_t T) {
  if (!fp8_) return {};
  bool& produced = input_t_produced_[static_cast<int>(w)];
  if (produced) throw InternalError("Linears: produce_input_t asked twice before the weight gradient that reads it");
  produced = true;
  return {act_, fp8_padded(T), a.fp8 + static_cast<int>(w), a.fp8 + Fp8Layout::inv(static_cast<int>(w))};
}

void Linears::forward(const bf16* x, std::int64_t l, Fp8Linear w, const LayerActs& a, bf16* y, const bf16* residual,
                      std::int64_t T) {
  const Fp8Weight& s = shape(w);
  if (!fp8_) {
    ctx_.gemm.forward(x, ctx_.W(index(l, w)), y, residual, T, s.in, s.out, ctx_.stream);
    return;
  }
  input_t_produced_[static_cast<int>(w)] = false;  // a copy produced for an earlier backward is no longer this input's
  float* amax = a.fp8 + static_cast<int>(w);
  float* inv = a.fp8 + Fp8Layout::inv(static_cast<int>(w));
  if (w == Fp8Linear::down && std::exchange(input_fp8_produced_, false)) {  // its producer wrote the operand
    reduce_amax(amax, 1, true);  // this rank's part's amax, for the weight gradient's transposed copy
    ctx_.gemm.forward(Gemm::Fp8{act_, inv, fp8_padded(s.in)}, weight_rows(l, w), y, residual, T, s.out, ctx_.stream);
    return;
  }
  // the row-parallel layers' inputs are split over tp
  take_amax(x, T * s.in, amax, input_amax_produced_[static_cast<int>(w)], w == Fp8Linear::o || w == Fp8Linear::down);
  if (delayed_ && w == Fp8Linear::down)  // this step's running amax of the tensor (cast by its own amax now)
    fp8_amax_fold(amax, history(l, Fp8Layout::Produced::down_input) + Fp8Layout::history_current(), ctx_.stream);
  fp8_cast(x, T, s.in, amax, Fp8Format::e4m3, {act_, fp8_padded(s.in), nullptr, 0}, inv, ctx_.stream);
  ctx_.mark("fp8 cast input");
  ctx_.gemm.forward(Gemm::Fp8{act_, inv, fp8_padded(s.in)}, weight_rows(l, w), y, residual, T, s.out, ctx_.stream);
}

Linears::Grad Linears::grad(const bf16* dy, std::int64_t l, Fp8Linear w, int slot, std::int64_t T) {
  if (!fp8_) return {dy, w, slot};
  if (std::exchange(grad_fp8_produced_[slot], false)) {  // its producer wrote both operands (delayed scaling)
    if (w != Fp8Linear::gate_up) throw InternalError("Linears: a produced FP8 gradient is gate|up's only");
    latest_grad_ = slot;
    return {dy, w, slot};
  }
  const std::int64_t out = shape(w).out;
  float* amax = scales_ + layout_.grad_scale(slot);
  // the column-parallel layers' gradients are split over tp
  take_amax(dy, T * out, amax, grad_amax_produced_[slot], w == Fp8Linear::qkv || w == Fp8Linear::gate_up);
  if (delayed_ && w == Fp8Linear::gate_up)  // this step's running amax of the tensor (cast by its own amax now)
    fp8_amax_fold(amax, history(l, Fp8Layout::Produced::gate_up_grad) + Fp8Layout::history_current(), ctx_.stream);
  fp8_cast(dy, T, out, amax, Fp8Format::e5m2, {grad_, fp8_padded(out), grad_t_[slot], fp8_padded(T)}, amax + Fp8Layout::grad_inv(),
           ctx_.stream);
  ctx_.mark("fp8 cast gradient");
  latest_grad_ = slot;
  return {dy, w, slot};
}

Gemm::Fp8 Linears::grad_rows(const Grad& g) const {
  if (g.slot != latest_grad_)
    throw InternalError("Linears: the row-major FP8 copy of gradient slot " + std::to_string(g.slot) +
                        " was overwritten by a later grad(); call backward_data before casting the next gradient");
  return {grad_, scales_ + layout_.grad_scale(g.slot) + Fp8Layout::grad_inv(), fp8_padded(shape(g.w).out)};
}

void Linears::backward_data(const Grad& g, std::int64_t l, float* dx, std::int64_t T, bool accumulate) {
  const Fp8Weight& s = shape(g.w);
  if (fp8_)
    ctx_.gemm.backward_data(grad_rows(g), weight_cols(l, g.w), dx, T, s.in, accumulate, ctx_.stream);
  else
    ctx_.gemm.backward_data(g.dy, ctx_.W(index(l, g.w)), dx, T, s.in, s.out, accumulate, ctx_.stream);
}

void Linears::backward_data(const Grad& g, std::int64_t l, bf16* dx, std::int64_t T) {
  const Fp8Weight& s = shape(g.w);
  if (fp8_)
    ctx_.gemm.backward_data(grad_rows(g), weight_cols(l, g.w), dx, T, s.in, ctx_.stream);
  else
    ctx_.gemm.backward_data(g.dy, ctx_.W(index(l, g.w)), dx, T, s.in, s.out, ctx_.stream);
}

void Linears::backward_weight(const Grad& g, const bf16* x, std::int64_t l, const LayerActs& a, std::int64_t T,
                              bool accumulate) {
  const Fp8Weight& s = shape(g.w);
  float* dw = ctx_.G(index(l, g.w));
  if (!fp8_) {
    ctx_.gemm.backward_weight(g.dy, x, dw, T, s.in, s.out, accumulate, ctx_.stream);
    return;
  }
  const float* amax = a.fp8 + static_cast<int>(g.w);  // the forward's: the same tensor, no reduction again
  float* inv = a.fp8 + Fp8Layout::inv(static_cast<int>(g.w));
  bool& produced = input_t_produced_[static_cast<int>(g.w)];
  if (!produced) {
    fp8_cast(x, T, s.in, amax, Fp8Format::e4m3, {nullptr, 0, act_, fp8_padded(T)}, inv, ctx_.stream);
    ctx_.mark("fp8 cast input (transposed)");
  }
  produced = false;
  const Gemm::Fp8 dyt{grad_t_[g.slot], scales_ + layout_.grad_scale(g.slot) + Fp8Layout::grad_inv(), fp8_padded(T)};
  ctx_.gemm.backward_weight(dyt, Gemm::Fp8{act_, inv, fp8_padded(T)}, dw, s.in, s.out, accumulate, ctx_.stream);
}

}  // namespace qwen3::cuda
