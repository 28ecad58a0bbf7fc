// Implementation of the Megatron-LM / NeMo indexed dataset reader (see megatron_indexed.h and docs/datasets.md).
//
// The index, all little-endian: "MMIDIDX\0\0" (9 bytes), version uint64 (1), dtype code uint8, sequence count S
// uint64, document-index count D uint64, then int32 sequence lengths [S], int64 sequence pointers [S] (byte offsets
// into the .bin), int64 document indices [D] (sequence indices where documents begin, the first 0, the last S); a
// multimodal index adds an int8 mode per sequence.
#include "io/megatron_indexed.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "core/error.h"

namespace qwen3 {
namespace {

namespace fs = std::filesystem;

constexpr unsigned char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
constexpr std::int64_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;
constexpr std::int64_t kBlock = std::int64_t{1} << 20;  // index entries read at once

struct DtypeInfo {
  const char* name;
  int bytes;
  bool is_signed;
  bool integer;
};

// Megatron's codes (DType in indexed_dataset.py); 0 and codes past 8 are not Megatron's.
const DtypeInfo* dtype_of_code(int code) {
  static const DtypeInfo kCodes[] = {{"uint8", 1, false, true},   {"int8", 1, true, true},
                                     {"int16", 2, true, true},    {"int32", 4, true, true},
                                     {"int64", 8, true, true},    {"float64", 8, true, false},
                                     {"float32", 4, true, false}, {"uint16", 2, false, true}};
  return code >= 1 && code <= 8 ? &kCodes[code - 1] : nullptr;
}

std::uint64_t le_u64(const unsigned char* b) {
  std::uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | b[k];
  return v;
}
std::int32_t le_i32(const unsigned char* b) {
  std::uint32_t v = 0;
  for (int k = 3; k >= 0; --k) v = (v << 8) | b[k];
  return static_cast<std::int32_t>(v);
}

std::int64_t size_of(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(what + " '" + path + "' does not exist");
  if (!fs::is_regular_file(path, ec)) throw InputError(what + " '" + path + "' is not a regular file");
  const auto size = fs::file_size(path, ec);
  if (ec) throw InputError("cannot read the size of " + what + " '" + path + "': " + ec.message());
  return static_cast<std::int64_t>(size);
}

// Reads `count` bytes at `offset` of an open index.
void read_at(std::ifstream& in, const std::string& where, std::int64_t offset, std::int64_t count, unsigned char* out) {
  in.clear();
  in.seekg(offset);
  in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(count));
  if (!in || in.gcount() != static_cast<std::streamsize>(count))
    throw InputError(where + "read failed at byte " + std::to_string(offset) + " (file changed or unreadable?)");
}

}  // namespace

bool has_megatron_index_magic(const unsigned char* bytes, std::size_t size) {
  return size >= sizeof kMagic && std::memcmp(bytes, kMagic, sizeof kMagic) == 0;
}

std::string megatron_prefix(const std::string& given) {
  for (const char* ext : {".idx", ".bin"})
    if (given.size() > 4 && given.compare(given.size() - 4, 4, ext) == 0) return given.substr(0, given.size() - 4);
  return given;
}

std::string megatron_pair_of(const std::string& path) {
  const auto prefix = megatron_prefix(path);
  if (prefix == path) return "";
  std::ifstream in(prefix + ".idx", std::ios::binary);
  unsigned char head[sizeof kMagic] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  if (!in || !has_megatron_index_magic(head, sizeof head)) return "";
  return "belongs to the Megatron-LM/NeMo indexed dataset '" + prefix + "' (" + prefix + ".idx + " + prefix +
         ".bin): pack the pair with --megatron " + prefix;
}

