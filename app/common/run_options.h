// qwen3-pretrain's command line and INI config file → a RunConfig (command line overrides the file).
#pragma once
#include <optional>

#include "train/run_config.h"

namespace qwen3 {

// Returns nullopt after printing --help. Throws UsageError (one line naming the option and valid values).
// Checks every value that needs no knowledge of the job (world size checks are RunConfig::validate's).
std::optional<RunConfig> parse_run_options(int argc, char** argv);

}  // namespace qwen3
