// Numbers as people write them: the shortest text that reads back to the same double (0.0003, not
// 0.00029999999999999997 nor 3e-04), for --help defaults, messages and the results file's /config; and parameter
// counts in the units people use (0.28 M, 1.72 B).
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace qwen3 {

// Shortest round-trip digits (std::to_chars), laid out like Python's repr: plain decimals for magnitudes in
// [1e-4, 1e16) — 0.0003, 0.95, 1, 120 — and scientific notation outside, exponent unpadded: 3e-5, 1e-8, 2.5e20.
inline std::string format_shortest(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);  // "3e-04", "1.5e+00"
  const std::string sci(buf, r.ptr);
  if (!std::isfinite(v) || v == 0) return v == 0 ? "0" : sci;
  const auto e = sci.find('e');
  const int exponent = std::stoi(sci.substr(e + 1));
  if (exponent >= -4 && exponent < 16) {
    r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);  // shortest round trip in fixed form
    return std::string(buf, r.ptr);
  }
  return sci.substr(0, e) + "e" + std::to_string(exponent);
}

// "0.28 M" below a billion parameters, "1.72 B" from there: three significant digits, at most two decimals.
inline std::string format_parameter_count(std::int64_t n) {
  const bool billions = n >= 999'500'000;  // what would print as "1000 M" is "1.00 B"
  const double v = static_cast<double>(n) / (billions ? 1e9 : 1e6);
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, billions ? "B" : "M");
  return buf;
}

}  // namespace qwen3