namespace {

// The counts against the index's size, before trusting them with any allocation: {S, D}.
std::pair<std::int64_t, std::int64_t> check_counts(const std::string& file, std::int64_t idx_bytes,
                                                   std::uint64_t sequences, std::uint64_t documents) {
  const std::string where = file + ": ";
  const auto limit = static_cast<std::uint64_t>(idx_bytes);
  const auto counts = "S = " + std::to_string(sequences) + " sequences, D = " + std::to_string(documents) +
                      " document indices";
  if (sequences > limit || documents > limit)
    throw InputError(where + "its header says " + counts + ", more than its " + std::to_string(idx_bytes) +
                     " bytes can hold (truncated or damaged?)");
  const auto S = static_cast<std::int64_t>(sequences), D = static_cast<std::int64_t>(documents);
  const auto expected = kHeaderBytes + 12 * S + 8 * D;
  if (idx_bytes == expected + S && S > 0)
    throw InputError(file + " has a mode byte per sequence (a multimodal dataset); pack takes text token ids only");
  if (idx_bytes != expected)
    throw InputError(file + " has " + std::to_string(idx_bytes) + " bytes but its header (" + counts + ") needs " +
                     std::to_string(expected) + " (34 + 4 S + 8 S + 8 D): truncated or damaged");
  if (D == 0) throw InputError(file + " has no document indices (expected at least the first, 0)");
  return {S, D};
}

// The header's checks (magic, size, version, a dtype that holds token ids), the dtype into index; returns the
// header's counts {S sequences, D document indices}, checked against the index's size.
std::pair<std::int64_t, std::int64_t> read_header(std::ifstream& in, std::int64_t idx_bytes, MegatronIndex& index) {
  const std::string file = "Megatron index '" + index.idx_path + "'", where = file + ": ";
  unsigned char header[kHeaderBytes];
  const auto head = std::min<std::int64_t>(idx_bytes, kHeaderBytes);
  read_at(in, where, 0, head, header);
  if (std::memcmp(header, kMagic, static_cast<std::size_t>(std::min<std::int64_t>(head, sizeof kMagic))) != 0)
    throw InputError(file + " does not start with MMIDIDX (not the index of a Megatron-LM or NeMo indexed dataset)");
  if (idx_bytes < kHeaderBytes)
    throw InputError(file + " is truncated: " + std::to_string(idx_bytes) + " bytes, shorter than its " +
                     std::to_string(kHeaderBytes) + "-byte header");
  const auto version = le_u64(header + 9);
  if (version != 1)
    throw InputError(where + "version " + std::to_string(version) + " is not supported (this build reads version 1)");
  const int code = header[17];
  const DtypeInfo* dtype = dtype_of_code(code);
  if (dtype == nullptr)
    throw InputError(where + "dtype code " + std::to_string(code) + " is not one of Megatron's (1 to 8)");
  if (!dtype->integer)
    throw InputError(where + "its tokens are " + dtype->name + " (dtype code " + std::to_string(code) +
                     "), which cannot hold token ids; pack takes uint8, int8, int16, uint16, int32 or int64");
  index.dtype_code = code;
  index.dtype = dtype->name;
  index.item_bytes = dtype->bytes;
  index.is_signed = dtype->is_signed;
  return check_counts(file, idx_bytes, le_u64(header + 18), le_u64(header + 26));
}

// Sequence lengths and pointers, block by block: each sequence must start where the previous one ends. Returns where
// each sequence starts in tokens, [S+1] (the last: the tokens in all).
std::vector<std::int64_t> read_sequence_starts(std::ifstream& in, const std::string& where, std::int64_t S,
                                               std::int64_t item_bytes) {
  std::vector<std::int64_t> sequence_start(static_cast<std::size_t>(S) + 1, 0);  // [S+1] in tokens
  std::vector<unsigned char> lengths, pointers;
  for (std::int64_t s0 = 0; s0 < S; s0 += kBlock) {
    const auto n = std::min(kBlock, S - s0);
    lengths.resize(static_cast<std::size_t>(4 * n));
    pointers.resize(static_cast<std::size_t>(8 * n));
    read_at(in, where, kHeaderBytes + 4 * s0, 4 * n, lengths.data());
    read_at(in, where, kHeaderBytes + 4 * S + 8 * s0, 8 * n, pointers.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const auto s = s0 + i;
      const auto length = le_i32(lengths.data() + 4 * i);
      if (length < 0)
        throw InputError(where + "sequence " + std::to_string(s) + " has length " + std::to_string(length));
      const auto pointer = static_cast<std::int64_t>(le_u64(pointers.data() + 8 * i));
      const auto start = sequence_start[static_cast<std::size_t>(s)];
      if (pointer != start * item_bytes)
        throw InputError(where + "sequence " + std::to_string(s) + " starts at byte " + std::to_string(pointer) +
                         " of the .bin, not at byte " + std::to_string(start * item_bytes) +
                         " where the sequences before it end (pack reads sequences stored back to back, as "
                         "Megatron-LM writes them)");
      sequence_start[static_cast<std::size_t>(s) + 1] = start + length;
    }
  }
  return sequence_start;
}

// Document indices: sequence indices where documents begin, 0 first, S last, never decreasing. Returns each
// document's first token ([D]: the last is the tokens in all).
std::vector<std::int64_t> read_document_offsets(std::ifstream& in, const std::string& where, std::int64_t S,
                                                std::int64_t D, const std::vector<std::int64_t>& sequence_start) {
  std::vector<std::int64_t> offsets;
  std::vector<unsigned char> raw;
  offsets.reserve(static_cast<std::size_t>(D));
  std::int64_t previous = 0;
  for (std::int64_t d0 = 0; d0 < D; d0 += kBlock) {
    const auto n = std::min(kBlock, D - d0);
    raw.resize(static_cast<std::size_t>(8 * n));
    read_at(in, where, kHeaderBytes + 12 * S + 8 * d0, 8 * n, raw.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const auto d = d0 + i;
      const auto value = static_cast<std::int64_t>(le_u64(raw.data() + 8 * i));
      if (d == 0 && value != 0)
        throw InputError(where + "the first document index is " + std::to_string(value) + ", not 0");
      if (value < previous || value > S)
        throw InputError(where + "document index " + std::to_string(d) + " (" + std::to_string(value) + ") " +
                         (value > S ? "is past the last sequence (" + std::to_string(S) + ")"
                                    : "is smaller than document index " + std::to_string(d - 1) + " (" +
                                          std::to_string(previous) + "); document indices must be non-decreasing"));
      offsets.push_back(sequence_start[static_cast<std::size_t>(value)]);
      previous = value;
    }
  }
  if (previous != S)
    throw InputError(where + "the last document index is " + std::to_string(previous) + " but there are " +
                     std::to_string(S) + " sequences (the last document is not closed)");
  return offsets;
}

}  // namespace

