// Epoch-shuffled document sampler (see sampler.h). Fisher–Yates over splitmix64, identical on every platform.
#include "train/sampler.h"

#include <numeric>
#include <utility>

#include "core/error.h"
#include "core/random.h"

namespace qwen3 {

DocumentSampler::DocumentSampler(std::int64_t n, std::int64_t global_batch, std::uint64_t seed)
    : n_(n), global_batch_(global_batch), seed_(seed) {
  QWEN3_ASSERT(n > 0 && global_batch > 0, "sampler needs documents and a batch");
}

std::int64_t DocumentSampler::document(std::int64_t sample) const {
  const std::int64_t epoch = sample / n_;
  if (epoch != cached_epoch_) {
    perm_.resize(static_cast<std::size_t>(n_));
    std::iota(perm_.begin(), perm_.end(), 0);
    std::uint64_t state = seed_ ^ (0xd1b54a32d192ed03ULL * static_cast<std::uint64_t>(epoch + 1));
    for (std::int64_t i = n_ - 1; i > 0; --i) {
      const auto j = static_cast<std::int64_t>(splitmix64(state) % static_cast<std::uint64_t>(i + 1));
      std::swap(perm_[i], perm_[j]);
    }
    cached_epoch_ = epoch;
  }
  return perm_[sample % n_];
}

std::vector<std::int64_t> DocumentSampler::micro_batch(std::int64_t step, int dp_rank, int dp_size, std::int64_t micro,
                                                       std::int64_t micro_batch) const {
  const std::int64_t per_rank = global_batch_ / dp_size;
  std::vector<std::int64_t> docs;
  for (std::int64_t i = 0; i < micro_batch; ++i)
    docs.push_back(document(step * global_batch_ + dp_rank * per_rank + micro * micro_batch + i));
  return docs;
}

}  // namespace qwen3
