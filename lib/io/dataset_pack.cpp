// qwen3-dataset pack: a token stream (raw ids, .npy, or a Megatron indexed dataset) packed or cropped into the
// dataset format's buckets (see dataset.h and docs/datasets.md).
#include "io/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "core/error.h"
#include "io/dataset_writing.h"
#include "io/megatron_indexed.h"
#include "io/npy.h"

namespace qwen3 {
namespace {

namespace fs = std::filesystem;
using namespace dataset_writing;

// How the token ids lie in a tokens file: where they start, how wide each is, and what the file is.
struct TokenEncoding {
  std::string format = "raw";    // "raw" (flat little-endian ids), "npy" or "megatron" (an indexed dataset's .bin)
  std::string dtype = "int32";   // uint16, int32, uint32; a .npy's also int64; a Megatron index's also uint8/int8/int16
  int bytes = 4;                 // per token
  bool is_signed = true;
  std::int64_t data_offset = 0;  // bytes before the first token (the .npy header)
  std::int64_t num_tokens = 0;
};

constexpr const char* kRawDtypes = "uint16, int32, uint32";
constexpr const char* kExpectedFormats = "pack takes raw int32 or .npy token ids";

// A raw dtype name → its encoding; "" means the default, int32.
TokenEncoding raw_encoding(const std::string& dtype) {
  TokenEncoding e;
  e.dtype = dtype.empty() ? "int32" : dtype;
  if (e.dtype == "uint16") e.bytes = 2;
  else if (e.dtype != "int32" && e.dtype != "uint32")
    throw UsageError("--dtype '" + dtype + "' is not valid (valid: " + kRawDtypes + ")");
  e.is_signed = e.dtype == "int32";
  return e;
}

std::int64_t file_bytes(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(what + " '" + path + "' does not exist");
  if (!fs::is_regular_file(path, ec)) throw InputError(what + " '" + path + "' is not a regular file");
  auto size = fs::file_size(path, ec);
  if (ec) throw InputError("cannot read the size of " + what + " '" + path + "': " + ec.message());
  return static_cast<std::int64_t>(size);
}

// The first bytes of a file (at most n), to recognise what it is.
std::vector<unsigned char> file_head(const std::string& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("tokens file '" + path + "' cannot be opened for reading");
  std::vector<unsigned char> head(n);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(n));
  head.resize(static_cast<std::size_t>(in.gcount()));
  return head;
}

// Text, not token ids: no NUL byte (raw ids below 2^24 have one in every int32) and at least 90% printable ASCII
// or whitespace.
bool looks_like_text(const std::vector<unsigned char>& head) {
  std::size_t printable = 0;
  for (auto b : head) {
    if (b == 0) return false;
    printable += (b >= 0x20 && b < 0x7f) || b == '\t' || b == '\n' || b == '\r';
  }
  return !head.empty() && printable * 10 >= head.size() * 9;
}

// Refuses files that are recognisably something other than token ids, saying what they look like.
void refuse_other_formats(const std::string& path, const std::vector<unsigned char>& head) {
  static const std::vector<std::pair<std::string, std::string>> kMagic = {
      {"\x89HDF\r\n\x1a\n", "an HDF5 file (a qwen3 dataset already? see 'qwen3-dataset info')"},
      {"PK\x03\x04", "a zip archive (a NumPy .npz? save one 1-D array with numpy.save instead)"},
      {"\x1f\x8b", "gzip-compressed (decompress it first)"}};
  for (const auto& [magic, what] : kMagic)
    if (head.size() >= magic.size() && std::equal(magic.begin(), magic.end(), head.begin(),
                                                  [](char m, unsigned char b) { return static_cast<unsigned char>(m) == b; }))
      throw InputError("tokens file '" + path + "' is " + what + ": " + kExpectedFormats);
  if (looks_like_text(head))
    throw InputError("tokens file '" + path + "' looks like text: " + kExpectedFormats +
                     " (tokenise it first; raw files are little-endian " + kRawDtypes + " per --dtype)");
}

// A .npy file of token ids: 1-D, C order, little-endian int32/int64/uint16/uint32, as long as its header says.
TokenEncoding npy_encoding(const std::string& path, const std::string& requested_dtype, std::int64_t file_size) {
  const NpyHeader h = read_npy_header(path, "tokens file");
  static const std::map<std::string, std::pair<std::string, bool>> kAccepted = {
      {"<i4", {"int32", true}}, {"<i8", {"int64", true}}, {"<u2", {"uint16", false}}, {"<u4", {"uint32", false}}};
  const auto it = kAccepted.find(h.descr);
  if (it == kAccepted.end() || h.shape.size() != 1 || h.fortran_order)
    throw InputError("tokens file '" + path + "' is a .npy file of dtype '" + h.descr + "' (" +
                     describe_npy_dtype(h.descr) + "), shape " + h.shape_text() + ", fortran_order " +
                     (h.fortran_order ? "True" : "False") +
                     "; pack takes a 1-D C-order array of little-endian int32, int64, uint16 or uint32 "
                     "('<i4', '<i8', '<u2', '<u4'), e.g. numpy.save(f, ids.astype(numpy.int32).ravel())");
  TokenEncoding e;
  e.format = "npy";
  e.dtype = it->second.first;
  e.is_signed = it->second.second;
  e.bytes = static_cast<int>(h.item_bytes());
  e.data_offset = h.data_offset;
  e.num_tokens = h.count();
  if (!requested_dtype.empty() && requested_dtype != e.dtype)
    throw UsageError("dtype '" + requested_dtype + "' was given but tokens file '" + path + "' is a .npy file of " +
                     e.dtype + " (its header says '" + h.descr + "'): drop --dtype, a .npy file carries its own");
  const auto data_bytes = file_size - e.data_offset;
  if (data_bytes != e.num_tokens * e.bytes)
    throw InputError("tokens file '" + path + "': its .npy header says " + std::to_string(e.num_tokens) + " values of " +
                     std::to_string(e.bytes) + " bytes but " + std::to_string(data_bytes) +
                     " bytes follow the header (truncated or damaged file?)");
  return e;
}

// What a tokens file holds, from its first bytes: a .npy file (its header decides), else raw ids of `dtype`.
TokenEncoding probe_token_file(const std::string& path, const std::string& dtype) {
  const auto bytes = file_bytes(path, "tokens file");
  const auto head = file_head(path, 4096);
  if (has_npy_magic(head.data(), head.size())) return npy_encoding(path, dtype, bytes);
  TokenEncoding e = raw_encoding(dtype);
  if (const auto pair = megatron_pair_of(path); !pair.empty())
    throw InputError("tokens file '" + path + "' " + pair);
  refuse_other_formats(path, head);
  if (bytes % e.bytes != 0)
    throw InputError("tokens file '" + path + "' has " + std::to_string(bytes) + " bytes, not a multiple of " +
                     std::to_string(e.bytes) + " (the size of " + e.dtype + "); " + kExpectedFormats +
                     " (raw: little-endian " + kRawDtypes + " per --dtype)");
  e.num_tokens = bytes / e.bytes;
  return e;
}

// A tokens file (raw or .npy), decoded byte by byte so the result does not depend on the host's byte order.
class TokenFile {
 public:
  TokenFile(const std::string& path, const std::string& dtype) : TokenFile(path, probe_token_file(path, dtype)) {}
  TokenFile(const std::string& path, const TokenEncoding& encoding) : path_(path), encoding_(encoding) {
    in_.open(path, std::ios::binary);
    if (!in_) throw InputError("tokens file '" + path + "' cannot be opened for reading");
  }
  std::int64_t num_tokens() const { return encoding_.num_tokens; }
  const std::string& path() const { return path_; }
  const TokenEncoding& encoding() const { return encoding_; }

