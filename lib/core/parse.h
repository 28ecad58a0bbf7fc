// Text from the command line or a config file into numbers, strictly: the whole text, no wrap-around.
#pragma once
#include <charconv>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace qwen3 {

// A 64-bit unsigned seed. Boost's own unsigned parsing accepts "-1" (wrapping it around), so seeds come as text.
inline std::uint64_t parse_seed(const std::string& option, const std::string& text) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end)
    throw UsageError(option + " '" + text + "' is not valid (expected an integer in [0, 18446744073709551615])");
  return value;
}

}  // namespace qwen3
