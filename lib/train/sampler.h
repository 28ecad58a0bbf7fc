// Which documents each step reads: a seeded permutation of the bucket, reshuffled every epoch,
// global_batch documents per step split evenly over data-parallel ranks, then into micro-batches.
#pragma once
#include <cstdint>
#include <vector>

namespace qwen3 {

class DocumentSampler {
 public:
  DocumentSampler(std::int64_t num_documents, std::int64_t global_batch, std::uint64_t seed);
  // Document indices of micro-batch `micro` (size micro_batch) of data-parallel rank `dp_rank` at `step`.
  std::vector<std::int64_t> micro_batch(std::int64_t step, int dp_rank, int dp_size, std::int64_t micro,
                                        std::int64_t micro_batch) const;

 private:
  std::int64_t document(std::int64_t sample) const;  // sample k → document, through its epoch's permutation
  std::int64_t n_, global_batch_;
  std::uint64_t seed_;
  mutable std::int64_t cached_epoch_ = -1;
  mutable std::vector<std::int64_t> perm_;
};

}  // namespace qwen3
