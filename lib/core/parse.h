// Text from the command line or a config file into numbers, strictly: the whole text, no wrap-around.
#pragma once
#include <charconv>
#include <cstdint>
#include <string>
#include <vector>

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

// Throws UsageError "--opt: invalid value 'x' (valid: a, b, c)" unless value is one of choices.
inline void require_choice(const std::string& option, const std::string& value, const std::vector<std::string>& choices) {
  std::string valid;
  for (const auto& c : choices) {
    if (c == value) return;
    if (!valid.empty()) valid += ", ";
    valid += c;
  }
  throw UsageError(option + ": invalid value '" + value + "' (valid: " + valid + ")");
}

}  // namespace qwen3
