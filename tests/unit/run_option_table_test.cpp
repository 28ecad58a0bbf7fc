// The option table (train/run_option_table.h) as the one source of qwen3-pretrain's options: /config's keys are the
// table's, docs/cli.md documents every option, --list-options says what the table says (qwen3-sweep reads it), and
// each option's check refuses what it should by its command-line name.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli_runner.h"
#include "core/error.h"
#include "train/run_config.h"
#include "train/run_option_table.h"

namespace qwen3 {
namespace {

std::string repo_text(const std::string& relative) {
  std::ifstream in(test::test_data_dir() + "/../../" + relative);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(RunOptionTable, ConfigRecordsTheModelAndEachRecordedOptionOnce) {
  RunConfig c;
  c.model = model_preset("tiny");
  c.seq_len = 64;
  std::set<std::string> keys, expected;
  for (const auto& [k, v] : c.key_values()) EXPECT_TRUE(keys.insert(k).second) << "twice: " << k;
  for (const auto& o : run_option_table())
    if (!o.config_key.empty()) expected.insert(o.config_key);
  for (const auto& k : keys)
    if (k.rfind("model.", 0) != 0) EXPECT_TRUE(expected.count(k)) << k << " is not an option's /config key";
  for (const auto& k : expected) EXPECT_TRUE(keys.count(k)) << k;
  EXPECT_EQ(run_option("no-shard-optimizer").config_key, "shard_optimizer");
  EXPECT_EQ(recorded_value(c, run_option("lr")), "0.0003");
  EXPECT_EQ(recorded_value(c, run_option("no-gemm-autotune")), "true");  // the field, not the flag
}

TEST(RunOptionTable, DocsCliMdDocumentsEveryOption) {
  const std::string doc = repo_text("docs/cli.md");
  ASSERT_FALSE(doc.empty());
  for (const auto& o : run_option_table())
    EXPECT_NE(doc.find("`--" + o.name), std::string::npos) << "docs/cli.md lacks --" << o.name;
}

TEST(RunOptionTable, ListOptionsJsonIsTheTable) {
  const auto all = nlohmann::json::parse(run_options_json());
  ASSERT_EQ(all.size(), run_option_table().size());
  std::set<std::string> names;
  for (const auto& o : all) {
    EXPECT_TRUE(names.insert(o["name"].get<std::string>()).second);
    const std::string type = o["type"];
    EXPECT_TRUE(type == "integer" || type == "number" || type == "text" || type == "flag") << o.dump();
    std::string key = o["name"];
    std::replace(key.begin(), key.end(), '-', '_');
    EXPECT_EQ(o["key"], key);
  }
  auto find = [&](const std::string& name) {
    for (const auto& o : all)
      if (o["name"] == name) return o;
    return nlohmann::json();
  };
  EXPECT_EQ(find("steps")["default"], "50");
  EXPECT_EQ(find("steps")["section"], "run");
  EXPECT_EQ(find("seed")["default"], "1234");
  EXPECT_EQ(find("model")["default"], "tiny");
  EXPECT_TRUE(find("seq-len")["default"].is_null());  // required: not given is its own state
  EXPECT_EQ(find("plan")["section"], "general");
  EXPECT_EQ(find("offload-optimizer")["type"], "number");
  EXPECT_EQ(find("shared-gpu-staging")["type"], "flag");
  EXPECT_EQ(find("precision")["choices"], nlohmann::json({"bf16", "fp8"}));  // a choice option lists its values
  EXPECT_EQ(find("precision")["default"], "bf16");
  EXPECT_TRUE(find("steps")["choices"].is_null());
  for (const char* name : {"precision", "attention", "device", "format", "export-dtype"}) {  // each refuses the rest
    RunConfig c;
    EXPECT_NO_THROW(run_option(name).check(c)) << name;  // its default is one of its choices
  }
}

TEST(RunOptionTable, EachCheckRefusesByTheOptionsName) {
  auto refusal = [](const char* name, auto set) {
    RunConfig c;
    set(c);
    try {
      run_option(name).check(c);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(refusal("steps", [](RunConfig& c) { c.steps = 0; }), "--steps must be positive, got 0");
  EXPECT_EQ(refusal("tp", [](RunConfig& c) { c.tp = 0; }), "--tp must be at least 1, got 0");
  EXPECT_EQ(refusal("attention", [](RunConfig& c) { c.attention = "flash"; }),
            "--attention: invalid value 'flash' (valid: cudnn, own)");
  EXPECT_EQ(refusal("min-lr", [](RunConfig& c) { c.min_lr = 1; }), "--min-lr must be between 0 and --lr (0.0003), got 1");
  EXPECT_EQ(refusal("steps", [](RunConfig& c) { c.steps = 5; }), "");
  EXPECT_TRUE(run_option("seq-len").layout);  // --plan checks it too
  EXPECT_FALSE(run_option("steps").layout);
  EXPECT_THROW(run_option("no-such-option"), InternalError);
}

}  // namespace
}  // namespace qwen3
