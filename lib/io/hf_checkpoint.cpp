// Hugging Face checkpoint folders (see hf_checkpoint.h).
#include "io/hf_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace fs = std::filesystem;

namespace qwen3 {
namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw InputError("'" + path.string() + "' cannot be opened");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError("'" + path.string() + "' is not valid JSON (" + e.what() + ")");
  }
}

// Writes text and a newline; OutputError when the file cannot be written completely (checked after closing).
void write_text_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text << "\n";
  out.close();
  if (!out) throw OutputError("cannot write '" + path.string() + "'");
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

static ModelConfig read_hf_config_json(const std::string& dir);  // read_hf_config without the JSON type errors caught

ModelConfig read_hf_config(const std::string& dir) {
  try {
    return read_hf_config_json(dir);
  } catch (const nlohmann::json::exception& e) {  // a key of the wrong type
    throw InputError("'" + (fs::path(dir) / "config.json").string() + "': " + e.what());
  }
}

static ModelConfig read_hf_config_json(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.json";
  if (!fs::is_directory(dir)) throw InputError("--init-from-hf: '" + dir + "' is not a folder");
  const nlohmann::json j = read_json(path);
  auto fail = [&](const std::string& why) { throw InputError("'" + path.string() + "': " + why); };
  if (!j.is_object()) fail("not a JSON object");
  const std::string type = j.value("model_type", std::string());
  if (type != "qwen3") fail("model_type '" + type + "' is not qwen3");
  auto integer = [&](const char* key, std::int64_t fallback, bool required) -> std::int64_t {
    if (!j.contains(key) || j.at(key).is_null()) {
      if (required) fail(std::string("'") + key + "' is missing");
      return fallback;
    }
    if (!j.at(key).is_number_integer()) fail(std::string("'") + key + "' is not an integer");
    return j.at(key).get<std::int64_t>();
  };
  auto number = [&](const nlohmann::json& o, const char* key, double fallback) -> double {
    if (!o.contains(key) || o.at(key).is_null()) return fallback;
    if (!o.at(key).is_number()) fail(std::string("'") + key + "' is not a number");
    return o.at(key).get<double>();
  };
  ModelConfig c;
  c.name = "hf:" + dir;
  c.vocab_size = integer("vocab_size", 0, true);
  c.hidden_size = integer("hidden_size", 0, true);
  c.intermediate_size = integer("intermediate_size", 0, true);
  c.num_layers = integer("num_hidden_layers", 0, true);
  c.num_heads = integer("num_attention_heads", 0, true);
  c.num_kv_heads = integer("num_key_value_heads", c.num_heads, false);
  c.head_dim = integer("head_dim", 128, false);
  c.rms_norm_eps = number(j, "rms_norm_eps", 1e-6);
  if (j.contains("tie_word_embeddings") && !j.at("tie_word_embeddings").is_boolean()) fail("'tie_word_embeddings' is not true or false");
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  c.rope_theta = number(j, "rope_theta", 10000.0);
  for (const char* key : {"rope_parameters", "rope_scaling"}) {  // transformers 5 and 4 spellings
    if (!j.contains(key) || j.at(key).is_null()) continue;
    const auto& r = j.at(key);
    if (!r.is_object()) fail(std::string("'") + key + "' is not an object");
    const std::string kind = r.value("rope_type", r.value("type", std::string("default")));
    if (kind != "default") fail(std::string("'") + key + "' asks for RoPE type '" + kind + "': only the default is implemented");
    c.rope_theta = number(r, "rope_theta", c.rope_theta);
  }
  if (j.value("hidden_act", std::string("silu")) != "silu") fail("hidden_act '" + j.value("hidden_act", std::string()) + "' is not silu");
  if (j.value("attention_bias", false)) fail("attention_bias is true: Qwen3 has no attention biases, nor does this trainer");
  if (j.value("use_sliding_window", false)) fail("use_sliding_window is true: sliding-window attention is not implemented");
  try {
    c.validate();
  } catch (const UsageError& e) {
    fail(e.what());
  }
  return c;
}

