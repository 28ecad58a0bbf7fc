// Tensor-parallel split arithmetic (see tensor_parallel.h).
#include "model/tensor_parallel.h"

#include <algorithm>

#include "core/error.h"

namespace qwen3 {

TpDims tp_dims(const ModelConfig& c, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) throw InternalError("tensor-parallel rank " + std::to_string(rank) + " of " + std::to_string(size));
  auto need = [&](std::int64_t n, const char* what) {
    if (n % size != 0)
      throw UsageError("--tp " + std::to_string(size) + ": the model's " + what + " (" + std::to_string(n) +
                       ") is not divisible by the tensor-parallel size");
  };
  need(c.num_heads, "attention heads");
  need(c.intermediate_size, "intermediate size");
  need(c.vocab_size, "vocabulary size");
  if (c.num_kv_heads % size != 0 && size % c.num_kv_heads != 0)
    throw UsageError("--tp " + std::to_string(size) + ": the model's " + std::to_string(c.num_kv_heads) +
                     " key/value heads neither divide by the tensor-parallel size nor divide it (for replication)");
  TpDims d;
  d.rank = rank;
  d.size = size;
  d.heads = c.num_heads / size;
  d.head0 = rank * d.heads;
  d.kv_replicas = size > c.num_kv_heads ? static_cast<int>(size / c.num_kv_heads) : 1;
  d.kv_heads = std::max<std::int64_t>(1, c.num_kv_heads / size);
  d.kv_head0 = size > c.num_kv_heads ? rank / d.kv_replicas : rank * d.kv_heads;
  d.q_dim = d.heads * c.head_dim;
  d.kv_dim = d.kv_heads * c.head_dim;
  d.inter = c.intermediate_size / size;
  d.inter0 = rank * d.inter;
  d.vocab = c.vocab_size / size;
  d.vocab0 = rank * d.vocab;
  return d;
}

ShardSpec shard_spec(const ParamTable& full, std::size_t index, const TpDims& d) {
  if (index == full.embed || index == full.lm_head) return {0, d.vocab0, d.vocab};
  for (const auto& l : full.layers) {
    const std::int64_t hd = d.heads > 0 ? full.entries()[l.q_proj].shape[0] / (d.heads * d.size) : 0;
    if (index == l.q_proj) return {0, d.head0 * hd, d.q_dim};
    if (index == l.k_proj || index == l.v_proj) return {0, d.kv_head0 * hd, d.kv_dim};
    if (index == l.o_proj) return {1, d.head0 * hd, d.q_dim};
    if (index == l.gate_proj || index == l.up_proj) return {0, d.inter0, d.inter};
    if (index == l.down_proj) return {1, d.inter0, d.inter};
  }
  return {};  // norms: replicated
}

namespace {
template <bool Extract>
void copy_shard(const ShardSpec& s, const std::vector<std::int64_t>& shape, const float* src, float* dst) {
  std::int64_t numel = 1;
  for (auto n : shape) numel *= n;
  if (s.dim < 0) {
    std::copy(src, src + numel, dst);
    return;
  }
  const std::int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
  if (s.dim == 0) {  // rows [begin, begin + count)
    const float* from = Extract ? src + s.begin * cols : src;
    float* to = Extract ? dst : dst + s.begin * cols;
    std::copy(from, from + s.count * cols, to);
    return;
  }
  for (std::int64_t r = 0; r < rows; ++r) {  // columns [begin, begin + count) of every row
    const float* from = Extract ? src + r * cols + s.begin : src + r * s.count;
    float* to = Extract ? dst + r * s.count : dst + r * cols + s.begin;
    std::copy(from, from + s.count, to);
  }
}
}  // namespace

void extract_shard(const ShardSpec& s, const std::vector<std::int64_t>& shape, const float* full, float* local) {
  copy_shard<true>(s, shape, full, local);
}
void insert_shard(const ShardSpec& s, const std::vector<std::int64_t>& shape, const float* local, float* full) {
  copy_shard<false>(s, shape, local, full);
}

std::vector<float> gather_full_tensor(Communicator& tp, const ModelConfig& c, const ParamTable& full, std::size_t index,
                                      const float* shard, std::int64_t shard_numel) {
  const auto& f = full.entries()[index];
  const int t = tp.size();
  if (t == 1 || shard_spec(full, index, tp_dims(c, tp.rank(), t)).dim < 0) return {shard, shard + shard_numel};
  std::vector<double> mine(shard, shard + shard_numel), all(static_cast<std::size_t>(t * shard_numel));
  tp.all_gather(mine.data(), all.data(), mine.size());
  std::vector<float> out(static_cast<std::size_t>(f.numel)), piece(static_cast<std::size_t>(shard_numel));
  for (int r = 0; r < t; ++r) {
    std::copy(all.begin() + r * shard_numel, all.begin() + (r + 1) * shard_numel, piece.begin());
    insert_shard(shard_spec(full, index, tp_dims(c, r, t)), f.shape, piece.data(), out.data());
  }
  return out;
}

}  // namespace qwen3
