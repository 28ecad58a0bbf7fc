// Megatron-LM / NeMo indexed datasets (PREFIX.idx + PREFIX.bin, index "MMIDIDX" version 1), read from the public
// layout (Megatron-LM megatron/core/datasets/indexed_dataset.py): the token type, and where each document's tokens
// lie in the .bin. Every inconsistency between the two files is an InputError naming the file and what is wrong.
// What the tokens are used for is the caller's decision (io/dataset.cpp packs them).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

// The first nine bytes of every index: "MMIDIDX\0\0".
bool has_megatron_index_magic(const unsigned char* bytes, std::size_t size);

// PREFIX as Megatron takes it; a given path ending in .idx or .bin names the same pair.
std::string megatron_prefix(const std::string& given);

// For a file given as something else (pack's tokens or offsets): when it is a Megatron index (its magic) or a .bin
// with one beside it, the rest of a message saying so, "belongs to the Megatron-LM/NeMo indexed dataset 'P' (P.idx +
// P.bin): pack the pair with --megatron P"; "" otherwise.
std::string megatron_pair_of(const std::string& path);

struct MegatronIndex {
  std::string idx_path, bin_path;
  int dtype_code = 0;          // 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16 (6 float64 and 7 float32 refused)
  std::string dtype;           // "uint16", ...
  int item_bytes = 0;
  bool is_signed = false;
  std::int64_t num_sequences = 0;
  std::int64_t num_tokens = 0;                 // in the .bin, = its size / item_bytes
  std::vector<std::int64_t> document_offsets;  // [documents + 1] token offsets into the .bin: 0 ... num_tokens
};

// Reads and checks PREFIX.idx against PREFIX.bin: magic, version, a dtype that holds token ids, the index's size
// against its counts, sequence lengths >= 0 stored back to back (each pointer where the previous sequence ends),
// document indices from 0 to the sequence count, non-decreasing, and the .bin's size. A document is its sequences
// joined in order. Throws InputError naming the file and the problem.
MegatronIndex read_megatron_index(const std::string& prefix);

}  // namespace qwen3
