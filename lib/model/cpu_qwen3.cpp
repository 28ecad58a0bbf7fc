// Qwen3 forward and backward on the CPU reference ops (see cpu_qwen3.h), with Megatron-style tensor and sequence
// parallelism over a communicator. One code path: with one rank every collective is the identity. The per-block
// functions carry the CUDA engine's names (embed_*, attention_block_*, mlp_block_*, layer_*, head_forward_backward)
// so that the two backends read side by side.
#include "model/cpu_qwen3.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "model/fp8_layout.h"
#include "model/sequence_layout.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/embedding.h"
#include "ops/cpu/fp8_cast.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cpu/rope.h"
#include "ops/cpu/swiglu.h"

namespace qwen3 {

namespace {

using cpu::act_t;
using Vec = std::vector<act_t>;  // activations: float64 (ops/cpu/types.h)
Vec zeros(std::int64_t n) { return Vec(static_cast<std::size_t>(n), 0.0); }

// What one decoder layer keeps from its forward for its backward (T = batch·seq tokens, Tl = T / tp local rows;
// q/k/v/attention/MLP widths are this rank's shares). Names as in the CUDA engine where they mean the same.
struct LayerActs {
  Vec x_in;            // [Tl, H]  residual stream entering the layer (sequence shard)
  Vec rstd_in;         // [Tl]
  Vec h_in;            // [T, H]   input_layernorm(x_in), gathered over the sequence
  Vec q_raw, k_raw;    // [T, q_dim], [T, kv_dim] projections before q/k norm
  Vec rstd_q, rstd_k;  // [T·heads], [T·kv_heads]
  Vec q, k, v;         // [T, heads|kv_heads, head_dim] after norm + RoPE (v untouched)
  Vec k_all, v_all;    // context parallelism: [B, S_full, kv_dim] every cp rank's keys and values, in sequence order
  Vec attn, lse;       // [T, q_dim], [batch, heads, seq]
  Vec x_mid;           // [Tl, H]  x_in + o_proj(attn), sequence shard
  Vec rstd_mid;        // [Tl]
  Vec h_mid;           // [T, H]   post_attention_layernorm(x_mid), gathered
  Vec gate, up, act;   // [T, I]
};

// Sequence-parallel collectives over the tensor-parallel group; identities on one rank.
struct SeqParallel {
  Communicator* comm;
  std::int64_t T, Tl;
  // full[T, n] ← every rank's local[Tl, n]
  Vec gather(const Vec& local, std::int64_t n) const {
    if (!comm) return local;
    Vec full = zeros(T * n);
    comm->all_gather(local.data(), full.data(), static_cast<std::size_t>(Tl * n));
    return full;
  }
  // local[Tl, n] ← this rank's rows of Σ_ranks partial[T, n]
  Vec scatter(const Vec& partial, std::int64_t n) const {
    if (!comm) return partial;
    Vec local = zeros(Tl * n);
    comm->reduce_scatter_sum(partial.data(), local.data(), static_cast<std::size_t>(Tl * n));
    return local;
  }
};

// The reverse of context_parallel_gather: this rank's rows [B, S, n] of the sum over cp ranks of full [B, S_full, n].
Vec cp_scatter(Communicator& cp, const Vec& full, std::int64_t B, std::int64_t S, std::int64_t n) {
  const int size = cp.size();
  const std::int64_t S_full = S * size, block = B * S * n;
  Vec by_owner = zeros(block * size), local = zeros(block);
  for (int r = 0; r < size; ++r)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < S; ++j)
        std::copy_n(full.begin() + (b * S_full + context_parallel_position(r, j, S_full, size)) * n, n,
                    by_owner.begin() + r * block + (b * S + j) * n);
  cp.reduce_scatter_sum(by_owner.data(), local.data(), static_cast<std::size_t>(block));
  return local;
}

// What every block function reads: the model, this rank's parameter table and shares, the weights and gradients,
// and the micro-batch's shape. Built per forward and per backward call from the micro-batch's slot.
struct BlockContext {
  const ModelConfig& c;
  const ParamTable& table;
  const TpDims& tp;
  SeqParallel sp;
  const cpu::RopeTable& rope;            // this rank's positions
  const float* weights;                  // [total] this rank's table
  float* grads;                          // [total] added into
  std::int64_t B, S, T, Tl, Tp;          // T = B·S this rank's tokens, Tl its sequence rows, Tp = Tl·tp padded rows
  Communicator* cp = nullptr;            // context parallelism: S is this rank's part of S_full = S · cp tokens
  const std::int64_t* positions = nullptr;  // [S] their positions in the sequence
  OpTally* tally = nullptr;                 // counts what runs (CpuQwen3::set_tally), when set
  bool fp8 = false;                         // the linear layers' GEMMs read FP8 round trips (ops/fp8.h)
  CpuQwen3::Fp8History* history = nullptr;  // --fp8-scaling delayed: gate|up's gradient scales (null: current)
  std::int64_t first_layer = 0;             // the stage's first layer (the history's index 0)
  const float* W(std::size_t index) const { return weights + table.entries()[index].offset; }
  float* G(std::size_t index) const { return grads + table.entries()[index].offset; }
  const LayerParamIndex& layer(std::int64_t l) const { return table.layers[static_cast<std::size_t>(l)]; }
};

// ---- the shared pieces of both blocks: norm and gather, linear layers, row-parallel output with the residual ----

// RMSNorm of this rank's rows of the residual stream (statistics into rstd [Tl]), gathered over the sequence for a
// column-parallel block: [Tp, H].
Vec norm_gathered(const BlockContext& ctx, std::size_t weight, const Vec& x_local, Vec& rstd) {
  const std::int64_t Tl = ctx.Tl, H = ctx.c.hidden_size;
  rstd = zeros(Tl);
  Vec h = zeros(Tl * H);
  cpu::rmsnorm_forward(x_local.data(), ctx.W(weight), h.data(), rstd.data(), Tl, H, ctx.c.rms_norm_eps);
  return ctx.sp.gather(h, H);
}
// Its backward: the gradient of x_local [Tl, H] from dh [Tp, H] (this rank's partial sums, reduce-scattered to its
// rows); the norm weight's gradient accumulates.
Vec norm_gathered_backward(const BlockContext& ctx, std::size_t weight, const Vec& x_local, const Vec& rstd,
                           const Vec& dh) {
  const std::int64_t Tl = ctx.Tl, H = ctx.c.hidden_size;
  const Vec dh_local = ctx.sp.scatter(dh, H);
  Vec dx = zeros(Tl * H);
  cpu::rmsnorm_backward(x_local.data(), ctx.W(weight), rstd.data(), dh_local.data(), dx.data(), ctx.G(weight), Tl, H);
  return dx;
}

// The residual connection: x [Tl, H] += y [Tl, H].
void add_residual(Vec& x, const Vec& y) {
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
}

// ---- the linear layers' operands as their GEMMs read them: as they are, or (--precision fp8) their FP8 round trips,
// each fused GEMM operand (q|k|v, gate|up) with one scale from its amax over every rank that holds a part of it
// (tensor and context parallelism), as the CUDA engine casts them (train/cuda_engine/linears.h) ----

// The scale of the tensor made of `parts` (of n[i] elements each), its amax max-reduced over the tp and cp groups.
template <typename T>
float fp8_scale_of(const BlockContext& ctx, const std::vector<std::pair<const T*, std::int64_t>>& parts, Fp8Format f) {
  double amax = 0.0;
  for (const auto& [p, n] : parts) amax = std::max(amax, cpu::fp8_amax(p, n));
  for (Communicator* g : {ctx.sp.comm, ctx.cp})
    if (g) g->all_reduce_max(&amax, 1);
  return fp8_scale(static_cast<float>(amax), f);
}

// The input x of a linear layer (E4M3).
Vec gemm_input(const BlockContext& ctx, const Vec& x) {
  if (!ctx.fp8) return x;
  Vec q = x;
  const auto n = static_cast<std::int64_t>(q.size());
  cpu::fp8_round_trip(q.data(), n, fp8_scale_of<act_t>(ctx, {{x.data(), n}}, Fp8Format::e4m3), Fp8Format::e4m3);
  return q;
}
// The output gradients of one fused GEMM, in place (E5M2, one scale).
void gemm_gradients(const BlockContext& ctx, const std::vector<Vec*>& parts) {
  if (!ctx.fp8) return;
  std::vector<std::pair<const act_t*, std::int64_t>> spans;
  for (Vec* v : parts) spans.emplace_back(v->data(), static_cast<std::int64_t>(v->size()));
  const float s = fp8_scale_of(ctx, spans, Fp8Format::e5m2);
  for (Vec* v : parts) cpu::fp8_round_trip(v->data(), static_cast<std::int64_t>(v->size()), s, Fp8Format::e5m2);
}
// Delayed scaling (ctx.history): layer l's produced tensor t (`parts`) joins the step's running amax with this rank's
// amax of it, and its scale is the history's when the history has a source for it; none otherwise (no delayed
// scaling, or no source: it is cast by its own amax, as current scaling does).
std::optional<float> delayed_scale(const BlockContext& ctx, std::int64_t l, Fp8Layout::Produced t,
                                   const std::vector<const Vec*>& parts, Fp8Format f) {
  CpuQwen3::Fp8History* h = ctx.fp8 ? ctx.history : nullptr;
  if (!h) return std::nullopt;
  const auto i = static_cast<std::size_t>((l - ctx.first_layer) * Fp8Layout::kProduced + static_cast<int>(t));
  for (const Vec* v : parts)
    h->current[i] = std::max(h->current[i], cpu::fp8_amax(v->data(), static_cast<std::int64_t>(v->size())));
  if (h->previous.empty() || !fp8_delayed_source(h->previous[i])) return std::nullopt;
  return fp8_delayed_scale(static_cast<float>(h->previous[i]), f);
}
// Gate|up's output gradients of layer l, in place (E5M2, one scale): delayed_scale's, else as gemm_gradients.
void gate_up_gradients(const BlockContext& ctx, std::int64_t l, Vec& dgate, Vec& dup) {
  const auto s = delayed_scale(ctx, l, Fp8Layout::Produced::gate_up_grad, {&dgate, &dup}, Fp8Format::e5m2);
  if (!s) return gemm_gradients(ctx, {&dgate, &dup});
  for (Vec* v : {&dgate, &dup}) cpu::fp8_round_trip(v->data(), static_cast<std::int64_t>(v->size()), *s, Fp8Format::e5m2);
}
// Down's input (the SwiGLU product) of layer l as its forward GEMM reads it (E4M3): delayed_scale's, else as
// gemm_input. (Its weight gradient reads gemm_input's: the CUDA engine casts that copy by the micro-batch's amax.)
Vec down_input(const BlockContext& ctx, std::int64_t l, const Vec& act) {
  const auto s = delayed_scale(ctx, l, Fp8Layout::Produced::down_input, {&act}, Fp8Format::e4m3);
  if (!s) return gemm_input(ctx, act);
  Vec q = act;
  cpu::fp8_round_trip(q.data(), static_cast<std::int64_t>(q.size()), *s, Fp8Format::e4m3);
  return q;
}
// The weights of one fused GEMM (E4M3, one scale), by parameter index.
struct GemmWeights {
  const BlockContext& ctx;
  std::vector<std::size_t> index;
  std::vector<std::vector<float>> cast;  // fp8: each part's round trip
  GemmWeights(const BlockContext& c, std::vector<std::size_t> indices) : ctx(c), index(std::move(indices)) {
    if (!ctx.fp8) return;
    std::vector<std::pair<const float*, std::int64_t>> spans;
    for (std::size_t i : index) spans.emplace_back(ctx.W(i), ctx.table.entries()[i].numel);
    const float s = fp8_scale_of(ctx, spans, Fp8Format::e4m3);
    for (const auto& [p, n] : spans) cast.push_back(cpu::fp8_round_trip(p, n, s, Fp8Format::e4m3));
  }
  const float* operator[](std::size_t part) const { return cast.empty() ? ctx.W(index[part]) : cast[part].data(); }
  std::size_t grad(std::size_t part) const { return index[part]; }
};

// y [Tp, out] = x [Tp, in] · Wᵀ (x, W as the GEMM reads them)
Vec linear(const BlockContext& ctx, const Vec& x, const float* w, std::int64_t in, std::int64_t out) {
  Vec y = zeros(ctx.Tp * out);
  cpu::linear_forward(x.data(), w, y.data(), ctx.Tp, in, out);
  if (ctx.tally) ctx.tally->gemm_fwd += ctx.Tp * in * out;
  return y;
}
// dx [Tp, in] (+)= dy · W; the gradient of parameter `grad` accumulates dyᵀ · x (all as the GEMMs read them).
void linear_backward(const BlockContext& ctx, const Vec& x, const float* w, std::size_t grad, const Vec& dy, Vec& dx,
                     std::int64_t in, std::int64_t out, bool accumulate_dx = false) {
  cpu::linear_backward(x.data(), w, dy.data(), dx.data(), ctx.G(grad), ctx.Tp, in, out, accumulate_dx);
  if (ctx.tally) ctx.tally->gemm_dgrad += ctx.Tp * in * out, ctx.tally->gemm_wgrad += ctx.Tp * in * out;
}

// A block's row-parallel output projection added to the residual stream: x [Tl, H] += this rank's rows of
// Σ_ranks in [Tp, in] · W[weight]ᵀ (each rank holds a partial sum over its share of `in`; `in` as the GEMM reads it).
void row_parallel_residual(const BlockContext& ctx, const Vec& in, std::size_t weight, std::int64_t width, Vec& x) {
  const std::int64_t H = ctx.c.hidden_size;
  add_residual(x, ctx.sp.scatter(linear(ctx, in, GemmWeights(ctx, {weight})[0], width, H), H));
}
// Its backward: the residual's gradient dx [Tl, H] gathered over the sequence, through the projection: d(in) [Tp, in].
Vec row_parallel_residual_backward(const BlockContext& ctx, const Vec& in, std::size_t weight, std::int64_t width,
                                   const Vec& dx) {
  const std::int64_t H = ctx.c.hidden_size;
  Vec din = zeros(ctx.Tp * width), dy = ctx.sp.gather(dx, H);
  gemm_gradients(ctx, {&dy});
  linear_backward(ctx, gemm_input(ctx, in), GemmWeights(ctx, {weight})[0], weight, dy, din, width, H);
  return din;
}

// ---- attention block: x_mid = x_in + o(attn(rope(qnorm(q(h))), rope(knorm(k(h))), v(h))), h = norm(x_in) ----

// a.q, a.k: q_raw and k_raw after their per-head RMSNorm (statistics into rstd_q, rstd_k) and RoPE.
void qk_norm_rope(const BlockContext& ctx, std::int64_t l, LayerActs& a) {
  const std::int64_t Tp = ctx.Tp, nh = ctx.tp.heads, nkv = ctx.tp.kv_heads, hd = ctx.c.head_dim;
  const auto& p = ctx.layer(l);
  a.q = zeros(Tp * ctx.tp.q_dim);
  a.k = zeros(Tp * ctx.tp.kv_dim);
  a.rstd_q = zeros(Tp * nh);
  a.rstd_k = zeros(Tp * nkv);
  cpu::rmsnorm_forward(a.q_raw.data(), ctx.W(p.q_norm), a.q.data(), a.rstd_q.data(), Tp * nh, hd, ctx.c.rms_norm_eps);
  cpu::rmsnorm_forward(a.k_raw.data(), ctx.W(p.k_norm), a.k.data(), a.rstd_k.data(), Tp * nkv, hd, ctx.c.rms_norm_eps);
  cpu::rope_forward(a.q.data(), ctx.rope, ctx.B, ctx.S, nh, hd);
  cpu::rope_forward(a.k.data(), ctx.rope, ctx.B, ctx.S, nkv, hd);
}
// Its backward, in place: dq, dk from the gradients of the rotated, normed q and k to those of q_raw and k_raw.
void qk_norm_rope_backward(const BlockContext& ctx, std::int64_t l, const LayerActs& a, Vec& dq, Vec& dk) {
  const std::int64_t Tp = ctx.Tp, nh = ctx.tp.heads, nkv = ctx.tp.kv_heads, hd = ctx.c.head_dim;
  const auto& p = ctx.layer(l);
  cpu::rope_backward(dq.data(), ctx.rope, ctx.B, ctx.S, nh, hd);
  cpu::rope_backward(dk.data(), ctx.rope, ctx.B, ctx.S, nkv, hd);
  cpu::rmsnorm_backward(a.q_raw.data(), ctx.W(p.q_norm), a.rstd_q.data(), dq.data(), dq.data(), ctx.G(p.q_norm), Tp * nh, hd);
  cpu::rmsnorm_backward(a.k_raw.data(), ctx.W(p.k_norm), a.rstd_k.data(), dk.data(), dk.data(), ctx.G(p.k_norm), Tp * nkv, hd);
}

cpu::AttentionShape attention_shape(const BlockContext& ctx) {
  cpu::AttentionShape shape{ctx.B, ctx.S, ctx.tp.heads, ctx.tp.kv_heads, ctx.c.head_dim};
  if (ctx.cp) shape.kv_seq = ctx.S * ctx.cp->size(), shape.q_pos = ctx.positions;
  return shape;
}

// a.attn, a.lse: causal attention of this rank's queries; with context parallelism over every key and value of the
// sequence (this rank's heads), all-gathered into a.k_all, a.v_all, for its queries at their positions.
void causal_attention(const BlockContext& ctx, LayerActs& a) {
  const std::int64_t B = ctx.B, S = ctx.S, kvd = ctx.tp.kv_dim;
  a.attn = zeros(ctx.Tp * ctx.tp.q_dim);
  a.lse = zeros(B * ctx.tp.heads * S);
  if (ctx.cp) {
    a.k_all = context_parallel_gather(*ctx.cp, Vec(a.k.begin(), a.k.begin() + B * S * kvd), B, S, kvd);
    a.v_all = context_parallel_gather(*ctx.cp, Vec(a.v.begin(), a.v.begin() + B * S * kvd), B, S, kvd);
  }
  cpu::attention_forward(a.q.data(), ctx.cp ? a.k_all.data() : a.k.data(), ctx.cp ? a.v_all.data() : a.v.data(),
                         a.attn.data(), a.lse.data(), attention_shape(ctx));
  if (ctx.tally) ctx.tally->attention_fwd += ctx.B;
}
// Its backward into dq, dk, dv (zeroed, [Tp, ·]); with context parallelism the gradients of every key and value of
// the sequence are summed over the cp ranks back to their owners.
void causal_attention_backward(const BlockContext& ctx, const LayerActs& a, const Vec& dattn, Vec& dq, Vec& dk,
                               Vec& dv) {
  if (ctx.tally) ctx.tally->attention_bwd += ctx.B;
  if (!ctx.cp) {
    cpu::attention_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), dattn.data(), dq.data(),
                            dk.data(), dv.data(), attention_shape(ctx));
    return;
  }
  Vec dk_all = zeros(static_cast<std::int64_t>(a.k_all.size())), dv_all = zeros(static_cast<std::int64_t>(a.v_all.size()));
  cpu::attention_backward(a.q.data(), a.k_all.data(), a.v_all.data(), a.attn.data(), a.lse.data(), dattn.data(),
                          dq.data(), dk_all.data(), dv_all.data(), attention_shape(ctx));
  const std::int64_t B = ctx.B, S = ctx.S, kvd = ctx.tp.kv_dim;
  const Vec dk_here = cp_scatter(*ctx.cp, dk_all, B, S, kvd), dv_here = cp_scatter(*ctx.cp, dv_all, B, S, kvd);
  std::copy(dk_here.begin(), dk_here.end(), dk.begin());
  std::copy(dv_here.begin(), dv_here.end(), dv.begin());
}

