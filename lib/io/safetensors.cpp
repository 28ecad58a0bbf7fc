// Safetensors reading and writing (see safetensors.h). JSON through nlohmann/json.
#include "io/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "ops/cpu/bf16.h"

namespace qwen3 {
namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;  // what the safetensors library itself accepts

float bf16_to_float(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -24);               // zero and subnormals
  else if (exp == 31) v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else v = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

}  // namespace

std::int64_t SafetensorInfo::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::int64_t SafetensorsWriter::element_bytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto fail = [&](const std::string& why) { throw InputError("safetensors file '" + path + "': " + why); };
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cannot be opened");
  const auto size = static_cast<std::uint64_t>(in.tellg());
  if (size < 8) fail("shorter than its 8-byte header length");
  in.seekg(0);
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    fail("header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(size) + " bytes)");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) fail("header cannot be read");
  data_start_ = 8 + header_len;
  const std::uint64_t data_size = size - data_start_;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail("header is not a JSON object");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") continue;
    auto bad = [&](const std::string& why) { fail("tensor '" + name + "': " + why); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("needs dtype, shape and data_offsets");
    SafetensorInfo t;
    try {
      t.dtype = v.at("dtype").get<std::string>();
      t.shape = v.at("shape").get<std::vector<std::int64_t>>();
      const auto off = v.at("data_offsets").get<std::vector<std::uint64_t>>();
      if (off.size() != 2) bad("data_offsets must be [begin, end]");
      t.begin = off[0], t.end = off[1];
    } catch (const nlohmann::json::exception& e) {
      bad(std::string("malformed entry (") + e.what() + ")");
    }
    const std::int64_t elem = SafetensorsWriter::element_bytes(t.dtype);
    if (elem == 0) bad("dtype '" + t.dtype + "' is not one of F32, BF16, F16");
    std::uint64_t capacity = data_size / static_cast<std::uint64_t>(elem);  // elements the data section can hold
    for (auto d : t.shape) {
      if (d < 0) bad("negative dimension");
      if (d > 0 && static_cast<std::uint64_t>(d) > capacity) bad("shape larger than the file (truncated file?)");
      if (d > 0) capacity /= static_cast<std::uint64_t>(d);  // numel stays within the data section: no overflow
    }
    if (t.end < t.begin || t.end > data_size)
      bad("bytes [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ") outside the data section of " +
          std::to_string(data_size) + " bytes (truncated file?)");
    if (t.end - t.begin != static_cast<std::uint64_t>(t.numel() * elem))
      bad("holds " + std::to_string(t.end - t.begin) + " bytes, its shape and dtype need " + std::to_string(t.numel() * elem));
    ranges.emplace_back(t.begin, t.end);
    tensors_.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("two tensors share bytes of the data section");
}

const SafetensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw InputError("safetensors file '" + path_ + "' has no tensor '" + name + "'");
  return it->second;
}

std::vector<float> SafetensorsFile::read(const std::string& name) const {
  const SafetensorInfo& t = info(name);
  std::ifstream in(path_, std::ios::binary);
  std::vector<unsigned char> raw(t.end - t.begin);
  in.seekg(static_cast<std::streamoff>(data_start_ + t.begin));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  if (!in) throw InputError("safetensors file '" + path_ + "': tensor '" + name + "' cannot be read");
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) {  // little-endian on disk and on x86-64 / aarch64 hosts
    if (t.dtype == "F32") {
      std::memcpy(&out[i], raw.data() + 4 * i, 4);
    } else {
      std::uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      out[i] = t.dtype == "BF16" ? bf16_to_float(h) : f16_to_float(h);
    }
  }
  return out;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries, const std::string& dtype)
    : path_(path), dtype_(dtype), entries_(entries) {
  if (dtype != "F32" && dtype != "BF16") throw InternalError("safetensors writer: dtype " + dtype + " (F32 or BF16)");
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  std::uint64_t offset = 0;
  for (const auto& e : entries) {
    std::int64_t n = 1;
    for (auto d : e.shape) n *= d;
    const std::uint64_t bytes = static_cast<std::uint64_t>(n * element_bytes(dtype));
    header[e.name] = {{"dtype", dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  f_ = std::fopen(path.c_str(), "wb");
  if (f_ == nullptr) throw OutputError("cannot create '" + path + "'");
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((static_cast<std::uint64_t>(text.size()) >> (8 * i)) & 0xff);
  if (std::fwrite(len, 1, 8, f_) != 8 || std::fwrite(text.data(), 1, text.size(), f_) != text.size())
    throw OutputError("cannot write '" + path + "'");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f_ != nullptr) std::fclose(f_);
}

void SafetensorsWriter::write(const std::vector<float>& values) {
  if (next_ >= entries_.size()) throw InternalError("safetensors writer: more tensors than entries");
  const Entry& e = entries_[next_++];
  std::int64_t n = 1;
  for (auto d : e.shape) n *= d;
  if (static_cast<std::int64_t>(values.size()) != n)
    throw InternalError("safetensors writer: tensor '" + e.name + "' has " + std::to_string(values.size()) +
                        " values, its shape " + std::to_string(n));
  bool ok = true;
  if (dtype_ == "F32") {
    ok = std::fwrite(values.data(), sizeof(float), values.size(), f_) == values.size();
  } else {
    std::vector<std::uint16_t> h(values.size());
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = cpu::bf16_bits(values[i]);  // round to nearest even (ops/cpu/bf16.h)
    ok = std::fwrite(h.data(), sizeof(std::uint16_t), h.size(), f_) == h.size();
  }
  if (!ok) throw OutputError("cannot write '" + path_ + "' (disk full?)");
}

void SafetensorsWriter::close() {
  if (next_ != entries_.size())
    throw InternalError("safetensors writer: " + std::to_string(entries_.size() - next_) + " tensors not written");
  const bool ok = std::fflush(f_) == 0 && std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok) throw OutputError("cannot finish writing '" + path_ + "' (disk full?)");
}

}  // namespace qwen3
