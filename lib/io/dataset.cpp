// Implementation of the bucketed-document dataset format (see dataset.h and docs/datasets.md).
#include "io/dataset.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "core/error.h"
#include "io/megatron_indexed.h"
#include "io/npy.h"

namespace qwen3 {
namespace {

namespace fs = std::filesystem;

// Rows per HDF5 chunk: at most 64, and at most ~16 Ki tokens (64 KiB), so that reading one document — the trainer
// reads documents in a random order, each on its own — decompresses little more than that document: the chunk is
// HDF5's unit of compression. At 1 Mi tokens per chunk (before 2026-12-06) a 16,384-token document cost a 4 MiB
// inflate on the host per micro-batch, which the GPU waits for at each step's first micro-batch.
std::int64_t chunk_rows_for(std::int64_t seq_len) {
  return std::clamp<std::int64_t>((std::int64_t{1} << 14) / seq_len, 1, 64);
}
// Tokens held in memory at once while scanning or writing a bucket (16 MiB of int32).
constexpr std::int64_t kBlockTokens = std::int64_t{1} << 22;

std::string join(const std::vector<std::int64_t>& values) {
  std::string s;
  for (auto v : values) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s.empty() ? "none" : s;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  char buf[32] = "unknown";
  if (gmtime_r(&t, &tm) != nullptr) std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---------------------------------------------------------------------------------------------- reading

// Runs a read step; errors from the h5 layer get the file named, and HDF5 failures inside a file that opened
// (a damaged chunk, a wrong type) are the input's fault, not ours.
template <typename F>
auto guarded_read(const std::string& path, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const InputError& e) {
    throw InputError("dataset '" + path + "': " + e.what());
  } catch (const InternalError& e) {
    throw InputError("dataset '" + path + "' is corrupt or unreadable (" + e.what() + ")");
  }
}

// Opens the file and checks format and version. Messages from here on are prefixed by guarded_read.
h5::Handle open_dataset_file(const std::string& path) {
  h5::Handle file = h5::open_read(path, "dataset");
  guarded_read(path, [&] {
    if (!h5::has_attr(file.get(), "format"))
      throw InputError(std::string("no 'format' attribute; expected format '") + kDatasetFormat +
                       "' (is this a dataset file?)");
    auto format = h5::read_attr_string(file.get(), "format");
    if (format != kDatasetFormat)
      throw InputError("format is '" + format + "', expected '" + kDatasetFormat + "'");
    auto version = h5::read_attr_int(file.get(), "format_version");
    if (version != kDatasetFormatVersion)
      throw InputError("format_version is " + std::to_string(version) + ", this build supports format_version " +
                       std::to_string(kDatasetFormatVersion));
  });
  return file;
}

// Bucket lengths present, from the group names len_<L>, sorted.
std::vector<std::int64_t> bucket_lengths(hid_t file) {
  std::vector<std::int64_t> lengths;
  if (!h5::exists(file, "buckets")) return lengths;
  for (const auto& name : h5::list(file, "buckets")) {
    std::int64_t len = 0;
    bool ok = name.rfind("len_", 0) == 0;
    if (ok) {
      auto [ptr, ec] = std::from_chars(name.data() + 4, name.data() + name.size(), len);
      ok = ec == std::errc() && ptr == name.data() + name.size() && len > 0 && name == "len_" + std::to_string(len);
    }
    if (!ok)
      throw InputError("unexpected group 'buckets/" + name + "' (bucket groups are named len_<L>, e.g. len_1024)");
    lengths.push_back(len);
  }
  std::sort(lengths.begin(), lengths.end());
  return lengths;
}

// Checks one bucket's attributes against its dataset's shape [N, L]; returns N.
std::int64_t check_bucket(hid_t file, std::int64_t seq_len) {
  const auto group_path = dataset_bucket_group(seq_len);
  const auto tokens_path = dataset_bucket_tokens(seq_len);
  if (!h5::exists(file, tokens_path)) throw InputError("bucket " + group_path + " has no 'tokens' dataset");
  auto s = h5::shape(file, tokens_path);
  std::string shape_text;
  for (auto d : s) shape_text += (shape_text.empty() ? "" : ", ") + std::to_string(d);
  if (s.size() != 2 || s[1] != seq_len)
    throw InputError("bucket " + group_path + " has tokens of shape [" + shape_text + "], expected [N, " +
                     std::to_string(seq_len) + "]");
  {  // token ids must be stored as integers: HDF5 would otherwise convert floats silently
    h5::Handle d(H5Dopen2(file, tokens_path.c_str(), H5P_DEFAULT));
    if (!d.valid()) throw InternalError("HDF5 call failed: open dataset " + tokens_path);
    h5::Handle type(H5Dget_type(d.get()));
    if (!type.valid()) throw InternalError("HDF5 call failed: type of " + tokens_path);
    if (H5Tget_class(type.get()) != H5T_INTEGER)
      throw InputError("bucket " + group_path + " stores its tokens as a non-integer type (expected int32)");
  }
  h5::Handle group = h5::open_group(file, group_path);
  auto attr_len = h5::read_attr_int(group.get(), "seq_len");
  if (attr_len != seq_len)
    throw InputError("bucket " + group_path + " has seq_len attribute " + std::to_string(attr_len) + ", expected " +
                     std::to_string(seq_len));
  auto attr_docs = h5::read_attr_int(group.get(), "num_documents");
  if (attr_docs != s[0])
    throw InputError("bucket " + group_path + " has num_documents attribute " + std::to_string(attr_docs) +
                     " but its tokens hold " + std::to_string(s[0]) + " documents");
  return s[0];
}

// ---------------------------------------------------------------------------------------------- writing

// The output file under construction: <out>.partial in the same folder, renamed into place by commit() and
// removed if the writer fails first, so a file named <out> is always complete.
class PartialOutput {
 public:
  PartialOutput(const std::string& out, bool overwrite) : out_(out), partial_(out + ".partial") {
    std::error_code ec;
    if (fs::exists(out, ec) && !overwrite)
      throw OutputError("'" + out + "' already exists (pass --overwrite to replace it)");
    file_ = h5::create(partial_);
  }
  PartialOutput(const PartialOutput&) = delete;
  PartialOutput& operator=(const PartialOutput&) = delete;
  ~PartialOutput() {
    if (committed_) return;
    file_.reset();
    std::error_code ec;
    fs::remove(partial_, ec);  // best effort: the original error is the one to report
  }
  hid_t get() const { return file_.get(); }
  void commit() {
    h5::close(file_, "'" + partial_ + "'");  // flushed and closed: the disk's last word comes back here
    std::error_code ec;
    fs::rename(partial_, out_, ec);
    if (ec) throw OutputError("cannot rename '" + partial_ + "' to '" + out_ + "': " + ec.message());
    committed_ = true;
  }

