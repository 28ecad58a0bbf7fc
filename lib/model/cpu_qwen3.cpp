// Qwen3 forward and backward on the CPU reference ops (see cpu_qwen3.h), with Megatron-style tensor and sequence
// parallelism over a communicator. One code path: with one rank every collective is the identity.
#include "model/cpu_qwen3.h"

#include <algorithm>

#include "core/error.h"
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

}  // namespace

CpuQwen3::CpuQwen3(const ModelConfig& cfg, Communicator* tp_comm)
    : cfg_(cfg),
      tp_comm_(tp_comm && tp_comm->size() > 1 ? tp_comm : nullptr),
      tp_(tp_dims(cfg, tp_comm_ ? tp_comm_->rank() : 0, tp_comm_ ? tp_comm_->size() : 1)),
      table_(cfg, tp_.q_dim, tp_.kv_dim, tp_.inter, tp_.vocab) {
  cfg_.validate();
}

cpu::LossSum CpuQwen3::forward_backward(const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                                        std::vector<float>* logits_out) {
  const auto& c = cfg_;
  const std::int64_t B = mb.batch, S = mb.seq, T = B * S, H = c.hidden_size;
  const std::int64_t nh = tp_.heads, nkv = tp_.kv_heads, hd = c.head_dim, qd = tp_.q_dim, kvd = tp_.kv_dim;
  const std::int64_t I = tp_.inter, V = tp_.vocab, v0 = tp_.vocab0;
  // Sequence parallelism: this rank holds rows [rank·Tl, (rank + 1)·Tl) of the residual stream. When tp does not
  // divide T, the token rows are padded to Tp = Tl·tp with zero rows that carry no label: every per-row op maps zeros
  // to zeros, attention and RoPE only see the B·S real rows, so the padding changes nothing.
  const std::int64_t Tl = (T + tp_.size - 1) / tp_.size, Tp = Tl * tp_.size;
  const SeqParallel sp{tp_comm_, Tp, Tl};
  std::vector<std::int32_t> labels(mb.labels, mb.labels + T);
  labels.resize(static_cast<std::size_t>(Tp), cpu::kIgnoreLabel);
  auto W = [&](std::size_t idx) { return weights + table_.entries()[idx].offset; };
  auto G = [&](std::size_t idx) { return grads + table_.entries()[idx].offset; };
  const cpu::RopeTable rope = cpu::rope_table(S, hd, c.rope_theta);
  const cpu::AttentionShape ashape{B, S, nh, nkv, hd};

  // ---- forward ----
  // Vocabulary-parallel embedding: each rank fills the rows of tokens in its vocabulary slice, the sum is scattered.
  Vec emb = zeros(Tp * H);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t local = static_cast<std::int64_t>(mb.tokens[t]) - v0;
    if (local >= 0 && local < V) std::copy(W(table_.embed) + local * H, W(table_.embed) + (local + 1) * H, emb.begin() + t * H);
  }
  Vec x = sp.scatter(emb, H);  // [Tl, H] residual stream
  std::vector<LayerActs> acts(static_cast<std::size_t>(c.num_layers));
  // RMSNorm of this rank's rows of the residual stream, gathered over the sequence for a column-parallel block.
  auto norm_gathered = [&](const Vec& x_local, std::size_t weight, Vec& rstd) {
    rstd = zeros(Tl);
    Vec h = zeros(Tl * H);
    cpu::rmsnorm_forward(x_local.data(), W(weight), h.data(), rstd.data(), Tl, H, c.rms_norm_eps);
    return sp.gather(h, H);
  };
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const auto& p = table_.layers[l];
    LayerActs& a = acts[l];
    a.x_in = x;
    a.h_attn = norm_gathered(x, p.input_norm, a.rstd_in);
    a.q_raw = zeros(Tp * qd);
    a.k_raw = zeros(Tp * kvd);
    a.v = zeros(Tp * kvd);
    cpu::linear_forward(a.h_attn.data(), W(p.q_proj), a.q_raw.data(), Tp, H, qd);
    cpu::linear_forward(a.h_attn.data(), W(p.k_proj), a.k_raw.data(), Tp, H, kvd);
    cpu::linear_forward(a.h_attn.data(), W(p.v_proj), a.v.data(), Tp, H, kvd);
    a.q = zeros(Tp * qd);
    a.k = zeros(Tp * kvd);
    a.rstd_q = zeros(Tp * nh);
    a.rstd_k = zeros(Tp * nkv);
    cpu::rmsnorm_forward(a.q_raw.data(), W(p.q_norm), a.q.data(), a.rstd_q.data(), Tp * nh, hd, c.rms_norm_eps);
    cpu::rmsnorm_forward(a.k_raw.data(), W(p.k_norm), a.k.data(), a.rstd_k.data(), Tp * nkv, hd, c.rms_norm_eps);
    cpu::rope_forward(a.q.data(), rope, B, S, nh, hd);
    cpu::rope_forward(a.k.data(), rope, B, S, nkv, hd);
    a.attn = zeros(Tp * qd);
    a.lse = zeros(B * nh * S);
    cpu::attention_forward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), ashape);
    Vec o = zeros(Tp * H);  // row-parallel: this rank's partial sum
    cpu::linear_forward(a.attn.data(), W(p.o_proj), o.data(), Tp, qd, H);
    const Vec o_local = sp.scatter(o, H);
    for (std::int64_t i = 0; i < Tl * H; ++i) x[i] += o_local[i];
    a.x_mid = x;
    a.h_mlp = norm_gathered(x, p.post_norm, a.rstd_mid);
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
  Vec rstd_f = zeros(Tl), hf_local = zeros(Tl * H);
  cpu::rmsnorm_forward(x.data(), W(table_.final_norm), hf_local.data(), rstd_f.data(), Tl, H, c.rms_norm_eps);
  const Vec hf = sp.gather(hf_local, H);
  Vec logits = zeros(Tp * V);  // [T, V_local]: this rank's vocabulary slice
  cpu::linear_forward(hf.data(), W(table_.lm_head), logits.data(), Tp, H, V);
  if (logits_out) logits_out->assign(logits.begin(), logits.begin() + T * V);

  // ---- loss (vocabulary-parallel), and backward in reverse ----
  const cpu::RowReduce none = [](double*, std::size_t) {};
  const cpu::RowReduce rmax = [&](double* v, std::size_t n) { tp_comm_->all_reduce_max(v, n); };
  const cpu::RowReduce rsum = [&](double* v, std::size_t n) { tp_comm_->all_reduce_sum(v, n); };
  cpu::LossSum loss = cpu::cross_entropy_vocab_parallel(logits.data(), labels.data(), logits.data(), Tp, V, v0, grad_scale,
                                                        tp_comm_ ? rmax : none, tp_comm_ ? rsum : none);
  Vec& dlogits = logits;  // overwritten in place
  Vec dhf = zeros(Tp * H);
  cpu::linear_backward(hf.data(), W(table_.lm_head), dlogits.data(), dhf.data(), G(table_.lm_head), Tp, H, V);
  const Vec dhf_local = sp.scatter(dhf, H);
  Vec dx = zeros(Tl * H);  // gradient of the residual stream (sequence shard)
  cpu::rmsnorm_backward(x.data(), W(table_.final_norm), rstd_f.data(), dhf_local.data(), dx.data(), G(table_.final_norm),
                        Tl, H);

  Vec tmp = zeros(Tl * H);
  for (std::int64_t l = c.num_layers - 1; l >= 0; --l) {
    const auto& p = table_.layers[l];
    LayerActs& a = acts[l];
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
    cpu::attention_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), dattn.data(), dq.data(),
                            dk.data(), dv.data(), ashape);
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
  // Vocabulary-parallel embedding backward: every rank sees every token's gradient, keeps its own rows.
  const Vec dx_full = sp.gather(dx, H);
  float* gemb = G(table_.embed);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t local = static_cast<std::int64_t>(mb.tokens[t]) - v0;
    if (local < 0 || local >= V) continue;
    for (std::int64_t i = 0; i < H; ++i) gemb[local * H + i] = static_cast<float>(gemb[local * H + i] + dx_full[t * H + i]);
  }
  return loss;
}

}  // namespace qwen3
