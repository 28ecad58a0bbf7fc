// Hugging Face Qwen3 checkpoint folders, in and out: config.json plus the weights as safetensors — one
// model.safetensors, or shards model-0000i-of-0000n.safetensors listed by model.safetensors.index.json
// ({"weight_map": {name: file}}) — in float32, bfloat16 or float16. Names and shapes are Hugging Face's
// (model/param_table.h uses the same).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "io/safetensors.h"
#include "model/param_table.h"

namespace qwen3 {

// config.json → ModelConfig. Requires model_type "qwen3"; refuses what this trainer does not implement (another
// activation than silu, attention biases, sliding windows, scaled RoPE). Absent keys take Hugging Face's Qwen3Config
// defaults (num_key_value_heads = num_attention_heads, head_dim 128, rope_theta 10000, rms_norm_eps 1e-6, untied).
// rope_theta is read from "rope_parameters" (transformers 5) or the top level (transformers 4). InputError otherwise.
ModelConfig read_hf_config(const std::string& dir);

class HfCheckpoint {
 public:
  // Reads config.json, the shard index if any, and every shard's header (InputError naming the file and problem).
  explicit HfCheckpoint(const std::string& dir);
  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  std::vector<std::string> names() const;
  const SafetensorInfo& info(const std::string& name) const;
  std::vector<float> read(const std::string& name) const;  // float32 values
  // Every tensor of `table` (full shapes) present with its shape, and nothing else: InputError naming the first that
  // is missing, misshapen or unexpected.
  void check_against(const ParamTable& table) const;

 private:
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;  // tensor name → its shard
};

struct HfExportOptions {
  std::string dtype = "BF16";               // BF16 (as Qwen3 is published) or F32
  std::int64_t max_shard_bytes = 5000000000;  // Hugging Face's default shard size
  bool overwrite = false;                   // replace an existing folder
};

// Writes `dir` from `table` (full names and shapes) and `values(name)` (each tensor's full float32 values, asked for
// in table order): config.json, the shards and, when there is more than one, the index. Collective use: every rank
// passes the same table and calls in; only the one with `writer` set touches the disk (values() is still asked for
// every tensor, so collective engine reads stay matched). Written into DIR.partial and renamed into place at the end,
// so an interrupted export never leaves DIR looking complete. OutputError when DIR exists (without overwrite) or a
// file cannot be written.
void write_hf_checkpoint(const std::string& dir, const ModelConfig& cfg, const ParamTable& table,
                         const std::function<std::vector<float>(const std::string&)>& values, bool writer,
                         const HfExportOptions& options = {});

}  // namespace qwen3
