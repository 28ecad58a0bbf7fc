// Qwen3 forward and backward on the CPU reference ops (see cpu_qwen3.h).
#include "model/cpu_qwen3.h"

#include <algorithm>

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

// What one decoder layer keeps from its forward for its backward (T = batch·seq tokens).
struct LayerActs {
  Vec x_in;          // [T, H]   residual stream entering the layer
  Vec rstd_in;       // [T]
  Vec h_attn;        // [T, H]   input_layernorm(x_in)
  Vec q_raw, k_raw;  // [T, q_dim], [T, kv_dim] projections before q/k norm
  Vec rstd_q, rstd_k;  // [T·heads], [T·kv_heads]
  Vec q, k, v;       // [T, heads|kv_heads, head_dim] after norm + RoPE (v untouched)
  Vec attn, lse;     // [T, q_dim], [batch, heads, seq]
  Vec x_mid;         // [T, H]   x_in + o_proj(attn)
  Vec rstd_mid;      // [T]
  Vec h_mlp;         // [T, H]   post_attention_layernorm(x_mid)
  Vec gate, up, act; // [T, I]
};

}  // namespace

CpuQwen3::CpuQwen3(const ModelConfig& cfg) : cfg_(cfg), table_(cfg) { cfg_.validate(); }

cpu::LossSum CpuQwen3::forward_backward(const float* weights, float* grads, const MicroBatch& mb, double grad_scale,
                                        std::vector<float>* logits_out) {
  const auto& c = cfg_;
  const std::int64_t B = mb.batch, S = mb.seq, T = B * S, H = c.hidden_size, I = c.intermediate_size;
  const std::int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const std::int64_t V = c.vocab_size;
  auto W = [&](std::size_t idx) { return weights + table_.entries()[idx].offset; };
  auto G = [&](std::size_t idx) { return grads + table_.entries()[idx].offset; };
  const cpu::RopeTable rope = cpu::rope_table(S, hd, c.rope_theta);
  const cpu::AttentionShape ashape{B, S, nh, nkv, hd};

  // ---- forward ----
  Vec x = zeros(T * H);  // [T, H] residual stream
  cpu::embedding_forward(mb.tokens, W(table_.embed), x.data(), T, H);
  std::vector<LayerActs> acts(static_cast<std::size_t>(c.num_layers));
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const auto& p = table_.layers[l];
    LayerActs& a = acts[l];
    a.x_in = x;
    a.rstd_in = zeros(T);
    a.h_attn = zeros(T * H);
    cpu::rmsnorm_forward(x.data(), W(p.input_norm), a.h_attn.data(), a.rstd_in.data(), T, H, c.rms_norm_eps);
    a.q_raw = zeros(T * qd);
    a.k_raw = zeros(T * kvd);
    a.v = zeros(T * kvd);
    cpu::linear_forward(a.h_attn.data(), W(p.q_proj), a.q_raw.data(), T, H, qd);
    cpu::linear_forward(a.h_attn.data(), W(p.k_proj), a.k_raw.data(), T, H, kvd);
    cpu::linear_forward(a.h_attn.data(), W(p.v_proj), a.v.data(), T, H, kvd);
    a.q = zeros(T * qd);
    a.k = zeros(T * kvd);
    a.rstd_q = zeros(T * nh);
    a.rstd_k = zeros(T * nkv);
    cpu::rmsnorm_forward(a.q_raw.data(), W(p.q_norm), a.q.data(), a.rstd_q.data(), T * nh, hd, c.rms_norm_eps);
    cpu::rmsnorm_forward(a.k_raw.data(), W(p.k_norm), a.k.data(), a.rstd_k.data(), T * nkv, hd, c.rms_norm_eps);
    cpu::rope_forward(a.q.data(), rope, B, S, nh, hd);
    cpu::rope_forward(a.k.data(), rope, B, S, nkv, hd);
    a.attn = zeros(T * qd);
    a.lse = zeros(B * nh * S);
    cpu::attention_forward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), ashape);
    Vec o = zeros(T * H);
    cpu::linear_forward(a.attn.data(), W(p.o_proj), o.data(), T, qd, H);
    for (std::int64_t i = 0; i < T * H; ++i) x[i] += o[i];
    a.x_mid = x;
    a.rstd_mid = zeros(T);
    a.h_mlp = zeros(T * H);
    cpu::rmsnorm_forward(x.data(), W(p.post_norm), a.h_mlp.data(), a.rstd_mid.data(), T, H, c.rms_norm_eps);
    a.gate = zeros(T * I);
    a.up = zeros(T * I);
    a.act = zeros(T * I);
    cpu::linear_forward(a.h_mlp.data(), W(p.gate_proj), a.gate.data(), T, H, I);
    cpu::linear_forward(a.h_mlp.data(), W(p.up_proj), a.up.data(), T, H, I);
    cpu::swiglu_forward(a.gate.data(), a.up.data(), a.act.data(), T * I);
    Vec m = zeros(T * H);
    cpu::linear_forward(a.act.data(), W(p.down_proj), m.data(), T, I, H);
    for (std::int64_t i = 0; i < T * H; ++i) x[i] += m[i];
  }
  Vec rstd_f = zeros(T), hf = zeros(T * H);
  cpu::rmsnorm_forward(x.data(), W(table_.final_norm), hf.data(), rstd_f.data(), T, H, c.rms_norm_eps);
  Vec logits = zeros(T * V);  // [T, V]
  cpu::linear_forward(hf.data(), W(table_.lm_head), logits.data(), T, H, V);
  if (logits_out) logits_out->assign(logits.begin(), logits.end());

  // ---- loss, and backward in reverse ----
  cpu::LossSum loss = cpu::cross_entropy(logits.data(), mb.labels, logits.data(), T, V, grad_scale);
  Vec& dlogits = logits;  // overwritten in place
  Vec dhf = zeros(T * H);
  cpu::linear_backward(hf.data(), W(table_.lm_head), dlogits.data(), dhf.data(), G(table_.lm_head), T, H, V);
  Vec dx = zeros(T * H);  // gradient of the residual stream
  cpu::rmsnorm_backward(x.data(), W(table_.final_norm), rstd_f.data(), dhf.data(), dx.data(), G(table_.final_norm), T, H);

  Vec tmp = zeros(T * H);
  for (std::int64_t l = c.num_layers - 1; l >= 0; --l) {
    const auto& p = table_.layers[l];
    LayerActs& a = acts[l];
    // MLP block: x_out = x_mid + down(swiglu(gate(h), up(h))), h = norm(x_mid)
    Vec dact = zeros(T * I), dgate = zeros(T * I), dup = zeros(T * I), dh = zeros(T * H);
    cpu::linear_backward(a.act.data(), W(p.down_proj), dx.data(), dact.data(), G(p.down_proj), T, I, H);
    cpu::swiglu_backward(a.gate.data(), a.up.data(), dact.data(), dgate.data(), dup.data(), T * I);
    cpu::linear_backward(a.h_mlp.data(), W(p.gate_proj), dgate.data(), dh.data(), G(p.gate_proj), T, H, I);
    cpu::linear_backward(a.h_mlp.data(), W(p.up_proj), dup.data(), dh.data(), G(p.up_proj), T, H, I, true);
    cpu::rmsnorm_backward(a.x_mid.data(), W(p.post_norm), a.rstd_mid.data(), dh.data(), tmp.data(), G(p.post_norm), T, H);
    for (std::int64_t i = 0; i < T * H; ++i) dx[i] += tmp[i];
    // Attention block: x_mid = x_in + o(attn(rope(qnorm(q(h))), rope(knorm(k(h))), v(h))), h = norm(x_in)
    Vec dattn = zeros(T * qd), dq = zeros(T * qd), dk = zeros(T * kvd), dv = zeros(T * kvd);
    cpu::linear_backward(a.attn.data(), W(p.o_proj), dx.data(), dattn.data(), G(p.o_proj), T, qd, H);
    cpu::attention_backward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), dattn.data(), dq.data(),
                            dk.data(), dv.data(), ashape);
    cpu::rope_backward(dq.data(), rope, B, S, nh, hd);
    cpu::rope_backward(dk.data(), rope, B, S, nkv, hd);
    cpu::rmsnorm_backward(a.q_raw.data(), W(p.q_norm), a.rstd_q.data(), dq.data(), dq.data(), G(p.q_norm), T * nh, hd);
    cpu::rmsnorm_backward(a.k_raw.data(), W(p.k_norm), a.rstd_k.data(), dk.data(), dk.data(), G(p.k_norm), T * nkv, hd);
    cpu::linear_backward(a.h_attn.data(), W(p.q_proj), dq.data(), dh.data(), G(p.q_proj), T, H, qd);
    cpu::linear_backward(a.h_attn.data(), W(p.k_proj), dk.data(), dh.data(), G(p.k_proj), T, H, kvd, true);
    cpu::linear_backward(a.h_attn.data(), W(p.v_proj), dv.data(), dh.data(), G(p.v_proj), T, H, kvd, true);
    cpu::rmsnorm_backward(a.x_in.data(), W(p.input_norm), a.rstd_in.data(), dh.data(), tmp.data(), G(p.input_norm), T, H);
    for (std::int64_t i = 0; i < T * H; ++i) dx[i] += tmp[i];
    a = LayerActs{};  // free this layer's activations as soon as they are used
  }
  cpu::embedding_backward(mb.tokens, dx.data(), G(table_.embed), T, H);
  return loss;
}

}  // namespace qwen3
