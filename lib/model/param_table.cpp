// Builds the Qwen3 parameter table in Hugging Face's named_parameters() order (see param_table.h).
#include "model/param_table.h"

#include "core/error.h"

namespace qwen3 {

std::size_t ParamTable::add(const std::string& name, std::vector<std::int64_t> shape) {
  ParamInfo p;
  p.name = name;
  p.numel = 1;
  for (auto d : shape) p.numel *= d;
  p.decay = shape.size() >= 2;
  p.shape = std::move(shape);
  p.offset = total_;
  total_ += p.numel;
  entries_.push_back(std::move(p));
  return entries_.size() - 1;
}

ParamTable::ParamTable(const ModelConfig& c) : ParamTable(c, c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size) {}

ParamTable::ParamTable(const ModelConfig& c, std::int64_t q_dim, std::int64_t kv_dim, std::int64_t inter,
                       std::int64_t vocab) {
  const std::int64_t H = c.hidden_size, I = inter;
  embed = add("model.embed_tokens.weight", {vocab, H});
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerParamIndex li{};
    li.q_proj = add(p + "self_attn.q_proj.weight", {q_dim, H});
    li.k_proj = add(p + "self_attn.k_proj.weight", {kv_dim, H});
    li.v_proj = add(p + "self_attn.v_proj.weight", {kv_dim, H});
    li.o_proj = add(p + "self_attn.o_proj.weight", {H, q_dim});
    li.q_norm = add(p + "self_attn.q_norm.weight", {c.head_dim});
    li.k_norm = add(p + "self_attn.k_norm.weight", {c.head_dim});
    li.gate_proj = add(p + "mlp.gate_proj.weight", {I, H});
    li.up_proj = add(p + "mlp.up_proj.weight", {I, H});
    li.down_proj = add(p + "mlp.down_proj.weight", {H, I});
    li.input_norm = add(p + "input_layernorm.weight", {H});
    li.post_norm = add(p + "post_attention_layernorm.weight", {H});
    layers.push_back(li);
  }
  final_norm = add("model.norm.weight", {H});
  lm_head = c.tie_word_embeddings ? embed : add("lm_head.weight", {vocab, H});
}

ParamTable ParamTable::restricted(const std::vector<bool>& keep) const {
  if (keep.size() != entries_.size()) throw InternalError("ParamTable::restricted: one flag per tensor expected");
  ParamTable t = *this;
  t.total_ = 0;
  for (std::size_t i = 0; i < t.entries_.size(); ++i) {
    auto& e = t.entries_[i];
    e.offset = t.total_;
    if (!keep[i]) e.numel = 0;
    t.total_ += e.numel;
  }
  return t;
}

std::size_t ParamTable::index_of_full(const std::string& name, std::size_t values, const char* what) const {
  const ParamInfo& p = find(name);
  if (static_cast<std::int64_t>(values) != p.numel)
    throw InputError(std::string(what) + " '" + name + "' has " + std::to_string(values) + " values, the model expects " +
                     std::to_string(p.numel));
  return static_cast<std::size_t>(&p - entries_.data());
}

bool ParamTable::contains(const std::string& name) const {
  for (auto& e : entries_)
    if (e.name == name) return true;
  return false;
}

const ParamInfo& ParamTable::find(const std::string& name) const {
  for (auto& e : entries_)
    if (e.name == name) return e;
  throw InputError("the model has no parameter named '" + name + "'");
}

}  // namespace qwen3
