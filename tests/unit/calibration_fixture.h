// A calibration that lacks one preset's kernels, for the tests of what an unpriced prediction says (issue 28 item 6):
// the committed calibrations price every preset.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>

#include "cli_runner.h"
#include "train/calibration.h"

namespace qwen3::test {

// The committed h200 calibration beside the executables without 4B's kernels (every key of its hidden size 2560 or
// its gate|up width 19456 or down 9728), written to `dir`/h200-without-4B.json; returns its path.
inline std::string h200_calibration_without_4b(const std::filesystem::path& dir) {
  Calibration c = load_calibration(bin_dir() + "/calibration/h200.json");
  for (auto it = c.ops.begin(); it != c.ops.end();) {
    const std::string& k = it->first;
    const bool of_4b = k.find("2560") != std::string::npos || k.find("19456") != std::string::npos ||
                       k.find("9728") != std::string::npos;
    it = of_4b ? c.ops.erase(it) : std::next(it);
  }
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "h200-without-4B.json").string();
  std::ofstream(path) << calibration_json(c);
  return path;
}

}  // namespace qwen3::test