HfCheckpoint::HfCheckpoint(const std::string& dir) : dir_(dir), config_(read_hf_config(dir)) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json", single = fs::path(dir) / "model.safetensors";
  std::vector<std::string> shards;
  std::map<std::string, std::string> listed;  // index: tensor → shard file
  if (fs::exists(index)) {
    const nlohmann::json j = read_json(index);
    if (!j.contains("weight_map") || !j.at("weight_map").is_object())
      throw InputError("'" + index.string() + "': no \"weight_map\" object");
    std::set<std::string> files;
    for (const auto& [name, file] : j.at("weight_map").items()) {
      if (!file.is_string()) throw InputError("'" + index.string() + "': the shard of '" + name + "' is not a file name");
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos) throw InputError("'" + index.string() + "': shard '" + f + "' is not a file in the folder");
      listed[name] = f;
      files.insert(f);
    }
    shards.assign(files.begin(), files.end());
  } else if (fs::exists(single)) {
    shards.push_back("model.safetensors");
  } else {
    throw InputError("'" + dir + "' has neither model.safetensors nor model.safetensors.index.json");
  }
  for (const auto& s : shards) {
    files_.push_back(std::make_unique<SafetensorsFile>((fs::path(dir) / s).string()));
    for (const auto& [name, info] : files_.back()->tensors()) {
      if (where_.count(name)) throw InputError("'" + dir + "': tensor '" + name + "' is in two shards");
      if (!listed.empty() && listed.count(name) && listed[name] != s)
        throw InputError("'" + dir + "': the index puts '" + name + "' in " + listed[name] + ", it is in " + s);
      where_[name] = files_.back().get();
    }
  }
  for (const auto& [name, file] : listed)
    if (!where_.count(name)) throw InputError("'" + dir + "': the index lists '" + name + "' in " + file + ", which does not hold it");
}

std::vector<std::string> HfCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : where_) out.push_back(name);
  return out;
}

const SafetensorInfo& HfCheckpoint::info(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw InputError("'" + dir_ + "': no tensor '" + name + "'");
  return it->second->info(name);
}

std::vector<float> HfCheckpoint::read(const std::string& name) const {
  info(name);
  return where_.at(name)->read(name);
}

void HfCheckpoint::check_against(const ParamTable& table) const {
  for (const auto& p : table.entries()) {
    if (!where_.count(p.name)) throw InputError("'" + dir_ + "': tensor '" + p.name + "' is missing");
    const auto& shape = info(p.name).shape;
    if (shape != p.shape)
      throw InputError("'" + dir_ + "': tensor '" + p.name + "' has shape " + shape_text(shape) + ", the model needs " +
                       shape_text(p.shape));
  }
  for (const auto& [name, f] : where_)
    if (!table.contains(name))
      throw InputError("'" + dir_ + "': tensor '" + name + "' is not a parameter of this model" +
                       (name == "lm_head.weight" ? " (its config ties the output projection to the embedding)" : ""));
}

