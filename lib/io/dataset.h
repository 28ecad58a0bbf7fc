// The HDF5 dataset of pre-tokenised documents bucketed by length (docs/datasets.md): validated reader,
// deterministic synthetic writer, and packer from a flat binary or NumPy .npy token stream.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/h5.h"

namespace qwen3 {

inline constexpr const char* kDatasetFormat = "qwen3-pretrain-dataset";
inline constexpr std::int64_t kDatasetFormatVersion = 1;

// "buckets/len_<L>" and "buckets/len_<L>/tokens" inside the file.
std::string dataset_bucket_group(std::int64_t seq_len);
std::string dataset_bucket_tokens(std::int64_t seq_len);

struct DatasetSummary {
  std::int64_t vocab_size = 0;
  std::string source;
  std::map<std::int64_t, std::int64_t> documents_per_length;  // seq_len -> number of documents
  std::string created_utc;
};

// Checks format and version and every bucket's shape (not the token values). Throws InputError naming the file.
DatasetSummary inspect_dataset(const std::string& path);

// One bucket of a dataset file, held open. The constructor validates everything, token ids included (scanned in
// bounded blocks of rows), before the caller allocates anything big. HDF5 is not thread-safe: one thread per reader.
class DatasetReader {
 public:
  // Throws InputError (one line naming the file and the problem) when the file is missing, corrupt, of another
  // format or version, lacks the bucket, has a malformed bucket, a larger vocabulary than the model, fewer than
  // min_documents documents, or any token id outside [0, model_vocab_size).
  DatasetReader(const std::string& path, std::int64_t seq_len, std::int64_t model_vocab_size,
                std::int64_t min_documents);

  std::int64_t num_documents() const { return num_documents_; }
  std::int64_t seq_len() const { return seq_len_; }
  std::int64_t vocab_size() const { return vocab_size_; }  // the dataset's, <= the model's
  const std::string& path() const { return path_; }

  // The given documents, in the given order: [doc_indices.size(), seq_len] row-major.
  // Runs of consecutive indices are read with one hyperslab each.
  std::vector<std::int32_t> read_documents(const std::vector<std::int64_t>& doc_indices) const;

 private:
  std::string path_;
  std::int64_t seq_len_ = 0;
  std::int64_t vocab_size_ = 0;
  std::int64_t num_documents_ = 0;
  h5::Handle file_;
};

// Writes documents_per_length documents of every length, drawn from a seeded first-order Markov chain in which each
// token has 4 likely successors (90% of the mass), so a model can learn them. Same arguments => identical tokens on
// every platform. Refuses an existing path unless overwrite; writes <path>.partial and renames it at the end.
void write_synthetic_dataset(const std::string& path, std::int64_t vocab_size, const std::vector<std::int64_t>& lengths,
                             std::int64_t documents_per_length, std::uint64_t seed, bool overwrite);

struct PackOptions {
  std::string megatron;           // PREFIX of a Megatron-LM/NeMo indexed dataset (PREFIX.idx + PREFIX.bin; a path
                                  // ending .idx or .bin names the pair): tokens, dtype and documents from its index;
                                  // instead of tokens_path (and then no offsets_path or dtype)
  std::string tokens_path;        // a NumPy .npy file of token ids (known by its magic bytes) or flat little-endian ids
  std::string offsets_path;       // little-endian int64 document boundaries [N+1]; empty = one document
  std::string dtype;              // of a raw token file: "uint16", "int32", "uint32"; empty = int32 (a .npy: its header)
  std::string out_path;
  std::int64_t vocab_size = 0;
  std::vector<std::int64_t> lengths;
  std::int64_t max_documents = 0; // per bucket, 0 = all
  std::string mode = "pack";      // "pack": concatenate and cut into rows of L; "crop": first L tokens of each long doc
  std::int64_t eos_id = -1;       // appended after every document in pack mode; -1 = none
  bool overwrite = false;
};

// Validates options (UsageError) and inputs (InputError), then writes the dataset like write_synthetic_dataset.
// A .npy tokens file must be 1-D, C order, little-endian int32/int64/uint16/uint32 (int64 ids must fit int32); text,
// HDF5, zip, gzip files and Megatron indexes given as tokens are refused with a message saying what they look like and
// what pack takes. A Megatron indexed dataset (io/megatron_indexed.h) packs like a raw file with its offsets.
void pack_dataset(const PackOptions& options);
// The options pack_dataset refuses (UsageError, named as qwen3-dataset pack's options): it checks them first; the CLI
// and other callers call it to refuse before anything else runs. One place for every rule.
void check_pack_options(const PackOptions& options);

}  // namespace qwen3
