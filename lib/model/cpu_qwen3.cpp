// Qwen3 forward and backward on the CPU reference ops (see cpu_qwen3.h), with Megatron-style tensor and sequence
// parallelism over a communicator. One code path: with one rank every collective is the identity.
#include "model/cpu_qwen3.h"

#include <algorithm>

#include "core/error.h"
#include "model/sequence_layout.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/embedding.h"
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
// q/k/v/attention/MLP widths are this rank's shares).
struct LayerActs {
  Vec x_in;            // [Tl, H]  residual stream entering the layer (sequence shard)
  Vec rstd_in;         // [Tl]
  Vec h_attn;          // [T, H]   input_layernorm(x_in), gathered over the sequence
  Vec q_raw, k_raw;    // [T, q_dim], [T, kv_dim] projections before q/k norm
  Vec rstd_q, rstd_k;  // [T·heads], [T·kv_heads]
  Vec q, k, v;         // [T, heads|kv_heads, head_dim] after norm + RoPE (v untouched)
  Vec attn, lse;       // [T, q_dim], [batch, heads, seq]
  Vec x_mid;           // [Tl, H]  x_in + o_proj(attn), sequence shard
  Vec k_all, v_all;    // context parallelism: [B, S_full, kv_dim] every cp rank's keys and values, in sequence order
  Vec rstd_mid;        // [Tl]
  Vec h_mlp;           // [T, H]   post_attention_layernorm(x_mid), gathered
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

// The reverse: this rank's rows [B, S, n] of the sum over cp ranks of full [B, S_full, n].
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

// One decoder layer's forward on this rank's share: x [Tl, H] (the residual stream) in and out, everything the
// backward needs kept in a. Used by the forward and, with recomputation, again just before the layer's backward.
struct LayerContext {
  const ModelConfig& c;
  const ParamTable& table;
  const TpDims& tp;
  const SeqParallel& sp;
  const cpu::RopeTable& rope;  // this rank's positions
  std::int64_t B, S, Tl, Tp;
  Communicator* cp = nullptr;            // context parallelism: S is this rank's part of S_full = S · cp tokens
  const std::int64_t* positions = nullptr;  // [S] their positions in the sequence
};

// RMSNorm of this rank's rows of the residual stream (statistics into rstd [Tl]), gathered over the sequence for a
// column-parallel block: [Tp, H].
Vec norm_gathered(const LayerContext& ctx, const float* weights, std::size_t weight, const Vec& x_local, Vec& rstd) {
  const std::int64_t Tl = ctx.Tl, H = ctx.c.hidden_size;
  rstd = zeros(Tl);
  Vec h = zeros(Tl * H);
  cpu::rmsnorm_forward(x_local.data(), weights + ctx.table.entries()[weight].offset, h.data(), rstd.data(), Tl, H,
                       ctx.c.rms_norm_eps);
  return ctx.sp.gather(h, H);
}

// a.q, a.k: q_raw and k_raw after their per-head RMSNorm (statistics into rstd_q, rstd_k) and RoPE.
void qk_norm_rope(const LayerContext& ctx, const float* weights, std::int64_t l, LayerActs& a) {
  const auto& c = ctx.c;
  const std::int64_t Tp = ctx.Tp, nh = ctx.tp.heads, nkv = ctx.tp.kv_heads, hd = c.head_dim;
  const auto& p = ctx.table.layers[static_cast<std::size_t>(l)];
  auto W = [&](std::size_t idx) { return weights + ctx.table.entries()[idx].offset; };
  a.q = zeros(Tp * ctx.tp.q_dim);
  a.k = zeros(Tp * ctx.tp.kv_dim);
  a.rstd_q = zeros(Tp * nh);
  a.rstd_k = zeros(Tp * nkv);
  cpu::rmsnorm_forward(a.q_raw.data(), W(p.q_norm), a.q.data(), a.rstd_q.data(), Tp * nh, hd, c.rms_norm_eps);
  cpu::rmsnorm_forward(a.k_raw.data(), W(p.k_norm), a.k.data(), a.rstd_k.data(), Tp * nkv, hd, c.rms_norm_eps);
  cpu::rope_forward(a.q.data(), ctx.rope, ctx.B, ctx.S, nh, hd);
  cpu::rope_forward(a.k.data(), ctx.rope, ctx.B, ctx.S, nkv, hd);
}

void layer_forward(const LayerContext& ctx, const float* weights, std::int64_t l, LayerActs& a, Vec& x) {
  const auto& c = ctx.c;
  const auto& sp = ctx.sp;
  const std::int64_t B = ctx.B, S = ctx.S, Tl = ctx.Tl, Tp = ctx.Tp, H = c.hidden_size;
  const std::int64_t nh = ctx.tp.heads, nkv = ctx.tp.kv_heads, hd = c.head_dim, qd = ctx.tp.q_dim, kvd = ctx.tp.kv_dim;
  const std::int64_t I = ctx.tp.inter;
  cpu::AttentionShape ashape{B, S, nh, nkv, hd};
  if (ctx.cp) ashape.kv_seq = S * ctx.cp->size(), ashape.q_pos = ctx.positions;
  const auto& p = ctx.table.layers[static_cast<std::size_t>(l)];
  auto W = [&](std::size_t idx) { return weights + ctx.table.entries()[idx].offset; };
  a.x_in = x;
  a.h_attn = norm_gathered(ctx, weights, p.input_norm, x, a.rstd_in);
  a.q_raw = zeros(Tp * qd);
  a.k_raw = zeros(Tp * kvd);
  a.v = zeros(Tp * kvd);
  cpu::linear_forward(a.h_attn.data(), W(p.q_proj), a.q_raw.data(), Tp, H, qd);
  cpu::linear_forward(a.h_attn.data(), W(p.k_proj), a.k_raw.data(), Tp, H, kvd);
  cpu::linear_forward(a.h_attn.data(), W(p.v_proj), a.v.data(), Tp, H, kvd);
  qk_norm_rope(ctx, weights, l, a);
  a.attn = zeros(Tp * qd);
  a.lse = zeros(B * nh * S);
  if (ctx.cp) {  // every key and value of the sequence (this rank's heads), for its queries at their positions
    a.k_all = context_parallel_gather(*ctx.cp, Vec(a.k.begin(), a.k.begin() + B * S * kvd), B, S, kvd);
    a.v_all = context_parallel_gather(*ctx.cp, Vec(a.v.begin(), a.v.begin() + B * S * kvd), B, S, kvd);
  }
  cpu::attention_forward(a.q.data(), ctx.cp ? a.k_all.data() : a.k.data(), ctx.cp ? a.v_all.data() : a.v.data(),
                         a.attn.data(), a.lse.data(), ashape);
  Vec o = zeros(Tp * H);  // row-parallel: this rank's partial sum
  cpu::linear_forward(a.attn.data(), W(p.o_proj), o.data(), Tp, qd, H);
  const Vec o_local = sp.scatter(o, H);
  for (std::int64_t i = 0; i < Tl * H; ++i) x[i] += o_local[i];
  a.x_mid = x;
  a.h_mlp = norm_gathered(ctx, weights, p.post_norm, x, a.rstd_mid);
  a.gate = zeros(Tp * I);
  a.up = zeros(Tp * I);
  a.act = zeros(Tp * I);
  cpu::linear_forward(a.h_mlp.data(), W(p.gate_proj), a.gate.data(), Tp, H, I);
  cpu::linear_forward(a.h_mlp.data(), W(p.up_proj), a.up.data(), Tp, H, I);
  cpu::swiglu_forward(a.gate.data(), a.up.data(), a.act.data(), Tp * I);
  Vec m = zeros(Tp * H);
  cpu::linear_forward(a.act.data(), W(p.down_proj), m.data(), Tp, I, H);
  const Vec m_local = sp.scatter(m, H);
  for (std::int64_t i = 0; i < Tl * H; ++i) x[i] += m_local[i];
}

// Selective recomputation: the parts layer_forward computed that a selective layer dropped — both norm outputs
// (gathered over the sequence) and q, k after their norms and RoPE — from what it kept, with the same operations.
void recompute_selective(const LayerContext& ctx, const float* weights, std::int64_t l, LayerActs& a) {
  const auto& p = ctx.table.layers[static_cast<std::size_t>(l)];
  a.h_attn = norm_gathered(ctx, weights, p.input_norm, a.x_in, a.rstd_in);
  a.h_mlp = norm_gathered(ctx, weights, p.post_norm, a.x_mid, a.rstd_mid);
  qk_norm_rope(ctx, weights, l, a);
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

CpuQwen3::CpuQwen3(const ModelConfig& cfg, Communicator* tp_comm, const StageRange* stage, const RecomputePolicy& recompute,
                   Communicator* cp_comm)
    : cfg_(cfg),
      tp_comm_(tp_comm && tp_comm->size() > 1 ? tp_comm : nullptr),
      tp_(tp_dims(cfg, tp_comm_ ? tp_comm_->rank() : 0, tp_comm_ ? tp_comm_->size() : 1)),
      table_(cfg, tp_.q_dim, tp_.kv_dim, tp_.inter, tp_.vocab),
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
  const auto& c = cfg_;
  Slot& st = slot(slot_index);
  // Context parallelism: this rank's two chunks of every sequence (cp_position), tokens and labels alike.
  const int cp = cp_comm_ ? cp_comm_->size() : 1;
  const std::int64_t S_full = mb.seq, S = S_full / cp;
  check_sequence_layout(mb.batch, S_full, 1, cp, false);
  const int cp_rank = cp > 1 ? cp_comm_->rank() : 0;
  st.positions = context_parallel_positions(cp_rank, cp, S_full);
  std::vector<std::int32_t> tokens_here(static_cast<std::size_t>(mb.batch * S)), labels_here(tokens_here.size());
  context_parallel_rows(cp_rank, cp, mb.batch, S_full, 1, mb.tokens, tokens_here.data());
  context_parallel_rows(cp_rank, cp, mb.batch, S_full, 1, mb.labels, labels_here.data());
  const std::int32_t* tokens = tokens_here.data();
  const std::int64_t B = mb.batch, T = B * S, H = c.hidden_size, hd = c.head_dim;
  const std::int64_t V = tp_.vocab, v0 = tp_.vocab0;
  // Sequence parallelism: this rank holds rows [rank·Tl, (rank + 1)·Tl) of the residual stream. When tp does not
  // divide T, the token rows are padded to Tp = Tl·tp with zero rows that carry no label: every per-row op maps zeros
  // to zeros, attention and RoPE only see the B·S real rows, so the padding changes nothing.
  const std::int64_t Tl = (T + tp_.size - 1) / tp_.size, Tp = Tl * tp_.size;
  st.B = B, st.S = S, st.T = T, st.Tl = Tl, st.Tp = Tp;
  const SeqParallel sp{tp_comm_, Tp, Tl};
  auto W = [&](std::size_t idx) { return weights + table_.entries()[idx].offset; };
  auto G = [&](std::size_t idx) { return grads + table_.entries()[idx].offset; };
  st.rope = context_parallel_rope(cp_rank, cp, S_full, hd, c.rope_theta);  // RoPE at this rank's positions
  const cpu::RopeTable& rope = st.rope;

  // ---- forward ----
  Vec x;  // [Tl, H] residual stream
  if (stage_.first) {
    // Vocabulary-parallel embedding: each rank fills the rows of tokens in its vocabulary slice, the sum is scattered.
    st.tokens.assign(tokens, tokens + T);
    Vec emb = zeros(Tp * H);
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t local = static_cast<std::int64_t>(tokens[t]) - v0;
      if (local >= 0 && local < V) std::copy(W(table_.embed) + local * H, W(table_.embed) + (local + 1) * H, emb.begin() + t * H);
    }
    x = sp.scatter(emb, H);
  } else {
    if (!x_in || static_cast<std::int64_t>(x_in->size()) != Tl * H) throw InternalError("pipeline stage input of the wrong size");
    x = *x_in;
  }
  st.acts.assign(static_cast<std::size_t>(stage_.layers()), LayerActs{});
  const LayerContext ctx{c, table_, tp_, sp, rope, B, S, Tl, Tp, cp_comm_, st.positions.data()};
  for (std::int64_t l = stage_.first_layer; l < stage_.last_layer; ++l) {
    LayerActs& a = st.acts[static_cast<std::size_t>(l - stage_.first_layer)];
    layer_forward(ctx, weights, l, a, x);
    const std::int64_t index = l - stage_.first_layer;
    if (recompute_.full(index)) {  // keep the layer's input only; backward() recomputes the rest
      Vec input = std::move(a.x_in);
      a = LayerActs{};
      a.x_in = std::move(input);
    } else if (recompute_.selective(index)) {  // drop the norm outputs and the normed, rotated q and k
      a.h_attn = Vec{};
      a.h_mlp = Vec{};
      a.q = Vec{};
      a.k = Vec{};
    }
  }
  if (!stage_.last) {
    if (!x_out) throw InternalError("pipeline stage output missing");
    *x_out = std::move(x);
    return {0.0, 0};
  }
  std::vector<std::int32_t> labels(labels_here);
  labels.resize(static_cast<std::size_t>(Tp), cpu::kIgnoreLabel);
  Vec rstd_f = zeros(Tl), hf_local = zeros(Tl * H);
  cpu::rmsnorm_forward(x.data(), W(table_.final_norm), hf_local.data(), rstd_f.data(), Tl, H, c.rms_norm_eps);
  const Vec hf = sp.gather(hf_local, H);
  Vec logits = zeros(Tp * V);  // [T, V_local]: this rank's vocabulary slice
  cpu::linear_forward(hf.data(), W(table_.lm_head), logits.data(), Tp, H, V);
  if (logits_out) logits_out->assign(logits.begin(), logits.begin() + T * V);

