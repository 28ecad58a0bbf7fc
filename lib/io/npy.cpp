// Reader of the NumPy .npy header (see npy.h; the format: numpy.lib.format, versions 1.0, 2.0, 3.0).
#include "io/npy.h"

#include <cctype>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string_view>

#include "core/error.h"

namespace qwen3 {
namespace {

constexpr unsigned char kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr std::int64_t kMaxHeaderBytes = std::int64_t{1} << 20;  // NumPy writes a few hundred; more means corruption

// A cursor over the header's Python dict literal, e.g. {'descr': '<i4', 'fortran_order': False, 'shape': (10,), }.
// Accepts what NumPy writes: string keys; string, True/False, tuple-of-integers or [...] (structured dtype) values.
class HeaderDict {
 public:
  HeaderDict(std::string_view text, std::string where) : text_(text), where_(std::move(where)) {}

  void parse_into(NpyHeader& h) {
    expect('{');
    std::map<std::string, bool> seen;
    while (!accept('}')) {
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") h.descr = peek() == '[' ? bracketed() : string_literal();
      else if (key == "fortran_order") h.fortran_order = boolean();
      else if (key == "shape") h.shape = tuple_of_ints();
      else fail("unexpected key '" + key + "'");
      seen[key] = true;
      if (!accept(',')) {
        expect('}');
        break;
      }
    }
    for (const char* key : {"descr", "fortran_order", "shape"})
      if (!seen.count(key)) fail(std::string("no '") + key + "' key");
  }

 private:
  char peek() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }
  bool accept(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "' at byte " + std::to_string(pos_));
  }
  std::string string_literal() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string at byte " + std::to_string(pos_));
    const auto end = text_.find(quote, ++pos_);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string s(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  bool boolean() {
    peek();
    for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}})
      if (text_.substr(pos_, std::strlen(word)) == word) {
        pos_ += std::strlen(word);
        return value;
      }
    fail("expected True or False at byte " + std::to_string(pos_));
  }
  std::vector<std::int64_t> tuple_of_ints() {
    expect('(');
    std::vector<std::int64_t> values;
    while (!accept(')')) {
      peek();
      std::int64_t v = 0;
      const auto [ptr, ec] = std::from_chars(text_.data() + pos_, text_.data() + text_.size(), v);
      if (ec != std::errc() || v < 0) fail("expected a non-negative integer in the shape at byte " + std::to_string(pos_));
      pos_ = static_cast<std::size_t>(ptr - text_.data());
      values.push_back(v);
      if (!accept(',')) {
        expect(')');
        break;
      }
    }
    return values;
  }
  // A structured dtype's list, kept as text (nested brackets and quotes included) for the caller's message.
  std::string bracketed() {
    const auto start = pos_;
    int depth = 0;
    for (; pos_ < text_.size(); ++pos_) {
      depth += text_[pos_] == '[' ? 1 : text_[pos_] == ']' ? -1 : 0;
      if (depth == 0) return std::string(text_.substr(start, ++pos_ - start));
    }
    fail("unterminated '['");
  }
  [[noreturn]] void fail(const std::string& what) {
    throw InputError(where_ + "malformed .npy header (" + what + "): " + std::string(text_));
  }

  std::string_view text_;
  std::string where_;
  std::size_t pos_ = 0;
};

std::uint32_t little_endian(const unsigned char* b, int bytes) {
  std::uint32_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | b[k];
  return v;
}

// Reads exactly n bytes at the stream's position into out, or throws naming what was being read.
void read_exactly(std::ifstream& in, unsigned char* out, std::int64_t n, const std::string& where, const char* part) {
  in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
  if (in.gcount() != static_cast<std::streamsize>(n)) throw InputError(where + "truncated .npy file (ends inside its " + part + ")");
}

}  // namespace

bool has_npy_magic(const unsigned char* bytes, std::size_t size) {
  return size >= sizeof kMagic && std::memcmp(bytes, kMagic, sizeof kMagic) == 0;
}

std::int64_t NpyHeader::item_bytes() const {
  if (descr.size() < 3 || std::strchr("<>|=", descr[0]) == nullptr) return 0;
  std::int64_t n = 0;
  const auto [ptr, ec] = std::from_chars(descr.data() + 2, descr.data() + descr.size(), n);
  return ec == std::errc() && ptr == descr.data() + descr.size() ? n : 0;
}

std::int64_t NpyHeader::count() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string NpyHeader::shape_text() const {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

NpyHeader read_npy_header(const std::string& path, const std::string& what) {
  const std::string where = what + " '" + path + "': ";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(where + "cannot be opened for reading");
  unsigned char prefix[12] = {};
  read_exactly(in, prefix, 10, where, "preamble");
  NpyHeader h;
  h.major = prefix[6];
  h.minor = prefix[7];
  if (h.major < 1 || h.major > 3 || h.minor != 0)
    throw InputError(where + ".npy format version " + std::to_string(h.major) + "." + std::to_string(h.minor) +
                     " is not supported (this build reads 1.0, 2.0 and 3.0)");
  // Version 1.0: a 2-byte header length after the version; 2.0 and 3.0: 4 bytes.
  const int length_bytes = h.major == 1 ? 2 : 4;
  if (length_bytes == 4) read_exactly(in, prefix + 10, 2, where, "preamble");
  const std::int64_t header_bytes = little_endian(prefix + 8, length_bytes);
  if (header_bytes > kMaxHeaderBytes)
    throw InputError(where + ".npy header of " + std::to_string(header_bytes) + " bytes is implausible (corrupt file?)");
  std::string text(static_cast<std::size_t>(header_bytes), '\0');
  read_exactly(in, reinterpret_cast<unsigned char*>(text.data()), header_bytes, where, "header");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\0')) text.pop_back();
  HeaderDict(text, where).parse_into(h);
  h.data_offset = 8 + length_bytes + header_bytes;
  return h;
}

std::string describe_npy_dtype(const std::string& descr) {
  static const std::map<char, std::string> kinds = {{'i', "int"}, {'u', "uint"}, {'f', "float"}, {'c', "complex"}};
  NpyHeader h;
  h.descr = descr;
  const auto bytes = h.item_bytes();
  if (bytes == 0) return descr;
  const char kind = descr[1];
  std::string name;
  if (kinds.count(kind)) name = kinds.at(kind) + std::to_string(bytes * 8);
  else if (kind == 'b') name = "bool";
  else if (kind == 'U') name = "unicode string";
  else if (kind == 'S') name = "byte string";
  else if (kind == 'O') name = "Python object";
  else return descr;
  if (descr[0] == '<' && bytes > 1) return "little-endian " + name;
  if (descr[0] == '>' && bytes > 1) return "big-endian " + name;
  return name;
}

}  // namespace qwen3