 private:
  std::string out_, partial_;
  h5::Handle file_;
  bool committed_ = false;
};

// Errors while writing name the output the user asked for (not its .partial): the disk's own reason when it refused
// ("no space left on device"), else the HDF5 call that failed.
template <typename F>
void guarded_write(const std::string& out, F&& body) {
  try {
    body();
  } catch (const h5::WriteError& e) {
    throw OutputError("cannot write '" + out + "': " + e.reason());
  } catch (const InternalError& e) {
    throw OutputError("cannot write '" + out + "': " + e.what());
  }
}

void write_root_attrs(hid_t file, std::int64_t vocab_size, const std::string& source) {
  h5::write_attr(file, "format", std::string(kDatasetFormat));
  h5::write_attr(file, "format_version", kDatasetFormatVersion);
  h5::write_attr(file, "vocab_size", vocab_size);
  h5::write_attr(file, "source", source);
  h5::write_attr(file, "created_utc", utc_now());
}

// Writes bucket len_<L> with num_rows rows; next_row(int32_t* row) fills one row of seq_len tokens.
// Blocks are whole chunks, so HDF5 compresses each chunk once.
template <typename NextRow>
void write_bucket(hid_t file, std::int64_t seq_len, std::int64_t num_rows, NextRow&& next_row) {
  const auto path = dataset_bucket_tokens(seq_len);
  const auto chunk = chunk_rows_for(seq_len);
  h5::create_i32_2d(file, path, num_rows, seq_len, chunk);
  const auto block_rows = chunk * std::max<std::int64_t>(1, kBlockTokens / seq_len / chunk);
  std::vector<std::int32_t> block;  // [rows, seq_len]
  for (std::int64_t row0 = 0; row0 < num_rows; row0 += block_rows) {
    const auto rows = std::min(block_rows, num_rows - row0);
    block.resize(static_cast<std::size_t>(rows * seq_len));
    for (std::int64_t r = 0; r < rows; ++r) next_row(block.data() + r * seq_len);
    h5::write_i32_rows(file, path, row0, block, rows);
  }
  h5::Handle group = h5::open_group(file, dataset_bucket_group(seq_len));
  h5::write_attr(group.get(), "seq_len", seq_len);
  h5::write_attr(group.get(), "num_documents", num_rows);
}

void check_vocab_and_lengths(std::int64_t vocab_size, const std::vector<std::int64_t>& lengths) {
  if (vocab_size <= 0 || vocab_size > std::int64_t{2147483647})
    throw UsageError("vocab size must be in [1, 2147483647] (token ids are int32), got " + std::to_string(vocab_size));
  if (lengths.empty()) throw UsageError("no sequence lengths given (e.g. 1024,2048)");
  std::set<std::int64_t> seen;
  for (auto len : lengths) {
    if (len <= 0) throw UsageError("sequence lengths must be positive, got " + std::to_string(len));
    if (!seen.insert(len).second) throw UsageError("sequence length " + std::to_string(len) + " given twice");
  }
}

// ---------------------------------------------------------------------------------------------- synthetic

// Platform-independent randomness: mt19937_64's output is fixed by the standard; the helpers below are ours
// (the standard distributions are implementation-defined).
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, n), unbiased: rejects the 2^64 mod n lowest raw values.
std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t threshold = (0 - n) % n;
  std::uint64_t x = rng();
  while (x < threshold) x = rng();
  return x % n;
}

