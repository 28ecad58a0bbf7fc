// Shared main() wrapper for every executable: one clear line on error, the documented exit code.
#pragma once
#include <functional>

namespace qwen3 {

// Runs body(); on qwen3::Error prints "<program>: error: <message>" to stderr and returns its exit code,
// on any other exception returns ExitCode::internal. A null program prints nothing (ranks other than 0). The body returns the exit code on success paths.
// A message that begins with "<program>: " itself loses that prefix (never "qwen3-x: error: qwen3-x: ...").
int run_main(const char* program, const std::function<int()>& body);

// message without a leading "<program>: " (message itself when it has none, or program is null).
const char* without_program_prefix(const char* program, const char* message);

}  // namespace qwen3
