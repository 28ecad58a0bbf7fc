// The Qwen3 parameter list: Hugging Face names, shapes, offsets in one flat buffer, and which tensors get weight decay.
// Every backend lays its weights, gradients and optimizer state out in this order. Within a layer q|k|v and
// gate|up are adjacent, so the CUDA engine runs each group as one GEMM over one [rows, hidden] weight block.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/model_config.h"

namespace qwen3 {

struct ParamInfo {
  std::string name;                 // e.g. "model.layers.3.self_attn.q_proj.weight"
  std::vector<std::int64_t> shape;  // Linear weights are [out, in]
  std::int64_t offset = 0;          // elements from the start of the flat buffer
  std::int64_t numel = 0;
  bool decay = false;               // decoupled weight decay applies to 2-D tensors only
};

// Indices into ParamTable::entries for one decoder layer.
struct LayerParamIndex {
  std::size_t q_proj, k_proj, v_proj, o_proj, q_norm, k_norm, gate_proj, up_proj, down_proj, input_norm, post_norm;
};

class ParamTable {
 public:
  explicit ParamTable(const ModelConfig& cfg);
  // One tensor-parallel rank's table (model/tensor_parallel.h): the same names and order, that rank's shapes.
  ParamTable(const ModelConfig& cfg, std::int64_t q_dim, std::int64_t kv_dim, std::int64_t inter, std::int64_t vocab);
  const std::vector<ParamInfo>& entries() const { return entries_; }
  std::int64_t total_elements() const { return total_; }
  // Throws InputError naming the parameter when absent.
  const ParamInfo& find(const std::string& name) const;
  bool contains(const std::string& name) const;
  // The index of `name` after checking that `values` elements are the whole tensor; InputError naming `what` (e.g.
  // "weight", "moment of") and the tensor otherwise.
  std::size_t index_of_full(const std::string& name, std::size_t values, const char* what) const;
  // The same table with only the tensors where keep[index] is true laid out (compactly, in order); the others keep
  // their name and shape but hold no elements (numel 0): a pipeline stage's buffers.
  ParamTable restricted(const std::vector<bool>& keep) const;

  std::size_t embed;                        // model.embed_tokens.weight [V, H]
  std::size_t final_norm;                   // model.norm.weight [H]
  std::size_t lm_head;                      // lm_head.weight [V, H], or == embed when tied
  std::vector<LayerParamIndex> layers;

 private:
  std::size_t add(const std::string& name, std::vector<std::int64_t> shape);
  std::vector<ParamInfo> entries_;
  std::int64_t total_ = 0;
};

}  // namespace qwen3