constexpr int kSuccessors = 4;         // likely successors per token
constexpr std::uint64_t kLikelyInTen = 9;  // 90% of the mass on them, the rest uniform over the vocabulary

// The chain: successors[v * kSuccessors + k] is the k-th likely successor of token v. [vocab, kSuccessors]
std::vector<std::int32_t> markov_successors(std::int64_t vocab_size, std::uint64_t seed) {
  std::mt19937_64 rng(splitmix64(seed));
  std::vector<std::int32_t> successors(static_cast<std::size_t>(vocab_size * kSuccessors));
  for (auto& s : successors) s = static_cast<std::int32_t>(uniform_below(rng, static_cast<std::uint64_t>(vocab_size)));
  return successors;
}

// ---------------------------------------------------------------------------------------------- packing

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

std::string dataset_bucket_group(std::int64_t seq_len) { return "buckets/len_" + std::to_string(seq_len); }
std::string dataset_bucket_tokens(std::int64_t seq_len) { return dataset_bucket_group(seq_len) + "/tokens"; }

DatasetSummary inspect_dataset(const std::string& path) {
  h5::Handle file = open_dataset_file(path);
  return guarded_read(path, [&] {
    DatasetSummary summary;
    summary.vocab_size = h5::read_attr_int(file.get(), "vocab_size");
    summary.source = h5::has_attr(file.get(), "source") ? h5::read_attr_string(file.get(), "source") : "";
    summary.created_utc =
        h5::has_attr(file.get(), "created_utc") ? h5::read_attr_string(file.get(), "created_utc") : "";
    for (auto len : bucket_lengths(file.get())) summary.documents_per_length[len] = check_bucket(file.get(), len);
    return summary;
  });
}