MegatronIndex read_megatron_index(const std::string& prefix) {
  MegatronIndex index;
  index.idx_path = prefix + ".idx";
  index.bin_path = prefix + ".bin";
  const std::string where = "Megatron index '" + index.idx_path + "': ";
  const auto idx_bytes = size_of(index.idx_path, "Megatron index");
  const auto bin_bytes = size_of(index.bin_path, "Megatron data file");
  std::ifstream in(index.idx_path, std::ios::binary);
  if (!in) throw InputError("Megatron index '" + index.idx_path + "' cannot be opened for reading");
  const auto [S, D] = read_header(in, idx_bytes, index);
  const auto sequence_start = read_sequence_starts(in, where, S, index.item_bytes);
  index.num_sequences = S;
  index.num_tokens = sequence_start.back();
  if (bin_bytes != index.num_tokens * index.item_bytes)
    throw InputError("Megatron data file '" + index.bin_path + "' has " + std::to_string(bin_bytes) +
                     " bytes but its index '" + index.idx_path + "' describes " + std::to_string(index.num_tokens) +
                     " tokens of " + index.dtype + " (" + std::to_string(index.num_tokens * index.item_bytes) +
                     " bytes): the pair does not match (a truncated .bin, or the index of another file?)");
  index.document_offsets = read_document_offsets(in, where, S, D, sequence_start);
  return index;
}

}  // namespace qwen3
