// What writing a dataset file takes, shared by its writers (io/dataset.cpp: synthetic data; io/dataset_pack.cpp:
// packing a token stream): the .partial file renamed into place, write errors named by the output, the root
// attributes, one bucket written chunk by chunk, and the vocabulary and lengths checked. Internal to lib/io.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"

namespace qwen3::dataset_writing {

// Rows per HDF5 chunk: at most 64, and at most ~16 Ki tokens (64 KiB), so that reading one document — the trainer
// reads documents in a random order, each on its own — decompresses little more than that document: the chunk is
// HDF5's unit of compression. At 1 Mi tokens per chunk (before 2026-12-06) a 16,384-token document cost a 4 MiB
// inflate on the host per micro-batch, which the GPU waits for at each step's first micro-batch.
inline std::int64_t chunk_rows_for(std::int64_t seq_len) {
  return std::clamp<std::int64_t>((std::int64_t{1} << 14) / seq_len, 1, 64);
}
// Tokens held in memory at once while scanning or writing a bucket (16 MiB of int32).
inline constexpr std::int64_t kBlockTokens = std::int64_t{1} << 22;

// The output file under construction: <out>.partial in the same folder, renamed into place by commit() and
// removed if the writer fails first, so a file named <out> is always complete.
class PartialOutput {
 public:
  PartialOutput(const std::string& out, bool overwrite) : out_(out), partial_(out + ".partial") {
    std::error_code ec;
    if (std::filesystem::exists(out, ec) && !overwrite)
      throw OutputError("'" + out + "' already exists (pass --overwrite to replace it)");
    file_ = h5::create(partial_);
  }
  PartialOutput(const PartialOutput&) = delete;
  PartialOutput& operator=(const PartialOutput&) = delete;
  ~PartialOutput() {
    if (committed_) return;
    file_.reset();
    std::error_code ec;
    std::filesystem::remove(partial_, ec);  // best effort: the original error is the one to report
  }
  hid_t get() const { return file_.get(); }
  void commit() {
    h5::close(file_, "'" + partial_ + "'");  // flushed and closed: the disk's last word comes back here
    std::error_code ec;
    std::filesystem::rename(partial_, out_, ec);
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

// The format's root attributes: format, version, vocabulary, where the tokens came from, when.
void write_root_attrs(hid_t file, std::int64_t vocab_size, const std::string& source);

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

// UsageError unless the vocabulary fits int32 ids and the lengths are positive and distinct.
void check_vocab_and_lengths(std::int64_t vocab_size, const std::vector<std::int64_t>& lengths);

}  // namespace qwen3::dataset_writing
