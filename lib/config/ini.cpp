// Strict INI reader (see ini.h).
#include "config/ini.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "core/error.h"

namespace qwen3 {
namespace {
std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}
}  // namespace

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
    if (required) throw UsageError("'" + source_ + "': missing required key '" + key + "'");
    return nullptr;
  }
  return &it->second;
}

std::string IniFile::get_string(const std::string& key, const std::string& fallback) {
  auto* v = find(key, false);
  return v ? *v : fallback;
}

std::int64_t IniFile::get_int(const std::string& key, std::int64_t fallback, bool required) {
  auto* v = find(key, required);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0)
    throw UsageError("'" + source_ + "': key '" + key + "' must be an integer, got '" + *v + "'");
  return x;
}

double IniFile::get_double(const std::string& key, double fallback) {
  auto* v = find(key, false);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || errno != 0)
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
    if (!used_.count(k)) throw UsageError("'" + source_ + "': unknown key '" + k + "'");
}

}  // namespace qwen3
