// Golden check: reproduce Hugging Face's own numbers (any file of the qwen3-golden schema, tests/data/README.md)
// on a backend — logits, loss, every gradient, the weights after one AdamW step, and five training losses.
#pragma once
#include <string>
#include <vector>

#include "config/model_config.h"

namespace qwen3 {

struct GoldenRow {
  std::string quantity;  // "logits", "loss", "grad model.norm.weight", "after_step …", "train loss 3"
  double rel_error;      // ‖out − ref‖ / ‖ref‖
  double tolerance;
  bool pass() const { return rel_error <= tolerance; }
};

struct GoldenReport {
  ModelConfig config;
  std::string generator;
  std::vector<GoldenRow> rows;
  bool pass() const;
};

// Reads /config of a golden file into a ModelConfig (Hugging Face defaults where a key is absent).
ModelConfig read_golden_config(const std::string& path);

// Runs the whole check on `device`. Throws InputError for a file that does not follow the schema.
GoldenReport run_golden_check(const std::string& path, const std::string& device, double tolerance);

// Relative error ‖a − b‖ / ‖b‖ in double (‖a‖ when b is all zeros).
double relative_error(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace qwen3
