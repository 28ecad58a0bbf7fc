// Shared main() wrapper for every executable: one clear line on error, the documented exit code.
#pragma once
#include <functional>

namespace qwen3 {

// Runs body(); on qwen3::Error prints "<program>: error: <message>" to stderr and returns its exit code,
// on any other exception returns ExitCode::internal. A null program prints nothing (ranks other than 0). The body returns the exit code on success paths.
int run_main(const char* program, const std::function<int()>& body);

}  // namespace qwen3