  // ---- loss (vocabulary-parallel), and the backward of the output projection and the final norm ----
  const cpu::RowReduce none = [](double*, std::size_t) {};
  const cpu::RowReduce rmax = [&](double* v, std::size_t n) { tp_comm_->all_reduce_max(v, n); };
  const cpu::RowReduce rsum = [&](double* v, std::size_t n) { tp_comm_->all_reduce_sum(v, n); };
  cpu::LossSum loss = cpu::cross_entropy_vocab_parallel(logits.data(), labels.data(), logits.data(), Tp, V, v0, grad_scale,
                                                        tp_comm_ ? rmax : none, tp_comm_ ? rsum : none);
  Vec& dlogits = logits;  // overwritten in place
  Vec dhf = zeros(Tp * H);
  cpu::linear_backward(hf.data(), W(table_.lm_head), dlogits.data(), dhf.data(), G(table_.lm_head), Tp, H, V);
  const Vec dhf_local = sp.scatter(dhf, H);
  st.dx = zeros(Tl * H);  // gradient of the residual stream (sequence shard)
  cpu::rmsnorm_backward(x.data(), W(table_.final_norm), rstd_f.data(), dhf_local.data(), st.dx.data(),
                        G(table_.final_norm), Tl, H);
  return loss;
}

void CpuQwen3::backward(int slot_index, const float* weights, float* grads, const Activations* dy, Activations* dx_out) {
  const auto& c = cfg_;
  Slot& st = slot(slot_index);
  const std::int64_t B = st.B, S = st.S, T = st.T, Tl = st.Tl, Tp = st.Tp, H = c.hidden_size;
  const std::int64_t nh = tp_.heads, nkv = tp_.kv_heads, hd = c.head_dim, qd = tp_.q_dim, kvd = tp_.kv_dim;
  const std::int64_t I = tp_.inter, V = tp_.vocab, v0 = tp_.vocab0;
  const SeqParallel sp{tp_comm_, Tp, Tl};
  auto W = [&](std::size_t idx) { return weights + table_.entries()[idx].offset; };
  auto G = [&](std::size_t idx) { return grads + table_.entries()[idx].offset; };
  const cpu::RopeTable& rope = st.rope;
  cpu::AttentionShape ashape{B, S, nh, nkv, hd};
  if (cp_comm_) ashape.kv_seq = S * cp_comm_->size(), ashape.q_pos = st.positions.data();
  Vec dx;  // gradient of the residual stream (sequence shard)
  if (stage_.last) {
    dx = std::move(st.dx);
  } else {
    if (!dy || static_cast<std::int64_t>(dy->size()) != Tl * H) throw InternalError("pipeline stage gradient of the wrong size");
    dx = *dy;
  }

  Vec tmp = zeros(Tl * H);
  const LayerContext ctx{c, table_, tp_, sp, rope, B, S, Tl, Tp, cp_comm_, st.positions.data()};
  for (std::int64_t l = stage_.last_layer - 1; l >= stage_.first_layer; --l) {
    const auto& p = table_.layers[l];
    LayerActs& a = st.acts[static_cast<std::size_t>(l - stage_.first_layer)];
    const std::int64_t index = l - stage_.first_layer;
    if (recompute_.full(index)) {  // the layer's activations again, from its input, exactly as the forward computed them
      Vec out = a.x_in;
      layer_forward(ctx, weights, l, a, out);
    } else if (recompute_.selective(index)) {
      recompute_selective(ctx, weights, l, a);
    }
    // MLP block: x_out = x_mid + down(swiglu(gate(h), up(h))), h = norm(x_mid)
    Vec dact = zeros(Tp * I), dgate = zeros(Tp * I), dup = zeros(Tp * I), dh = zeros(Tp * H);
    const Vec dy_mlp = sp.gather(dx, H);
    cpu::linear_backward(a.act.data(), W(p.down_proj), dy_mlp.data(), dact.data(), G(p.down_proj), Tp, I, H);
    cpu::swiglu_backward(a.gate.data(), a.up.data(), dact.data(), dgate.data(), dup.data(), Tp * I);
    cpu::linear_backward(a.h_mlp.data(), W(p.gate_proj), dgate.data(), dh.data(), G(p.gate_proj), Tp, H, I);
    cpu::linear_backward(a.h_mlp.data(), W(p.up_proj), dup.data(), dh.data(), G(p.up_proj), Tp, H, I, true);
    Vec dh_local = sp.scatter(dh, H);
    cpu::rmsnorm_backward(a.x_mid.data(), W(p.post_norm), a.rstd_mid.data(), dh_local.data(), tmp.data(), G(p.post_norm), Tl, H);
    for (std::int64_t i = 0; i < Tl * H; ++i) dx[i] += tmp[i];
    // Attention block: x_mid = x_in + o(attn(rope(qnorm(q(h))), rope(knorm(k(h))), v(h))), h = norm(x_in)
    Vec dattn = zeros(Tp * qd), dq = zeros(Tp * qd), dk = zeros(Tp * kvd), dv = zeros(Tp * kvd);
    const Vec dy_attn = sp.gather(dx, H);
    cpu::linear_backward(a.attn.data(), W(p.o_proj), dy_attn.data(), dattn.data(), G(p.o_proj), Tp, qd, H);
    if (!cp_comm_) {
      cpu::attention_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), dattn.data(), dq.data(),
                              dk.data(), dv.data(), ashape);
    } else {  // gradients of every key and value of the sequence, summed over the cp ranks back to their owners
      Vec dk_all = zeros(static_cast<std::int64_t>(a.k_all.size())), dv_all = zeros(static_cast<std::int64_t>(a.v_all.size()));
      cpu::attention_backward(a.q.data(), a.k_all.data(), a.v_all.data(), a.attn.data(), a.lse.data(), dattn.data(),
                              dq.data(), dk_all.data(), dv_all.data(), ashape);
      const Vec dk_here = cp_scatter(*cp_comm_, dk_all, B, S, kvd), dv_here = cp_scatter(*cp_comm_, dv_all, B, S, kvd);
      std::copy(dk_here.begin(), dk_here.end(), dk.begin());
      std::copy(dv_here.begin(), dv_here.end(), dv.begin());
    }
    cpu::rope_backward(dq.data(), rope, B, S, nh, hd);
    cpu::rope_backward(dk.data(), rope, B, S, nkv, hd);
    cpu::rmsnorm_backward(a.q_raw.data(), W(p.q_norm), a.rstd_q.data(), dq.data(), dq.data(), G(p.q_norm), Tp * nh, hd);
    cpu::rmsnorm_backward(a.k_raw.data(), W(p.k_norm), a.rstd_k.data(), dk.data(), dk.data(), G(p.k_norm), Tp * nkv, hd);
    cpu::linear_backward(a.h_attn.data(), W(p.q_proj), dq.data(), dh.data(), G(p.q_proj), Tp, H, qd);
    cpu::linear_backward(a.h_attn.data(), W(p.k_proj), dk.data(), dh.data(), G(p.k_proj), Tp, H, kvd, true);
    cpu::linear_backward(a.h_attn.data(), W(p.v_proj), dv.data(), dh.data(), G(p.v_proj), Tp, H, kvd, true);
    dh_local = sp.scatter(dh, H);
    cpu::rmsnorm_backward(a.x_in.data(), W(p.input_norm), a.rstd_in.data(), dh_local.data(), tmp.data(), G(p.input_norm), Tl, H);
    for (std::int64_t i = 0; i < Tl * H; ++i) dx[i] += tmp[i];
    a = LayerActs{};  // free this layer's activations as soon as they are used
  }
  st.acts.clear();
  if (!stage_.first) {
    if (!dx_out) throw InternalError("pipeline stage input gradient missing");
    *dx_out = std::move(dx);
    return;
  }
  // Vocabulary-parallel embedding backward: every rank sees every token's gradient, keeps its own rows.
  const Vec dx_full = sp.gather(dx, H);
  float* gemb = G(table_.embed);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t local = static_cast<std::int64_t>(st.tokens[t]) - v0;
    if (local < 0 || local >= V) continue;
    for (std::int64_t i = 0; i < H; ++i) gemb[local * H + i] = static_cast<float>(gemb[local * H + i] + dx_full[t * H + i]);
  }
}

}  // namespace qwen3