  // Tokens [pos, pos+n) into out[n].
  void read(std::int64_t pos, std::int64_t n, std::int64_t* out) {
    const int width = encoding_.bytes;
    bytes_.resize(static_cast<std::size_t>(n * width));
    in_.clear();
    in_.seekg(encoding_.data_offset + pos * width);
    in_.read(reinterpret_cast<char*>(bytes_.data()), static_cast<std::streamsize>(bytes_.size()));
    if (!in_ || in_.gcount() != static_cast<std::streamsize>(bytes_.size()))
      throw InputError("tokens file '" + path_ + "': read failed at token " + std::to_string(pos) +
                       " (file changed or unreadable?)");
    for (std::int64_t i = 0; i < n; ++i) {
      const unsigned char* b = bytes_.data() + i * width;
      std::uint64_t v = 0;
      for (int k = width - 1; k >= 0; --k) v = (v << 8) | b[k];
      const int unused_bits = 64 - 8 * width;  // sign-extend a signed id narrower than 64 bits
      out[i] = encoding_.is_signed && unused_bits > 0 ? static_cast<std::int64_t>(v << unused_bits) >> unused_bits
                                                      : static_cast<std::int64_t>(v);
    }
  }

 private:
  std::string path_;
  TokenEncoding encoding_;
  std::ifstream in_;
  std::vector<unsigned char> bytes_;
};

// Document boundaries [N+1]: from the offsets file, or one document covering the whole stream.
std::vector<std::int64_t> read_offsets(const std::string& path, std::int64_t num_tokens) {
  if (path.empty()) return {0, num_tokens};
  auto bytes = file_bytes(path, "offsets file");
  if (const auto pair = megatron_pair_of(path); !pair.empty()) throw InputError("offsets file '" + path + "' " + pair);
  if (bytes % 8 != 0 || bytes == 0)
    throw InputError("offsets file '" + path + "' has " + std::to_string(bytes) +
                     " bytes; expected N+1 little-endian int64 values (a positive multiple of 8)");
  std::ifstream in(path, std::ios::binary);
  std::vector<unsigned char> raw(static_cast<std::size_t>(bytes));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  if (!in) throw InputError("offsets file '" + path + "' cannot be read");
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(bytes / 8));
  for (std::size_t i = 0; i < offsets.size(); ++i) {
    std::uint64_t v = 0;
    for (int k = 7; k >= 0; --k) v = (v << 8) | raw[i * 8 + static_cast<std::size_t>(k)];
    offsets[i] = static_cast<std::int64_t>(v);
  }
  const std::string where = "offsets file '" + path + "': ";
  if (offsets.front() != 0)
    throw InputError(where + "the first value is " + std::to_string(offsets.front()) + ", not 0");
  for (std::size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] < offsets[i - 1])
      throw InputError(where + "value " + std::to_string(i) + " (" + std::to_string(offsets[i]) +
                       ") is smaller than value " + std::to_string(i - 1) + " (" + std::to_string(offsets[i - 1]) +
                       "); offsets must be non-decreasing");
  if (offsets.back() != num_tokens)
    throw InputError(where + "the last value is " + std::to_string(offsets.back()) + " but the tokens file holds " +
                     std::to_string(num_tokens) + " tokens");
  return offsets;
}

