// Presets carry the published Qwen3 numbers; validation and config files reject bad values with a named field.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "config/model_config.h"
#include "core/error.h"

using namespace qwen3;

TEST(ModelConfig, PresetsMatchPublishedQwen3) {
  struct Row { const char* name; std::int64_t hidden, inter, layers, heads; bool tied; double billions; };
  // Parameter counts from the Hugging Face model cards (total, embeddings included, tied counted once).
  const Row rows[] = {{"0.6B", 1024, 3072, 28, 16, true, 0.596}, {"1.7B", 2048, 6144, 28, 16, true, 1.72},
                      {"4B", 2560, 9728, 36, 32, true, 4.02},    {"8B", 4096, 12288, 36, 32, false, 8.19},
                      {"14B", 5120, 17408, 40, 40, false, 14.77}, {"32B", 5120, 25600, 64, 64, false, 32.76}};
  for (auto& r : rows) {
    auto c = model_preset(r.name);
    EXPECT_EQ(c.hidden_size, r.hidden) << r.name;
    EXPECT_EQ(c.intermediate_size, r.inter) << r.name;
    EXPECT_EQ(c.num_layers, r.layers) << r.name;
    EXPECT_EQ(c.num_heads, r.heads) << r.name;
    EXPECT_EQ(c.tie_word_embeddings, r.tied) << r.name;
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.vocab_size, 151936);
    EXPECT_NEAR(c.parameter_count() / 1e9, r.billions, 0.01 * r.billions) << r.name;
    c.validate();
  }
}

TEST(ModelConfig, UnknownPresetListsValidNames) {
  try {
    model_preset("7B");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("7B"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("tiny, 0.6B, 1.7B, 4B, 8B, 14B, 32B"), std::string::npos);
  }
}

TEST(ModelConfig, FlopsFormula) {
  auto c = model_preset("tiny");
  // 6·matmul weights·S + 6·L·heads·hd·S², the output projection counted although tied.
  const double w = 4 * (64 * 128 + 2 * 64 * 64 + 128 * 64 + 3 * 64 * 192) + 512 * 64;
  EXPECT_DOUBLE_EQ(c.training_flops_per_sequence(100), 6 * w * 100 + 6.0 * 4 * 8 * 16 * 100 * 100);
}

TEST(ModelConfig, FileRoundTripAndErrors) {
  const char* path = "model_config_test.ini";
  {
    std::ofstream f(path);
    f << "# a small untied model\nname = small\nvocab_size = 300\nhidden_size = 32\nintermediate_size = 64\n"
         "num_hidden_layers = 2\nnum_attention_heads = 6\nnum_key_value_heads = 2\nhead_dim = 8\n"
         "rope_theta = 10000\nrms_norm_eps = 1e-5\ntie_word_embeddings = false\n";
  }
  auto c = load_model_config(path);
  EXPECT_EQ(c.name, "small");
  EXPECT_EQ(c.num_heads, 6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000);
  {
    std::ofstream f(path);
    f << "vocab_size = 300\nhidden_size = 32\nintermediate_size = 64\nnum_hidden_layers = 2\n"
         "num_attention_heads = 6\nnum_key_value_heads = 4\nhead_dim = 8\n";
  }
  EXPECT_THROW(load_model_config(path), UsageError);  // 6 heads not a multiple of 4 kv heads
  {
    std::ofstream f(path);
    f << "vocab_size = 300\nhiden_size = 32\n";
  }
  EXPECT_THROW(load_model_config(path), UsageError);  // typo'd key, and missing required keys
  std::remove(path);
  EXPECT_THROW(load_model_config("/nonexistent/model.ini"), UsageError);
}