// x [Tl, H]: x_in in, x_mid out; what the backward needs kept in a.
void attention_block_forward(const BlockContext& ctx, std::int64_t l, LayerActs& a, Vec& x) {
  const std::int64_t H = ctx.c.hidden_size, qd = ctx.tp.q_dim, kvd = ctx.tp.kv_dim;
  const auto& p = ctx.layer(l);
  a.x_in = x;
  a.h_in = norm_gathered(ctx, p.input_norm, x, a.rstd_in);
  const Vec h = gemm_input(ctx, a.h_in);
  const GemmWeights w(ctx, {p.q_proj, p.k_proj, p.v_proj});  // one GEMM's weights (q|k|v) on CUDA
  a.q_raw = linear(ctx, h, w[0], H, qd);
  a.k_raw = linear(ctx, h, w[1], H, kvd);
  a.v = linear(ctx, h, w[2], H, kvd);
  qk_norm_rope(ctx, l, a);
  causal_attention(ctx, a);
  row_parallel_residual(ctx, gemm_input(ctx, a.attn), p.o_proj, qd, x);
}
// dx [Tl, H]: the gradient at x_mid in, at x_in out.
void attention_block_backward(const BlockContext& ctx, std::int64_t l, const LayerActs& a, Vec& dx) {
  const std::int64_t Tp = ctx.Tp, H = ctx.c.hidden_size, qd = ctx.tp.q_dim, kvd = ctx.tp.kv_dim;
  const auto& p = ctx.layer(l);
  const Vec dattn = row_parallel_residual_backward(ctx, a.attn, p.o_proj, qd, dx);
  Vec dq = zeros(Tp * qd), dk = zeros(Tp * kvd), dv = zeros(Tp * kvd), dh = zeros(Tp * H);
  causal_attention_backward(ctx, a, dattn, dq, dk, dv);
  qk_norm_rope_backward(ctx, l, a, dq, dk);
  gemm_gradients(ctx, {&dq, &dk, &dv});
  const Vec h = gemm_input(ctx, a.h_in);
  const GemmWeights w(ctx, {p.q_proj, p.k_proj, p.v_proj});
  linear_backward(ctx, h, w[0], w.grad(0), dq, dh, H, qd);
  linear_backward(ctx, h, w[1], w.grad(1), dk, dh, H, kvd, true);
  linear_backward(ctx, h, w[2], w.grad(2), dv, dh, H, kvd, true);
  add_residual(dx, norm_gathered_backward(ctx, p.input_norm, a.x_in, a.rstd_in, dh));
}

