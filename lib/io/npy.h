// NumPy .npy files (format versions 1.0, 2.0, 3.0): the header only — magic, version, and the dict literal giving
// dtype, order and shape. What an array may be used for is the caller's decision (io/dataset.cpp: token ids).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

// "\x93NUMPY": the first six bytes of every .npy file.
bool has_npy_magic(const unsigned char* bytes, std::size_t size);

struct NpyHeader {
  int major = 0, minor = 0;          // format version
  std::string descr;                 // dtype as NumPy writes it, e.g. "<i4"; a structured dtype is kept as its text
  bool fortran_order = false;
  std::vector<std::int64_t> shape;   // () for a scalar
  std::int64_t data_offset = 0;      // bytes before the first element
  std::int64_t item_bytes() const;   // from descr ("<i8" → 8); 0 when descr is not a plain "<kN" dtype
  std::int64_t count() const;        // product of shape (1 for a scalar)
  std::string shape_text() const;    // as Python prints it: "(10,)", "(3, 4)", "()"
};

// Reads and parses the header of a file that starts with the magic. Throws InputError naming `what` and the path when
// the version is not 1.0/2.0/3.0 or the header is truncated or not the dict NumPy writes.
NpyHeader read_npy_header(const std::string& path, const std::string& what);

// "<i4" → "little-endian int32", ">f8" → "big-endian float64", "|u1" → "uint8"; other text is returned unchanged.
std::string describe_npy_dtype(const std::string& descr);

}  // namespace qwen3