// Every token id in [0, vocab_size), streamed in blocks.
void check_token_range(TokenFile& tokens, std::int64_t vocab_size) {
  std::vector<std::int64_t> block;
  for (std::int64_t pos = 0; pos < tokens.num_tokens(); pos += kBlockTokens) {
    const auto n = std::min(kBlockTokens, tokens.num_tokens() - pos);
    block.resize(static_cast<std::size_t>(n));
    tokens.read(pos, n, block.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const auto id = block[static_cast<std::size_t>(i)];
      if (id < 0 || id >= vocab_size)
        throw InputError("tokens file '" + tokens.path() + "': token id " + std::to_string(id) + " at position " +
                         std::to_string(pos + i) + " is outside the vocabulary [0, " + std::to_string(vocab_size) +
                         ")" + (id < 0 || id > 2147483647 ? " (the dataset stores int32 token ids)" : ""));
    }
  }
}

// The documents in order, each followed by eos_id (when >= 0), as one stream cut into rows.
class PackedStream {
 public:
  PackedStream(TokenFile& tokens, const std::vector<std::int64_t>& offsets, std::int64_t eos_id)
      : tokens_(tokens), offsets_(offsets), eos_id_(eos_id) {}

  void next_row(std::int32_t* row, std::int64_t seq_len) {
    std::int64_t filled = 0;
    while (filled < seq_len) {
      if (doc_ + 1 >= offsets_.size()) throw InternalError("packed stream ran out of tokens");
      const auto end = offsets_[doc_ + 1];
      if (pos_ < end) {
        const auto n = std::min(seq_len - filled, end - pos_);
        buf_.resize(static_cast<std::size_t>(n));
        tokens_.read(pos_, n, buf_.data());
        for (std::int64_t i = 0; i < n; ++i)
          row[filled + i] = static_cast<std::int32_t>(buf_[static_cast<std::size_t>(i)]);
        pos_ += n;
        filled += n;
      } else if (eos_id_ >= 0 && !eos_done_) {
        row[filled++] = static_cast<std::int32_t>(eos_id_);
        eos_done_ = true;
      } else {
        ++doc_;
        eos_done_ = false;
      }
    }
  }

 private:
  TokenFile& tokens_;
  const std::vector<std::int64_t>& offsets_;
  std::int64_t eos_id_;
  std::size_t doc_ = 0;     // current document
  std::int64_t pos_ = 0;    // next token of the file to emit
  bool eos_done_ = false;   // eos of the current document already emitted
  std::vector<std::int64_t> buf_;
};

}  // namespace