// ---- MLP block: x_out = x_mid + down(swiglu(gate(h), up(h))), h = norm(x_mid) ----

void mlp_block_forward(const BlockContext& ctx, std::int64_t l, LayerActs& a, Vec& x) {
  const std::int64_t H = ctx.c.hidden_size, I = ctx.tp.inter;
  const auto& p = ctx.layer(l);
  a.x_mid = x;
  a.h_mid = norm_gathered(ctx, p.post_norm, x, a.rstd_mid);
  const Vec h = gemm_input(ctx, a.h_mid);
  const GemmWeights w(ctx, {p.gate_proj, p.up_proj});  // one GEMM's weights (gate|up) on CUDA
  a.gate = linear(ctx, h, w[0], H, I);
  a.up = linear(ctx, h, w[1], H, I);
  a.act = zeros(ctx.Tp * I);
  cpu::swiglu_forward(a.gate.data(), a.up.data(), a.act.data(), ctx.Tp * I);
  row_parallel_residual(ctx, down_input(ctx, l, a.act), p.down_proj, I, x);
}
void mlp_block_backward(const BlockContext& ctx, std::int64_t l, const LayerActs& a, Vec& dx) {
  const std::int64_t Tp = ctx.Tp, H = ctx.c.hidden_size, I = ctx.tp.inter;
  const auto& p = ctx.layer(l);
  const Vec dact = row_parallel_residual_backward(ctx, a.act, p.down_proj, I, dx);
  Vec dgate = zeros(Tp * I), dup = zeros(Tp * I), dh = zeros(Tp * H);
  cpu::swiglu_backward(a.gate.data(), a.up.data(), dact.data(), dgate.data(), dup.data(), Tp * I);
  gate_up_gradients(ctx, l, dgate, dup);
  const Vec h = gemm_input(ctx, a.h_mid);
  const GemmWeights w(ctx, {p.gate_proj, p.up_proj});
  linear_backward(ctx, h, w[0], w.grad(0), dgate, dh, H, I);
  linear_backward(ctx, h, w[1], w.grad(1), dup, dh, H, I, true);
  add_residual(dx, norm_gathered_backward(ctx, p.post_norm, a.x_mid, a.rstd_mid, dh));
}

