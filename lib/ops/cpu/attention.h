// CPU reference (float64 activations, float32 parameters; types.h): causal grouped-query attention with 1/sqrt(head_dim) scaling, forward and backward.
// Only the per-row log-sum-exp is saved; the backward recomputes probabilities (no [seq × seq] tensor is kept).
#pragma once
#include <cstdint>

#include "ops/cpu/types.h"

namespace qwen3::cpu {

struct AttentionShape {
  std::int64_t batch, seq, heads, kv_heads, head_dim;
  // Context parallelism: the queries are `seq` rows of a longer sequence of kv_seq keys, query row t at position
  // q_pos[t] (it sees keys 0..q_pos[t]). Defaults: kv_seq = seq, q_pos[t] = t.
  std::int64_t kv_seq = 0;
  const std::int64_t* q_pos = nullptr;
  std::int64_t keys() const { return kv_seq > 0 ? kv_seq : seq; }
  std::int64_t pos(std::int64_t t) const { return q_pos ? q_pos[t] : t; }
};

// q[B, S, heads, hd], k/v[B, S_kv, kv_heads, hd] → out[B, S, heads, hd]; lse[B, heads, S] saved.
// Query head h reads key/value head h / (heads / kv_heads).
void attention_forward(const act_t* q, const act_t* k, const act_t* v, act_t* out, act_t* lse, const AttentionShape& s);

// Given dout, writes dq (overwritten) and dk, dv (overwritten), all in the forward layouts.
void attention_backward(const act_t* q, const act_t* k, const act_t* v, const act_t* out, const act_t* lse,
                        const act_t* dout, act_t* dq, act_t* dk, act_t* dv, const AttentionShape& s);

}  // namespace qwen3::cpu
