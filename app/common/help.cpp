// The exit-code section of --help (see help.h).
#include "common/help.h"

namespace qwen3 {

std::string exit_codes_help(const std::vector<ToolExitCode>& codes) {
  std::string text = "Exit codes (docs/exit-codes.md):\n";
  for (const auto& c : codes) {
    text += "  " + std::to_string(static_cast<int>(c.code)) + "  " + exit_code_meaning(c.code) + "\n";
    if (!c.note.empty()) text += "     " + c.note + "\n";
  }
  return text;
}

}  // namespace qwen3