// ---- the decoder layer, and what recomputation drops after its forward and restores before its backward ----

// One decoder layer's forward on this rank's share: x [Tl, H] (the residual stream) in and out, everything the
// backward needs kept in a. Used by the forward and, with full recomputation, again just before the layer's backward.
void layer_forward(const BlockContext& ctx, std::int64_t l, LayerActs& a, Vec& x) {
  attention_block_forward(ctx, l, a, x);
  mlp_block_forward(ctx, l, a, x);
}
void layer_backward(const BlockContext& ctx, std::int64_t l, const LayerActs& a, Vec& dx) {
  mlp_block_backward(ctx, l, a, dx);
  attention_block_backward(ctx, l, a, dx);
}

// After the forward of the index-th layer of the stage: full recomputation keeps the layer's input only; selective
// drops the norm outputs and the normed, rotated q and k (model/memory_policy.h).
void drop_recomputed(const MemoryPolicy& recompute, std::int64_t index, LayerActs& a) {
  if (recompute.full(index)) {
    Vec input = std::move(a.x_in);
    a = LayerActs{};
    a.x_in = std::move(input);
  } else if (recompute.selective(index)) {
    a.h_in = Vec{};
    a.h_mid = Vec{};
    a.q = Vec{};
    a.k = Vec{};
  }
}
// Before its backward: what drop_recomputed dropped, from what it kept, with the same operations (bit-identical).
void recompute_dropped(const BlockContext& ctx, const MemoryPolicy& recompute, std::int64_t l, std::int64_t index,
                       LayerActs& a) {
  const auto& p = ctx.layer(l);
  if (recompute.full(index)) {  // the layer's activations again, from its input, exactly as the forward computed them
    Vec out = a.x_in;
    layer_forward(ctx, l, a, out);
  } else if (recompute.selective(index)) {
    a.h_in = norm_gathered(ctx, p.input_norm, a.x_in, a.rstd_in);
    a.h_mid = norm_gathered(ctx, p.post_norm, a.x_mid, a.rstd_mid);
    qk_norm_rope(ctx, l, a);
  }
}

