// Megatron-style tensor parallelism for Qwen3 as pure arithmetic: which slice of every weight a tensor-parallel rank
// holds. Column-parallel q/k/v and gate/up (output rows split), row-parallel o and down (input columns split),
// vocabulary-parallel embedding and output projection (vocabulary rows split); norms replicated. When tp exceeds the
// KV heads, each KV head is replicated on tp / kv_heads consecutive ranks (its "KV group").
#pragma once
#include <cstdint>
#include <string>

#include "config/model_config.h"
#include "dist/communicator.h"
#include "model/param_table.h"

namespace qwen3 {

struct TpDims {
  int rank = 0, size = 1;
  std::int64_t heads = 0, kv_heads = 0, q_dim = 0, kv_dim = 0, inter = 0, vocab = 0;  // this rank's share
  std::int64_t head0 = 0, kv_head0 = 0, inter0 = 0, vocab0 = 0;                      // first global index held
  int kv_replicas = 1;  // ranks holding each KV head (tp / kv_heads when tp > kv_heads, else 1)
  int kv_group() const { return rank / kv_replicas; }
};

// Throws UsageError naming the first dimension tp does not divide (heads, KV heads, intermediate size, vocabulary).
TpDims tp_dims(const ModelConfig& c, int rank, int size);

// How parameter `index` of the full table is split: along dim (0 rows, 1 columns; -1 replicated), elements
// [begin, begin + count) of that dimension.
struct ShardSpec {
  int dim = -1;
  std::int64_t begin = 0, count = 0;
};
ShardSpec shard_spec(const ParamTable& full, std::size_t index, const TpDims& d);

// The local slice of a full tensor (shape `full_shape`, row-major) and back.
void extract_shard(const ShardSpec& s, const std::vector<std::int64_t>& full_shape, const float* full, float* local);
void insert_shard(const ShardSpec& s, const std::vector<std::int64_t>& full_shape, const float* local, float* full);

// Full tensor `index` assembled from every tensor-parallel rank's shard (this rank's: shard[local numel]), collective
// over the host communicator `tp` of the group (each rank calls it in the same order).
std::vector<float> gather_full_tensor(Communicator& tp, const ModelConfig& c, const ParamTable& full, std::size_t index,
                                      const float* shard, std::int64_t shard_numel);

}  // namespace qwen3
