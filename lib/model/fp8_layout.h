// What --precision fp8 adds to a rank (ops/fp8.h): per layer of its stage, the four linear weights' E4M3 copies —
// row-major for the forward, transposed for the data gradient — cast once after each optimizer step; the scratch the
// activations' and gradients' casts write each GEMM's operands to; and the amaxes and dequantisation factors. Every
// FP8 operand's contraction dimension is padded with zeros to kFp8Align elements (cuBLASLt's FP8 GEMMs want 16-byte
// rows). The buffer table (train/buffer_table.h), and through it the planner, and the engine (train/cuda_engine/
// linears.h) read these sizes and offsets from here. Pure: no CUDA.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>

#include "model/tensor_parallel.h"
#include "ops/fp8.h"

namespace qwen3 {

// A decoder layer's linear layers, each one GEMM: q|k|v fused, the attention output, gate|up fused, down.
enum class Fp8Linear { qkv, o, gate_up, down };
inline constexpr int kFp8Linears = 4;

struct Fp8Weight {
  std::int64_t out = 0, in = 0;        // W [out, in], this rank's share
  std::int64_t rows = 0, cols = 0;     // byte offsets in the layer's block: W [out, pad(in)], Wᵀ [in, pad(out)]
};

struct Fp8Layout {
  std::array<Fp8Weight, kFp8Linears> weights;
  std::int64_t layer_bytes = 0;  // one layer's block of FP8 weights
  std::int64_t act_bytes = 0;    // one activation operand: x [T, pad(in)] or xᵀ [in, pad(T)], the largest in
  std::int64_t grad_bytes = 0;   // one gradient operand: dy [T, pad(out)] or dyᵀ [out, pad(T)], the largest out
  std::int64_t layers = 0, slots = 0;
  // The fp32 scale table: per weight of each layer, and per input of each layer and micro-batch slot (an input's amax
  // is kept from the forward for its transposed cast in the backward, which then needs no reduction), and the two
  // gradient slots. A group holds the amaxes side by side (one all-reduce reduces them) and then each dequantisation
  // factor (1/s) in its own 16-byte slot: cuBLASLt reads them as its A/B scale pointers, and groups start 16-byte
  // aligned, so every factor does.
  static constexpr std::int64_t kSlot = 4;                                   // floats per 16 bytes
  static constexpr std::int64_t kGroup = kFp8Linears + kSlot * kFp8Linears;  // amax [4], then 1/s [4] at 16-byte steps
  static constexpr std::int64_t kGradGroup = 2 * kSlot;                      // amax, then 1/s 16 bytes on
  static constexpr std::int64_t inv(int linear) { return kFp8Linears + kSlot * linear; }  // 1/s of a group's linear
  // --fp8-scaling delayed: per layer, the histories of the tensors whose producers write them in FP8 — gate|up's output
  // gradient, then down's input — each the previous step's amax (the scale's source) and this step's running amax.
  enum class Produced { gate_up_grad, down_input };
  static constexpr int kProduced = 2;
  static constexpr std::int64_t kHistoryLen = 2;  // a produced tensor's history: its previous amax, its running one
  static constexpr std::int64_t kHistoryGroup = kHistoryLen * kProduced;
  // a produced tensor's history in a layer's group: its previous amax (history_current after it: the running one)
  static constexpr std::int64_t history_of(Produced t) { return kHistoryLen * static_cast<std::int64_t>(t); }
  static constexpr std::int64_t history_current() { return 1; }  // after history_of
  std::int64_t scale_floats() const { return kGroup * layers * (1 + slots) + kGradGroup * 2 + kHistoryGroup * layers; }
  std::int64_t weight_scale(std::int64_t layer) const { return kGroup * layer; }
  std::int64_t input_scale(int slot, std::int64_t layer) const { return kGroup * (layers + slot * layers + layer); }
  std::int64_t grad_scale(int which) const { return kGroup * layers * (1 + slots) + kGradGroup * which; }
  static constexpr std::int64_t grad_inv() { return kSlot; }  // 1/s of a gradient group
  std::int64_t history_scale(std::int64_t layer) const { return grad_scale(2) + kHistoryGroup * layer; }
};

// The layout of a rank holding tp's share of `layers` layers of hidden size `hidden`, with `tokens` rows per
// micro-batch (T) and `slots` micro-batches in flight.
inline Fp8Layout fp8_layout(const TpDims& tp, std::int64_t hidden, std::int64_t tokens, std::int64_t layers, int slots) {
  Fp8Layout f;
  f.layers = layers, f.slots = slots;
  const std::int64_t H = hidden, qkv = tp.q_dim + 2 * tp.kv_dim;
  f.weights = {Fp8Weight{qkv, H}, Fp8Weight{H, tp.q_dim}, Fp8Weight{2 * tp.inter, H}, Fp8Weight{H, tp.inter}};
  std::int64_t at = 0;
  for (Fp8Weight& w : f.weights) {
    w.rows = at, at += w.out * fp8_padded(w.in);
    w.cols = at, at += w.in * fp8_padded(w.out);
  }
  f.layer_bytes = at;
  for (const Fp8Weight& w : f.weights) {
    const std::int64_t as_in = std::max(tokens * fp8_padded(w.in), w.in * fp8_padded(tokens));
    const std::int64_t as_out = std::max(tokens * fp8_padded(w.out), w.out * fp8_padded(tokens));
    f.act_bytes = std::max(f.act_bytes, as_in);
    f.grad_bytes = std::max(f.grad_bytes, as_out);
  }
  return f;
}

}  // namespace qwen3