// ---- the vocabulary-parallel embedding (first stage) and the head: final norm, output projection, loss ----

// x [Tl, H]: each rank fills the rows of the tokens [T] in its vocabulary slice; the sum is scattered.
Vec embed_forward(const BlockContext& ctx, const std::int32_t* tokens) {
  const std::int64_t H = ctx.c.hidden_size, V = ctx.tp.vocab, v0 = ctx.tp.vocab0;
  const float* embed = ctx.W(ctx.table.embed);
  Vec emb = zeros(ctx.Tp * H);
  for (std::int64_t t = 0; t < ctx.T; ++t) {
    const std::int64_t local = static_cast<std::int64_t>(tokens[t]) - v0;
    if (local >= 0 && local < V) std::copy(embed + local * H, embed + (local + 1) * H, emb.begin() + t * H);
  }
  return ctx.sp.scatter(emb, H);
}
// Every rank sees every token's gradient (dx [Tl, H] gathered), keeps its own vocabulary rows.
void embed_backward(const BlockContext& ctx, const std::int32_t* tokens, const Vec& dx) {
  const std::int64_t H = ctx.c.hidden_size, V = ctx.tp.vocab, v0 = ctx.tp.vocab0;
  const Vec dx_full = ctx.sp.gather(dx, H);
  float* gemb = ctx.G(ctx.table.embed);
  for (std::int64_t t = 0; t < ctx.T; ++t) {
    const std::int64_t local = static_cast<std::int64_t>(tokens[t]) - v0;
    if (local < 0 || local >= V) continue;
    for (std::int64_t i = 0; i < H; ++i) gemb[local * H + i] = static_cast<float>(gemb[local * H + i] + dx_full[t * H + i]);
  }
}

