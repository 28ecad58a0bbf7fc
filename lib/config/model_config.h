// Qwen3 model configuration: typed fields, named presets (tiny … 32B), validation, parameter and FLOP counts.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

struct ModelConfig {
  std::string name = "custom";
  std::int64_t vocab_size = 151936;
  std::int64_t hidden_size = 1024;        // H
  std::int64_t intermediate_size = 3072;  // I (SwiGLU inner width)
  std::int64_t num_layers = 28;
  std::int64_t num_heads = 16;            // query heads
  std::int64_t num_kv_heads = 8;          // key/value heads (grouped-query attention)
  std::int64_t head_dim = 128;            // q width = heads*head_dim, which need not equal H
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = true;        // output projection = embedding matrix

  std::int64_t q_dim() const { return num_heads * head_dim; }
  std::int64_t kv_dim() const { return num_kv_heads * head_dim; }

  // Throws UsageError naming the first invalid field.
  void validate() const;

  // Every trainable parameter (tied output counted once).
  std::int64_t parameter_count() const;
  // Weights used in matmuls per token: all projections plus the output projection, counted even when tied.
  std::int64_t matmul_weight_count() const;
  // Training FLOPs for one sequence of seq_len tokens: 6·matmul_weights·tokens + 6·layers·heads·head_dim·seq².
  double training_flops_per_sequence(std::int64_t seq_len) const;
};

// Preset names in size order: tiny, 0.6B, 1.7B, 4B, 8B, 14B, 32B.
const std::vector<std::string>& preset_names();
// Every preset for tools (qwen3-sweep reads it instead of a copy): a JSON array of {"name", "vocab_size",
// "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "tie_word_embeddings",
// "parameters"}.
std::string presets_json();
// Throws UsageError listing the valid names when unknown.
ModelConfig model_preset(const std::string& name);
// Reads an INI model config (Hugging Face key names, see docs/config.md). Throws UsageError naming the problem.
ModelConfig load_model_config(const std::string& path);

}  // namespace qwen3
