// Safetensors, Hugging Face's weight format: an 8-byte little-endian header length N, N bytes of JSON naming each
// tensor's dtype, shape and byte range ({"name": {"dtype": "BF16", "shape": [out, in], "data_offsets": [b, e]}, …,
// "__metadata__": {…}}), then the raw little-endian tensor bytes, ranges relative to the end of the header.
// Reading takes F32, BF16 and F16 (converted to float32); writing produces F32 or BF16 (round to nearest even).
// Every malformed file is refused with an InputError naming the file and the problem.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace qwen3 {

struct SafetensorInfo {
  std::string dtype;                 // F32, BF16 or F16
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte range in the data section
  std::int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Reads and checks the header: its JSON, every dtype, shape and range (inside the file, the size of the shape, no
  // two tensors overlapping).
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorInfo>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const SafetensorInfo& info(const std::string& name) const;  // InputError when absent
  std::vector<float> read(const std::string& name) const;     // float32 values, row-major

 private:
  std::string path_;
  std::uint64_t data_start_ = 0;
  std::map<std::string, SafetensorInfo> tensors_;
};

// Writes one file tensor by tensor: the header is written from the names and shapes first, then each tensor's values
// as they are passed, in the order given. dtype: "F32" or "BF16".
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    std::vector<std::int64_t> shape;
  };
  SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries, const std::string& dtype);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  // The next tensor's values (entries' order); throws InternalError on a size mismatch.
  void write(const std::vector<float>& values);
  // Flushes and closes; throws OutputError if the file could not be written completely.
  void close();
  static std::int64_t element_bytes(const std::string& dtype);

 private:
  std::string path_, dtype_;
  std::vector<Entry> entries_;
  std::size_t next_ = 0;
  std::FILE* f_ = nullptr;
};

}  // namespace qwen3