// The last stage: final norm of x [Tl, H], output projection to this rank's vocabulary slice, vocabulary-parallel
// cross-entropy against labels [T] (gradients scaled by grad_scale), and the backward of the projection and the
// norm: dx [Tl, H] receives the gradient of x. logits_out, when given, receives the logits [T, V_local].
cpu::LossSum head_forward_backward(const BlockContext& ctx, const Vec& x, std::vector<std::int32_t> labels,
                                   double grad_scale, std::vector<float>* logits_out, Vec& dx) {
  const std::int64_t T = ctx.T, Tp = ctx.Tp, H = ctx.c.hidden_size, V = ctx.tp.vocab;
  const std::size_t final_norm = ctx.table.final_norm, lm_head = ctx.table.lm_head;
  labels.resize(static_cast<std::size_t>(Tp), cpu::kIgnoreLabel);  // padding rows carry no label
  Vec rstd_final;  // [Tl]
  const Vec hf = norm_gathered(ctx, final_norm, x, rstd_final);
  Vec logits = linear(ctx, hf, ctx.W(lm_head), H, V);  // [Tp, V_local]: this rank's vocabulary slice
  if (logits_out) logits_out->assign(logits.begin(), logits.begin() + T * V);

  Communicator* tp = ctx.sp.comm;
  const cpu::RowReduce none = [](double*, std::size_t) {};
  const cpu::RowReduce rmax = [&](double* v, std::size_t n) { tp->all_reduce_max(v, n); };
  const cpu::RowReduce rsum = [&](double* v, std::size_t n) { tp->all_reduce_sum(v, n); };
  const cpu::LossSum loss = cpu::cross_entropy_vocab_parallel(logits.data(), labels.data(), logits.data(), Tp, V,
                                                              ctx.tp.vocab0, grad_scale, tp ? rmax : none, tp ? rsum : none);
  const Vec& dlogits = logits;  // overwritten in place
  Vec dhf = zeros(Tp * H);
  linear_backward(ctx, hf, ctx.W(lm_head), lm_head, dlogits, dhf, H, V);
  dx = norm_gathered_backward(ctx, final_norm, x, rstd_final, dhf);
  return loss;
}

}  // namespace

