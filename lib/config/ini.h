// Minimal strict INI reader for model config files: key = value lines, '#'/';' comments, unknown keys rejected (naming
// the closest known key, which the run-config parser of app/common uses too).
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace qwen3 {

class IniFile {
 public:
  IniFile(std::string source, std::map<std::string, std::string> values) : source_(std::move(source)), values_(std::move(values)) {}
  // Getters fall back to the default when absent; a malformed value throws UsageError naming key and file.
  std::string get_string(const std::string& key, const std::string& fallback);
  std::int64_t get_int(const std::string& key, std::int64_t fallback, bool required = false);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  // Throws UsageError naming any key that no getter asked for (a typo should not pass silently) and the asked-for
  // key closest to it.
  void reject_unused() const;

 private:
  const std::string* find(const std::string& key, bool required);
  std::string source_;
  std::map<std::string, std::string> values_;
  std::set<std::string> used_;
};

// Reads the file; keys inside a [section] are stored as "section.key". Throws UsageError if unreadable or malformed.
IniFile read_ini(const std::string& path, const std::string& what);

// The candidate nearest to key by edit distance (Levenshtein; '_' and '-' alike), when near enough to be a
// misspelling of it: at most max(2, key length / 3) edits. Empty when none is.
std::string closest_key(const std::string& key, const std::vector<std::string>& candidates);

// "unknown key 'golbal-batch' (did you mean 'global-batch'?)", or "unknown key 'x'" when no candidate is close. A key
// "section.name" (a line under [section]) says that the file has no sections.
std::string unknown_key_message(const std::string& key, const std::vector<std::string>& candidates);

}  // namespace qwen3