void check_pack_options(const PackOptions& o) {
  if (o.tokens_path.empty() == o.megatron.empty())
    throw UsageError("pack: give --tokens F or --megatron PREFIX (exactly one: a tokens file, or a Megatron indexed "
                     "dataset's PREFIX.idx + PREFIX.bin; see 'qwen3-dataset pack --help')");
  if (!o.megatron.empty() && (!o.offsets_path.empty() || !o.dtype.empty()))
    throw UsageError(std::string("--megatron takes its documents and dtype from PREFIX.idx: drop ") +
                     (o.offsets_path.empty() ? "--dtype" : "--offsets"));
  if (o.out_path.empty()) throw UsageError("--out is required (the dataset file to write)");
  raw_encoding(o.dtype);  // a valid name (or empty); a .npy file checks it against its header
  if (o.mode != "pack" && o.mode != "crop")
    throw UsageError("--mode '" + o.mode + "' is not valid (valid: pack, crop)");
  check_vocab_and_lengths(o.vocab_size, o.lengths);
  if (o.max_documents < 0)
    throw UsageError("--max-documents must be >= 0 (0 = all), got " + std::to_string(o.max_documents));
  if (o.eos_id < -1 || o.eos_id >= o.vocab_size)
    throw UsageError("--eos-id " + std::to_string(o.eos_id) + " is outside the vocabulary [0, " +
                     std::to_string(o.vocab_size) + ") (-1 = none)");
  if (o.eos_id >= 0 && o.mode != "pack") throw UsageError("--eos-id applies only to --mode pack");
}

void pack_dataset(const PackOptions& o) {
  check_pack_options(o);
  std::error_code ec;
  if (fs::exists(o.out_path, ec) && !o.overwrite)
    throw OutputError("'" + o.out_path + "' already exists (pass --overwrite to replace it)");

  MegatronIndex index;
  if (!o.megatron.empty()) index = read_megatron_index(megatron_prefix(o.megatron));
  TokenFile tokens = o.megatron.empty() ? TokenFile(o.tokens_path, o.dtype)
                                        : TokenFile(index.bin_path, {.format = "megatron", .dtype = index.dtype,
                                                                     .bytes = index.item_bytes, .is_signed = index.is_signed,
                                                                     .num_tokens = index.num_tokens});
  const auto offsets = o.megatron.empty() ? read_offsets(o.offsets_path, tokens.num_tokens())  // [N+1]
                                          : std::move(index.document_offsets);
  check_token_range(tokens, o.vocab_size);
  const auto num_docs = static_cast<std::int64_t>(offsets.size()) - 1;
  std::int64_t longest = 0;
  for (std::int64_t d = 0; d < num_docs; ++d) longest = std::max(longest, offsets[d + 1] - offsets[d]);

  // Rows per bucket, known before writing so every dataset is created at its final size.
  std::vector<std::int64_t> rows_per_length;
  for (auto len : o.lengths) {
    std::int64_t rows = 0;
    if (o.mode == "crop") {
      for (std::int64_t d = 0; d < num_docs; ++d) rows += (offsets[d + 1] - offsets[d] >= len) ? 1 : 0;
    } else {
      rows = (tokens.num_tokens() + (o.eos_id >= 0 ? num_docs : 0)) / len;
    }
    if (o.max_documents > 0) rows = std::min(rows, o.max_documents);
    if (rows == 0)
      throw InputError(
          "length " + std::to_string(len) + " got no documents (" +
          (o.mode == "crop" ? "crop mode: none of the " + std::to_string(num_docs) + " documents has " +
                                  std::to_string(len) + " tokens or more; the longest has " + std::to_string(longest)
                            : "pack mode: the whole stream is shorter than one row") +
          ")");
    rows_per_length.push_back(rows);
  }

  PartialOutput out(o.out_path, o.overwrite);
  guarded_write(o.out_path, [&] {
    write_root_attrs(out.get(), o.vocab_size,
                     "pack mode=" + o.mode + " tokens=" + tokens.path() + " format=" + tokens.encoding().format +
                         " offsets=" + (!o.megatron.empty() ? index.idx_path : o.offsets_path.empty() ? "none" : o.offsets_path) +
                         " dtype=" + tokens.encoding().dtype +
                         " eos_id=" + std::to_string(o.eos_id) + " max_documents=" + std::to_string(o.max_documents));
    std::vector<std::int64_t> buf;
    for (std::size_t b = 0; b < o.lengths.size(); ++b) {
      const auto len = o.lengths[b];
      if (o.mode == "crop") {
        std::int64_t doc = 0;
        write_bucket(out.get(), len, rows_per_length[b], [&](std::int32_t* row) {
          while (offsets[doc + 1] - offsets[doc] < len) ++doc;
          buf.resize(static_cast<std::size_t>(len));
          tokens.read(offsets[doc], len, buf.data());
          for (std::int64_t t = 0; t < len; ++t) row[t] = static_cast<std::int32_t>(buf[static_cast<std::size_t>(t)]);
          ++doc;
        });
      } else {
        PackedStream stream(tokens, offsets, o.eos_id);
        write_bucket(out.get(), len, rows_per_length[b], [&](std::int32_t* row) { stream.next_row(row, len); });
      }
    }
  });
  guarded_write(o.out_path, [&] { out.commit(); });
}

}  // namespace qwen3