// One micro-batch in flight on this stage: its shape, tokens and everything its backward needs.
struct CpuQwen3::Slot {
  std::int64_t B = 0, S = 0, T = 0, Tl = 0, Tp = 0;  // S, T: this rank's tokens (context parallelism: S_full / cp)
  std::vector<std::int64_t> positions;                // [S] their positions in the sequence
  cpu::RopeTable rope;                                // at those positions
  std::vector<std::int32_t> tokens;  // first stage: for the embedding's backward
  std::vector<LayerActs> acts;       // this stage's layers
  Vec dx;                            // last stage: gradient at the last layer's output, from the loss
};

CpuQwen3::CpuQwen3(const ModelConfig& cfg, Communicator* tp_comm, const StageRange* stage, const MemoryPolicy& recompute,
                   Communicator* cp_comm, const ParamTable* table)
    : cfg_(cfg),
      tp_comm_(tp_comm && tp_comm->size() > 1 ? tp_comm : nullptr),
      tp_(tp_dims(cfg, tp_comm_ ? tp_comm_->rank() : 0, tp_comm_ ? tp_comm_->size() : 1)),
      table_(table ? *table : ParamTable(cfg, tp_.q_dim, tp_.kv_dim, tp_.inter, tp_.vocab)),
      stage_(stage ? *stage : StageRange{0, cfg.num_layers, true, true}),
      recompute_(recompute),
      cp_comm_(cp_comm && cp_comm->size() > 1 ? cp_comm : nullptr) {
  cfg_.validate();
  if (stage_.first_layer < 0 || stage_.last_layer > cfg_.num_layers || stage_.layers() < 1)
    throw InternalError("pipeline stage outside the model's layers");
}

CpuQwen3::~CpuQwen3() = default;

CpuQwen3::Slot& CpuQwen3::slot(int i) {
  if (i < 0) throw InternalError("negative activation slot");
  while (static_cast<int>(slots_.size()) <= i) slots_.push_back(std::make_unique<Slot>());
  return *slots_[static_cast<std::size_t>(i)];
}

std::int64_t CpuQwen3::boundary_elements(std::int64_t tokens) const {
  tokens /= cp_size();
  return (tokens + tp_.size - 1) / tp_.size * cfg_.hidden_size;
}

cpu::LossSum CpuQwen3::forward_backward(const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                                        std::vector<float>* logits_out) {
  if (!stage_.first || !stage_.last) throw InternalError("forward_backward runs the whole model; a pipeline stage uses forward/backward");
  const cpu::LossSum loss = forward(0, weights, grads, mb, grad_scale, nullptr, nullptr, logits_out);
  backward(0, weights, grads, nullptr, nullptr);
  return loss;
}

