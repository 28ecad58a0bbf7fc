// Qwen3 presets (published Hugging Face configs) and the model config's validation and counts.
#include "config/model_config.h"

#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/ini.h"
#include "core/error.h"

namespace qwen3 {
namespace {

ModelConfig make(const char* name, std::int64_t vocab, std::int64_t hidden, std::int64_t inter, std::int64_t layers,
                 std::int64_t heads, std::int64_t kv, std::int64_t head_dim, bool tied) {
  ModelConfig c;
  c.name = name;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = head_dim;
  c.tie_word_embeddings = tied;
  return c;
}

const std::vector<ModelConfig>& presets() {
  static const std::vector<ModelConfig> all = {
      // tiny: the configuration of the golden file (../shared/golden/qwen3-tiny.h5), for tests.
      make("tiny", 512, 64, 192, 4, 8, 4, 16, true),
      make("0.6B", 151936, 1024, 3072, 28, 16, 8, 128, true),
      make("1.7B", 151936, 2048, 6144, 28, 16, 8, 128, true),
      make("4B", 151936, 2560, 9728, 36, 32, 8, 128, true),
      make("8B", 151936, 4096, 12288, 36, 32, 8, 128, false),
      make("14B", 151936, 5120, 17408, 40, 40, 8, 128, false),
      make("32B", 151936, 5120, 25600, 64, 64, 8, 128, false),
  };
  return all;
}

void require_positive(std::int64_t v, const char* field) {
  if (v <= 0) throw UsageError(std::string("model config: ") + field + " must be positive, got " + std::to_string(v));
}

}  // namespace

void ModelConfig::validate() const {
  require_positive(vocab_size, "vocab_size");
  require_positive(hidden_size, "hidden_size");
  require_positive(intermediate_size, "intermediate_size");
  require_positive(num_layers, "num_hidden_layers");
  require_positive(num_heads, "num_attention_heads");
  require_positive(num_kv_heads, "num_key_value_heads");
  require_positive(head_dim, "head_dim");
  if (num_heads % num_kv_heads != 0)
    throw UsageError("model config: num_attention_heads (" + std::to_string(num_heads) +
                     ") must be a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  if (head_dim % 2 != 0) throw UsageError("model config: head_dim must be even for rotary embeddings, got " + std::to_string(head_dim));
  if (!(rope_theta > 0)) throw UsageError("model config: rope_theta must be positive");
  if (!(rms_norm_eps > 0)) throw UsageError("model config: rms_norm_eps must be positive");
  if (vocab_size > (std::int64_t{1} << 31) - 1) throw UsageError("model config: vocab_size must fit in int32");
}

std::int64_t ModelConfig::parameter_count() const {
  const std::int64_t H = hidden_size, I = intermediate_size;
  std::int64_t per_layer = H * q_dim() + 2 * H * kv_dim() + q_dim() * H  // q, k, v, o
                           + 3 * H * I                                   // gate, up, down
                           + 2 * H + 2 * head_dim;                       // two norms, q_norm, k_norm
  std::int64_t total = vocab_size * H + num_layers * per_layer + H;
  if (!tie_word_embeddings) total += vocab_size * H;
  return total;
}

std::int64_t ModelConfig::matmul_weight_count() const {
  const std::int64_t H = hidden_size, I = intermediate_size;
  std::int64_t per_layer = H * q_dim() + 2 * H * kv_dim() + q_dim() * H + 3 * H * I;
  return num_layers * per_layer + vocab_size * H;  // output projection, tied or not
}

double ModelConfig::training_flops_per_sequence(std::int64_t seq_len) const {
  const double s = static_cast<double>(seq_len);
  return 6.0 * static_cast<double>(matmul_weight_count()) * s +
         6.0 * static_cast<double>(num_layers * num_heads * head_dim) * s * s;
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (auto& p : presets()) n.push_back(p.name);
    return n;
  }();
  return names;
}

ModelConfig model_preset(const std::string& name) {
  for (auto& p : presets())
    if (p.name == name) return p;
  std::string valid;
  for (auto& n : preset_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw UsageError("unknown model preset '" + name + "' (valid: " + valid + ")");
}

ModelConfig load_model_config(const std::string& path) {
  IniFile ini = read_ini(path, "model config");
  ModelConfig c;
  c.name = ini.get_string("name", path);
  c.vocab_size = ini.get_int("vocab_size", c.vocab_size, true);
  c.hidden_size = ini.get_int("hidden_size", c.hidden_size, true);
  c.intermediate_size = ini.get_int("intermediate_size", c.intermediate_size, true);
  c.num_layers = ini.get_int("num_hidden_layers", c.num_layers, true);
  c.num_heads = ini.get_int("num_attention_heads", c.num_heads, true);
  c.num_kv_heads = ini.get_int("num_key_value_heads", c.num_kv_heads, true);
  c.head_dim = ini.get_int("head_dim", c.head_dim, true);
  c.rope_theta = ini.get_double("rope_theta", c.rope_theta);
  c.rms_norm_eps = ini.get_double("rms_norm_eps", c.rms_norm_eps);
  c.tie_word_embeddings = ini.get_bool("tie_word_embeddings", c.tie_word_embeddings);
  ini.reject_unused();
  try {
    c.validate();
  } catch (const UsageError& e) {
    throw UsageError(std::string(e.what()) + " in '" + path + "'");
  }
  return c;
}

std::string presets_json() {
  nlohmann::json all = nlohmann::json::array();
  for (const auto& c : presets())
    all.push_back({{"name", c.name}, {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                   {"intermediate_size", c.intermediate_size}, {"num_layers", c.num_layers}, {"num_heads", c.num_heads},
                   {"num_kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
                   {"tie_word_embeddings", c.tie_word_embeddings}, {"parameters", c.parameter_count()}});
  return all.dump();
}

}  // namespace qwen3