DatasetReader::DatasetReader(const std::string& path, std::int64_t seq_len, std::int64_t model_vocab_size,
                             std::int64_t min_documents)
    : path_(path), seq_len_(seq_len) {
  if (seq_len <= 0) throw UsageError("sequence length must be positive, got " + std::to_string(seq_len));
  if (model_vocab_size <= 0)
    throw UsageError("model vocab size must be positive, got " + std::to_string(model_vocab_size));
  if (min_documents < 0) throw UsageError("minimum documents must be >= 0, got " + std::to_string(min_documents));
  file_ = open_dataset_file(path);
  guarded_read(path, [&] {
    const hid_t f = file_.get();
    vocab_size_ = h5::read_attr_int(f, "vocab_size");
    if (vocab_size_ <= 0) throw InputError("vocab_size attribute is " + std::to_string(vocab_size_) + ", not positive");
    auto lengths = bucket_lengths(f);
    if (std::find(lengths.begin(), lengths.end(), seq_len) == lengths.end())
      throw InputError("no bucket for sequence length " + std::to_string(seq_len) + " (lengths present: " +
                       join(lengths) + ")");
    num_documents_ = check_bucket(f, seq_len);
    if (vocab_size_ > model_vocab_size)
      throw InputError("vocab_size " + std::to_string(vocab_size_) + " is larger than the model's vocab size " +
                       std::to_string(model_vocab_size));
    if (num_documents_ < min_documents)
      throw InputError("bucket of length " + std::to_string(seq_len) + " has " + std::to_string(num_documents_) +
                       " documents but " + std::to_string(min_documents) +
                       " are needed (the global batch needs at least that many)");
    // Token scan in bounded blocks of rows: every id must index the model's embedding.
    const auto tokens_path = dataset_bucket_tokens(seq_len);
    const auto block_rows = std::max<std::int64_t>(1, kBlockTokens / seq_len);
    for (std::int64_t row0 = 0; row0 < num_documents_; row0 += block_rows) {
      const auto rows = std::min(block_rows, num_documents_ - row0);
      auto block = h5::read_i32_rows(f, tokens_path, row0, rows);  // [rows, seq_len]
      for (std::size_t i = 0; i < block.size(); ++i) {
        if (block[i] >= 0 && block[i] < model_vocab_size) continue;
        const auto doc = row0 + static_cast<std::int64_t>(i) / seq_len;
        const auto pos = static_cast<std::int64_t>(i) % seq_len;
        throw InputError("document " + std::to_string(doc) + " of length " + std::to_string(seq_len) +
                         " has token id " + std::to_string(block[i]) + " at position " + std::to_string(pos) +
                         ", outside the model's vocabulary [0, " + std::to_string(model_vocab_size) + ")");
      }
    }
  });
}

std::vector<std::int32_t> DatasetReader::read_documents(const std::vector<std::int64_t>& doc_indices) const {
  for (auto d : doc_indices)
    if (d < 0 || d >= num_documents_)
      throw InternalError("document index " + std::to_string(d) + " out of range [0, " +
                          std::to_string(num_documents_) + ") for dataset '" + path_ + "'");
  std::vector<std::int32_t> out(doc_indices.size() * static_cast<std::size_t>(seq_len_));  // [count, seq_len]
  const auto tokens_path = dataset_bucket_tokens(seq_len_);
  guarded_read(path_, [&] {
    std::size_t i = 0;
    while (i < doc_indices.size()) {
      std::size_t run = 1;
      while (i + run < doc_indices.size() && doc_indices[i + run] == doc_indices[i] + static_cast<std::int64_t>(run))
        ++run;
      auto rows = h5::read_i32_rows(file_.get(), tokens_path, doc_indices[i], static_cast<std::int64_t>(run));
      const auto at = static_cast<std::ptrdiff_t>(i) * static_cast<std::ptrdiff_t>(seq_len_);
      std::copy(rows.begin(), rows.end(), out.begin() + at);
      i += run;
    }
  });
  return out;
}

void write_synthetic_dataset(const std::string& path, std::int64_t vocab_size, const std::vector<std::int64_t>& lengths,
                             std::int64_t documents_per_length, std::uint64_t seed, bool overwrite) {
  check_vocab_and_lengths(vocab_size, lengths);
  if (documents_per_length <= 0)
    throw UsageError("documents per length must be positive, got " + std::to_string(documents_per_length));
  if (path.empty()) throw UsageError("no output file given");
  PartialOutput out(path, overwrite);
  guarded_write(path, [&] {
    write_root_attrs(out.get(), vocab_size,
                     "synthetic seed=" + std::to_string(seed) + " (first-order Markov chain, " +
                         std::to_string(kSuccessors) + " likely successors per token with 90% of the mass)");
    const auto successors = markov_successors(vocab_size, seed);
    const auto vocab = static_cast<std::uint64_t>(vocab_size);
    for (auto len : lengths) {
      // Each bucket has its own stream, so a bucket's documents do not depend on which other lengths were asked for.
      std::mt19937_64 rng(splitmix64(splitmix64(seed) + static_cast<std::uint64_t>(len)));
      write_bucket(out.get(), len, documents_per_length, [&](std::int32_t* row) {
        auto token = static_cast<std::int32_t>(uniform_below(rng, vocab));
        row[0] = token;
        for (std::int64_t t = 1; t < len; ++t) {
          if (uniform_below(rng, 10) < kLikelyInTen)
            token = successors[static_cast<std::size_t>(token) * kSuccessors + uniform_below(rng, kSuccessors)];
          else
            token = static_cast<std::int32_t>(uniform_below(rng, vocab));
          row[t] = token;
        }
      });
    }
  });
  guarded_write(path, [&] { out.commit(); });
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