namespace {

// The export's tensors in shards, in table order, each up to max_shard_bytes (a larger tensor alone in its shard).
struct ShardPlan {
  std::vector<std::vector<SafetensorsWriter::Entry>> shards;
  std::int64_t total_bytes = 0;  // of every tensor, as the index's metadata says
};
ShardPlan plan_shards(const ParamTable& table, std::int64_t elem, std::int64_t max_shard_bytes) {
  ShardPlan plan;
  plan.shards.resize(1);
  std::int64_t in_shard = 0;
  for (const auto& p : table.entries()) {
    std::int64_t n = 1;
    for (auto d : p.shape) n *= d;
    const std::int64_t bytes = n * elem;
    if (!plan.shards.back().empty() && in_shard + bytes > max_shard_bytes) plan.shards.emplace_back(), in_shard = 0;
    plan.shards.back().push_back({p.name, p.shape});
    in_shard += bytes;
    plan.total_bytes += bytes;
  }
  return plan;
}

// Shard i of n's file name, as transformers names them ("model.safetensors" when there is one).
std::string shard_file_name(std::size_t i, std::size_t n) {
  if (n == 1) return std::string("model.safetensors");
  char s[64];
  std::snprintf(s, sizeof s, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return std::string(s);
}

// config.json of an exported checkpoint, keys in the order transformers writes them.
nlohmann::ordered_json hf_config_json(const ModelConfig& c, const std::string& dtype) {
  nlohmann::ordered_json cfg;
  cfg["architectures"] = {"Qwen3ForCausalLM"};
  cfg["model_type"] = "qwen3";
  cfg["vocab_size"] = c.vocab_size;
  cfg["hidden_size"] = c.hidden_size;
  cfg["intermediate_size"] = c.intermediate_size;
  cfg["num_hidden_layers"] = c.num_layers;
  cfg["num_attention_heads"] = c.num_heads;
  cfg["num_key_value_heads"] = c.num_kv_heads;
  cfg["head_dim"] = c.head_dim;
  cfg["hidden_act"] = "silu";
  cfg["attention_bias"] = false;
  cfg["rms_norm_eps"] = c.rms_norm_eps;
  cfg["rope_theta"] = c.rope_theta;  // transformers 4
  cfg["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};  // transformers 5
  cfg["tie_word_embeddings"] = c.tie_word_embeddings;
  cfg["use_sliding_window"] = false;
  cfg["max_position_embeddings"] = 40960;
  cfg["torch_dtype"] = dtype == "BF16" ? "bfloat16" : "float32";
  return cfg;
}

// The writer's DIR.partial, empty but for config.json; OutputError when DIR exists without --overwrite.
void start_partial_folder(const std::string& clean, const fs::path& partial, const ModelConfig& c,
                          const HfExportOptions& o) {
  if (fs::exists(fs::path(clean)) && !o.overwrite) throw OutputError("'" + clean + "' exists (pass --overwrite to replace it)");
  std::error_code ec;
  fs::remove_all(partial, ec);
  if (!fs::create_directories(partial, ec) || ec) throw OutputError("cannot create '" + partial.string() + "'");
  write_text_file(partial / "config.json", hf_config_json(c, o.dtype).dump(2));
}

// DIR.partial renamed to DIR, an existing DIR moved to DIR.old first and removed last.
void publish_partial_folder(const std::string& clean, const fs::path& partial) {
  const fs::path final_dir(clean);
  std::error_code ec;
  const fs::path old(clean + ".old");
  if (fs::exists(final_dir)) {
    fs::remove_all(old, ec);
    fs::rename(final_dir, old, ec);
    if (ec) throw OutputError("--export-hf: cannot move the old '" + clean + "' aside: " + ec.message());
  }
  fs::rename(partial, final_dir, ec);
  if (ec) throw OutputError("--export-hf: cannot publish '" + clean + "': " + ec.message());
  fs::remove_all(old, ec);
}

}  // namespace

void write_hf_checkpoint(const std::string& dir, const ModelConfig& c, const ParamTable& table,
                         const std::function<std::vector<float>(const std::string&)>& values, bool writer,
                         const HfExportOptions& o) {
  const std::int64_t elem = SafetensorsWriter::element_bytes(o.dtype);
  if (o.dtype != "F32" && o.dtype != "BF16") throw UsageError("--export-dtype: '" + o.dtype + "' (valid: bf16, fp32)");
  const ShardPlan plan = plan_shards(table, elem, o.max_shard_bytes);
  const auto& shards = plan.shards;
  const std::size_t n = shards.size();
  std::string clean = dir;  // "out/" → "out": DIR.partial and DIR.old are siblings of DIR
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  const fs::path partial(clean + ".partial");
  // A write error on the writer is kept until every tensor has been asked for: values() may be collective, and the
  // other ranks are still asking.
  std::string failed;
  auto attempt = [&](const std::function<void()>& fn) {
    if (!writer || !failed.empty()) return;
    try {
      fn();
    } catch (const Error& e) {
      failed = e.what();
    }
  };
  attempt([&] { start_partial_folder(clean, partial, c, o); });
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", plan.total_bytes}};
  index["weight_map"] = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < n; ++i) {
    std::unique_ptr<SafetensorsWriter> w;
    attempt([&] { w = std::make_unique<SafetensorsWriter>((partial / shard_file_name(i, n)).string(), shards[i], o.dtype); });
    for (const auto& e : shards[i]) {
      const std::vector<float> v = values(e.name);  // collective for engines: every rank asks
      attempt([&] { w->write(v); });
      index["weight_map"][e.name] = shard_file_name(i, n);
    }
    attempt([&] { w->close(); });
  }
  if (!writer) return;
  if (!failed.empty()) {
    std::error_code ec;
    fs::remove_all(partial, ec);
    throw OutputError("--export-hf: " + failed);
  }
  if (n > 1) write_text_file(partial / "model.safetensors.index.json", index.dump(2));
  publish_partial_folder(clean, partial);
}

}  // namespace qwen3
