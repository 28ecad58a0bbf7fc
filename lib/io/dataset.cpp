// The bucketed-document dataset format (see dataset.h and docs/datasets.md): reading, inspecting and the synthetic
// Markov-chain writer (packing a token stream: dataset_pack.cpp).
#include "io/dataset.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <random>
#include <set>

#include "core/error.h"
#include "io/dataset_writing.h"

namespace qwen3 {
namespace {


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

}  // namespace

namespace dataset_writing {

void write_root_attrs(hid_t file, std::int64_t vocab_size, const std::string& source) {
  h5::write_attr(file, "format", std::string(kDatasetFormat));
  h5::write_attr(file, "format_version", kDatasetFormatVersion);
  h5::write_attr(file, "vocab_size", vocab_size);
  h5::write_attr(file, "source", source);
  h5::write_attr(file, "created_utc", utc_now());
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

}  // namespace dataset_writing

namespace {
using namespace dataset_writing;

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

}  // namespace

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

}  // namespace qwen3
