// What rank r holds and does (see rank_plan.h).
#include "train/rank_plan.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "model/sequence_layout.h"
#include "train/pipeline_schedule.h"

namespace qwen3 {
namespace {

constexpr std::int64_t kLogitChunkBytes = 2ll << 30;  // bf16 logits of one token chunk

void check_coordinates(const RankPlace& r) {
  for (auto [size, rank, name] : {std::tuple{r.tp, r.tp_rank, "tensor"}, std::tuple{r.cp, r.cp_rank, "context"},
                                  std::tuple{r.pp, r.pp_rank, "pipeline"}, std::tuple{r.shards, r.shard_rank, "shard"}})
    if (size < 1 || rank < 0 || rank >= size)
      throw InternalError(std::string("rank plan: ") + name + "-parallel rank " + std::to_string(rank) + " of " +
                          std::to_string(size));
}

// The layout rules that depend on the backend's kernels, said in the options' words.
void check_layout(const RankPlanInput& in) {
  const RankPlace& r = in.rank;
  if (in.max_seq > 0) check_sequence_layout(in.max_batch, in.max_seq, r.tp, r.cp, in.cuda_rules);
  if (in.cuda_rules && r.cp > 1 && !in.cudnn_attention)
    throw UsageError("--cp " + std::to_string(r.cp) + " with --device cuda needs --attention cudnn (the project's own "
                     "attention kernels attend whole sequences only)");
}

}  // namespace

std::int64_t logit_chunk_tokens(std::int64_t tokens, std::int64_t vocab) {
  return std::max<std::int64_t>(1, std::min(tokens, kLogitChunkBytes / (2 * vocab)));
}

RankPlan plan_rank(const RankPlanInput& in) {
  in.model.validate();
  check_coordinates(in.rank);
  check_layout(in);
  in.recompute.validate();
  const RankPlace& r = in.rank;
  RankPlan p{in.model};
  p.rank = r;
  p.tp = tp_dims(in.model, r.tp_rank, r.tp);
  p.stage = stage_range(pipeline_layer_counts(in.model, r.pp, in.max_seq, in.stage_layers), r.pp_rank);
  p.owned = stage_tensors(p.full, p.stage);
  p.reports = p.owned;
  if (in.model.tie_word_embeddings && !p.stage.first) p.reports[p.full.embed] = false;  // the first stage's copy
  p.local = ParamTable(in.model, p.tp.q_dim, p.tp.kv_dim, p.tp.inter, p.tp.vocab).restricted(p.owned);
  p.gradients = gradient_ownership(p.full, p.tp, p.reports);
  const std::int64_t P = p.local.total_elements();
  p.shard_parts = r.shards;
  p.shard = r.shards > 1 ? ShardWindow::of(P, r.shards, r.shard_rank, kShardAlignElements) : ShardWindow::whole(P);
  p.slots = r.pp > 1 ? in_flight(r.pp_rank, r.pp, static_cast<int>(std::clamp<std::int64_t>(in.micro_batches, 1, 1 << 30)))
                     : 1;
  p.max_batch = in.max_batch;
  p.max_seq = in.max_seq;
  p.tokens = in.max_batch * in.max_seq / r.cp;
  p.seq_tokens = p.tokens / r.tp;
  p.logit_chunk = logit_chunk_tokens(p.tokens, p.tp.vocab);
  p.recompute = in.recompute;
  p.cudnn_attention = in.cudnn_attention;
  p.fp8 = in.fp8, p.fp8_delayed = in.fp8 && in.fp8_delayed;
  return p;
}

}  // namespace qwen3
