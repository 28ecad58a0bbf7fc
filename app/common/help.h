// The exit-code section of every tool's --help, from the one table in core/error.h (kExitCodes).
#pragma once
#include <string>
#include <vector>

#include "core/error.h"

namespace qwen3 {

// One exit code a tool can end with; note (optional) says what it means for that tool in particular.
struct ToolExitCode {
  ExitCode code;
  std::string note = {};
};

// "Exit codes (docs/exit-codes.md):\n  0  success\n  2  usage: ...\n     <note>\n" — each code's line is the table's
// meaning, its note on the next line.
std::string exit_codes_help(const std::vector<ToolExitCode>& codes);

}  // namespace qwen3