cpu::LossSum CpuQwen3::forward(int slot_index, const float* weights, float* grads, const MicroBatch& mb,
                               double grad_scale, const Activations* x_in, Activations* x_out,
                               std::vector<float>* logits_out) {
  Slot& st = slot(slot_index);
  // Context parallelism: this rank's two chunks of every sequence (model/context_parallel.h): tokens, labels and
  // RoPE rows alike.
  const int cp = cp_size(), cp_rank = cp > 1 ? cp_comm_->rank() : 0;
  const std::int64_t B = mb.batch, S_full = mb.seq, S = S_full / cp, T = B * S, H = cfg_.hidden_size;
  check_sequence_layout(B, S_full, 1, cp, false);
  st.positions = context_parallel_positions(cp_rank, cp, S_full);
  st.rope = context_parallel_rope(cp_rank, cp, S_full, cfg_.head_dim, cfg_.rope_theta);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(T)), labels(tokens.size());
  context_parallel_rows(cp_rank, cp, B, S_full, 1, mb.tokens, tokens.data());
  context_parallel_rows(cp_rank, cp, B, S_full, 1, mb.labels, labels.data());
  // Sequence parallelism: this rank holds rows [rank·Tl, (rank + 1)·Tl) of the residual stream. When tp does not
  // divide T, the token rows are padded to Tp = Tl·tp with zero rows that carry no label: every per-row op maps zeros
  // to zeros, attention and RoPE only see the B·S real rows, so the padding changes nothing.
  const std::int64_t Tl = (T + tp_.size - 1) / tp_.size, Tp = Tl * tp_.size;
  st.B = B, st.S = S, st.T = T, st.Tl = Tl, st.Tp = Tp;
  if (history_.delayed) history_.current.resize(static_cast<std::size_t>(stage_.layers() * Fp8Layout::kProduced), 0.0);
  const BlockContext ctx{cfg_, table_, tp_, {tp_comm_, Tp, Tl}, st.rope, weights, grads,
                         B, S, T, Tl, Tp, cp_comm_, st.positions.data(), tally_, fp8_,
                         history_.delayed ? &history_ : nullptr, stage_.first_layer};

  Vec x;  // [Tl, H] residual stream
  if (stage_.first) {
    st.tokens = std::move(tokens);
    x = embed_forward(ctx, st.tokens.data());
  } else {
    if (!x_in || static_cast<std::int64_t>(x_in->size()) != Tl * H) throw InternalError("pipeline stage input of the wrong size");
    x = *x_in;
  }
  st.acts.assign(static_cast<std::size_t>(stage_.layers()), LayerActs{});
  for (std::int64_t l = stage_.first_layer; l < stage_.last_layer; ++l) {
    const std::int64_t index = l - stage_.first_layer;
    LayerActs& a = st.acts[static_cast<std::size_t>(index)];
    layer_forward(ctx, l, a, x);
    drop_recomputed(recompute_, index, a);
  }
  if (!stage_.last) {
    if (!x_out) throw InternalError("pipeline stage output missing");
    *x_out = std::move(x);
    return {0.0, 0};
  }
  return head_forward_backward(ctx, x, std::move(labels), grad_scale, logits_out, st.dx);
}

void CpuQwen3::backward(int slot_index, const float* weights, float* grads, const Activations* dy, Activations* dx_out) {
  Slot& st = slot(slot_index);
  if (history_.delayed) history_.current.resize(static_cast<std::size_t>(stage_.layers() * Fp8Layout::kProduced), 0.0);
  const BlockContext ctx{cfg_, table_, tp_, {tp_comm_, st.Tp, st.Tl}, st.rope, weights, grads,
                         st.B, st.S, st.T, st.Tl, st.Tp, cp_comm_, st.positions.data(), tally_, fp8_,
                         history_.delayed ? &history_ : nullptr, stage_.first_layer};
  Vec dx;  // [Tl, H] gradient of the residual stream (sequence shard)
  if (stage_.last) {
    dx = std::move(st.dx);
  } else {
    if (!dy || static_cast<std::int64_t>(dy->size()) != st.Tl * cfg_.hidden_size)
      throw InternalError("pipeline stage gradient of the wrong size");
    dx = *dy;
  }
  for (std::int64_t l = stage_.last_layer - 1; l >= stage_.first_layer; --l) {
    const std::int64_t index = l - stage_.first_layer;
    LayerActs& a = st.acts[static_cast<std::size_t>(index)];
    recompute_dropped(ctx, recompute_, l, index, a);
    layer_backward(ctx, l, a, dx);
    a = LayerActs{};  // free this layer's activations as soon as they are used
  }
  st.acts.clear();
  if (!stage_.first) {
    if (!dx_out) throw InternalError("pipeline stage input gradient missing");
    *dx_out = std::move(dx);
    return;
  }
  embed_backward(ctx, st.tokens.data(), dx);
}

void CpuQwen3::end_fp8_step(Communicator* dp) {
  if (!history_.delayed || history_.current.empty()) return;  // (a stage that ran no backward: no layers)
  for (Communicator* g : {tp_comm_, cp_comm_, dp})
    if (g && g->size() > 1) g->all_reduce_max(history_.current.data(), history_.current.size());
  history_.previous = history_.current;
  std::fill(history_.current.begin(), history_.current.end(), 0.0);
}

}  // namespace qwen3
