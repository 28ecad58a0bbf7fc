// Strict INI reader (see ini.h).
#include "config/ini.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <numeric>

#include "core/error.h"

namespace qwen3 {
namespace {
std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Insertions, deletions and substitutions that turn a into b (one row of the dynamic programme at a time); '_' and
// '-' count as the same character (global_batch is global-batch).
bool is_dash(char c) { return c == '_' || c == '-'; }

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), std::size_t{0});
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      const bool same = a[i - 1] == b[j - 1] || (is_dash(a[i - 1]) && is_dash(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string closest_key(const std::string& key, const std::vector<std::string>& candidates) {
  const std::size_t allowed = std::max<std::size_t>(2, key.size() / 3);
  std::string best;
  std::size_t best_distance = allowed + 1;
  for (const auto& c : candidates) {
    const auto d = edit_distance(key, c);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

std::string unknown_key_message(const std::string& key, const std::vector<std::string>& candidates) {
  // Keys are flat: "run.model" comes from a line under a [run] section, which these files do not use.
  const auto dot = key.find('.');
  if (dot != std::string::npos && dot > 0 && dot + 1 < key.size()) {
    const std::string section = key.substr(0, dot), name = key.substr(dot + 1);
    const bool known = std::find(candidates.begin(), candidates.end(), name) != candidates.end();
    const auto nearest = known ? name : closest_key(name, candidates);
    return "unknown key '" + key + "': this file has no sections (the line [" + section +
           "] is not used; write its keys before any [section] line, or drop it)" +
           (nearest.empty() ? "" : known ? " — '" + name + "' is a valid key" : " (did you mean '" + nearest + "'?)");
  }
  const auto nearest = closest_key(key, candidates);
  return "unknown key '" + key + "'" + (nearest.empty() ? "" : " (did you mean '" + nearest + "'?)");
}

IniFile read_ini(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw UsageError(what + " '" + path + "' cannot be read");
  std::map<std::string, std::string> values;
  std::string line, section;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') throw UsageError(what + " '" + path + "' line " + std::to_string(lineno) + ": malformed section");
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw UsageError(what + " '" + path + "' line " + std::to_string(lineno) + ": expected 'key = value', got '" + line + "'");
    std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (key.empty()) throw UsageError(what + " '" + path + "' line " + std::to_string(lineno) + ": empty key");
    if (!section.empty()) key = section + "." + key;
    values[key] = value;
  }
  return IniFile(path, std::move(values));
}

const std::string* IniFile::find(const std::string& key, bool required) {
  used_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) {
    if (required) {
      for (const auto& [k, v] : values_)  // the key under a [section]: say that sections are not used
        if (k.size() > key.size() && k.compare(k.size() - key.size() - 1, std::string::npos, "." + key) == 0)
          throw UsageError("'" + source_ + "': missing required key '" + key + "' (it is under [" +
                           k.substr(0, k.size() - key.size() - 1) + "]: this file has no sections; drop that line)");
      throw UsageError("'" + source_ + "': missing required key '" + key + "'");
    }
    return nullptr;
  }
  return &it->second;
}

std::string IniFile::get_string(const std::string& key, const std::string& fallback) {
  auto* v = find(key, false);
  return v ? *v : fallback;
}

// The whole of text as a number by parse (strtoll, strtod): false when anything is left over or it is out of range.
template <typename T, typename Parse>
bool parse_whole(const std::string& text, Parse parse, T* out) {
  errno = 0;
  char* end = nullptr;
  *out = static_cast<T>(parse(text.c_str(), &end));
  return !text.empty() && *end == '\0' && errno == 0;
}

std::int64_t IniFile::get_int(const std::string& key, std::int64_t fallback, bool required) {
  auto* v = find(key, required);
  std::int64_t x = fallback;
  if (v && !parse_whole(*v, [](const char* s, char** e) { return std::strtoll(s, e, 10); }, &x))
    throw UsageError("'" + source_ + "': key '" + key + "' must be an integer, got '" + *v + "'");
  return x;
}

double IniFile::get_double(const std::string& key, double fallback) {
  auto* v = find(key, false);
  double x = fallback;
  if (v && !parse_whole(*v, [](const char* s, char** e) { return std::strtod(s, e); }, &x))
    throw UsageError("'" + source_ + "': key '" + key + "' must be a number, got '" + *v + "'");
  return x;
}

bool IniFile::get_bool(const std::string& key, bool fallback) {
  auto* v = find(key, false);
  if (!v) return fallback;
  if (*v == "true" || *v == "1" || *v == "yes") return true;
  if (*v == "false" || *v == "0" || *v == "no") return false;
  throw UsageError("'" + source_ + "': key '" + key + "' must be true or false, got '" + *v + "'");
}

void IniFile::reject_unused() const {
  for (auto& [k, v] : values_)
    if (!used_.count(k))
      throw UsageError("'" + source_ + "': " + unknown_key_message(k, std::vector<std::string>(used_.begin(), used_.end())));
}

}  // namespace qwen3
