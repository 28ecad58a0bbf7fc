// What rank r holds and does (train/rank_plan.h), over a grid of layouts with no GPU: every rank of each layout
// planned, and the invariants that make the ranks one model — stages cover the layers once, each tensor's canonical
// copy is one stage's, the gradient norm counts every parameter once, the optimizer's windows cover each flat buffer
// once, K/V heads are replicated over their group when tp exceeds them — and the layouts a backend refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/error.h"
#include "train/rank_plan.h"

namespace qwen3 {
namespace {

struct GridLayout {
  const char* model;
  int tp, cp, pp, shards;
};

std::vector<GridLayout> grid() {
  std::vector<GridLayout> out;
  for (const char* m : {"tiny", "0.6B", "1.7B"})
    for (int tp : {1, 2, 4, 8})
      for (int cp : {1, 2})
        for (int pp : {1, 2, 3})
          for (int shards : {1, 3, 4}) out.push_back({m, tp, cp, pp, shards});
  return out;
}

RankPlan plan_of(const GridLayout& l, int tp_rank, int pp_rank, int shard_rank) {
  RankPlanInput in;
  in.model = model_preset(l.model);
  in.rank = {l.tp, tp_rank, l.cp, 0, l.pp, pp_rank, l.shards, shard_rank};
  in.max_batch = 2, in.max_seq = 1024;
  in.micro_batches = 4;
  return plan_rank(in);
}

std::string tag(const GridLayout& l) {
  return std::string(l.model) + " tp" + std::to_string(l.tp) + " cp" + std::to_string(l.cp) + " pp" +
         std::to_string(l.pp) + " shards" + std::to_string(l.shards);
}

// The stages' layers one after another from 0 to L; the first holds the embedding, the last the head.
void expect_stages_cover_the_layers(const GridLayout& l, const std::vector<RankPlan>& stages) {
  std::int64_t next = 0;
  for (std::size_t s = 0; s < stages.size(); ++s) {
    const StageRange& r = stages[s].stage;
    EXPECT_EQ(r.first_layer, next) << tag(l) << " stage " << s;
    EXPECT_GE(r.layers(), 1) << tag(l);
    EXPECT_EQ(r.first, s == 0) << tag(l);
    EXPECT_EQ(r.last, s + 1 == stages.size()) << tag(l);
    EXPECT_EQ(stages[s].slots, std::min(l.pp - static_cast<int>(s), 4)) << tag(l) << " stage " << s;
    next = r.last_layer;
  }
  EXPECT_EQ(next, stages.front().model.num_layers) << tag(l);
}

TEST(RankPlan, EveryLayoutsRanksHoldTheModelOnce) {
  int layouts = 0;
  for (const GridLayout& l : grid()) {
    const ModelConfig c = model_preset(l.model);
    try {
      plan_of(l, 0, 0, 0);
    } catch (const UsageError&) {
      continue;  // tp does not divide this model's heads (the refusals are tested below)
    }
    ++layouts;
    const ParamTable full(c);
    std::vector<std::int64_t> counted(full.entries().size(), 0), reporters(full.entries().size(), 0);
    for (int tr = 0; tr < l.tp; ++tr) {
      std::vector<RankPlan> stages;
      for (int s = 0; s < l.pp; ++s) stages.push_back(plan_of(l, tr, s, 0));
      expect_stages_cover_the_layers(l, stages);
      for (const RankPlan& p : stages) {
        const TpDims& d = p.tp;
        EXPECT_EQ(p.tokens, 2 * 1024 / l.cp) << tag(l);
        EXPECT_EQ(p.seq_tokens * l.tp, p.tokens) << tag(l);
        if (l.tp > c.num_kv_heads) {  // each KV head on tp / kv_heads consecutive ranks, k and v summed over them
          EXPECT_EQ(d.kv_replicas, l.tp / c.num_kv_heads) << tag(l);
          EXPECT_EQ(d.kv_head0, tr / d.kv_replicas) << tag(l);
          EXPECT_EQ(p.gradients.kv_replicated.size(), 2 * static_cast<std::size_t>(c.num_layers)) << tag(l);
        } else {
          EXPECT_TRUE(p.gradients.kv_replicated.empty()) << tag(l);
        }
        std::int64_t owned_elements = 0;
        for (std::size_t i = 0; i < full.entries().size(); ++i) {
          const std::int64_t n = p.local.entries()[i].numel;
          EXPECT_EQ(n > 0, static_cast<bool>(p.owned[i])) << tag(l) << " " << full.entries()[i].name;
          EXPECT_TRUE(!p.reports[i] || p.owned[i]) << tag(l);
          owned_elements += n;
          if (p.gradients.counted[i]) counted[i] += n;
          if (tr == 0) reporters[i] += p.reports[i];
        }
        EXPECT_EQ(owned_elements, p.local.total_elements()) << tag(l);
      }
    }
    for (std::size_t i = 0; i < full.entries().size(); ++i) {
      EXPECT_EQ(counted[i], full.entries()[i].numel) << tag(l) << ": the norm counts " << full.entries()[i].name;
      EXPECT_EQ(reporters[i], 1) << tag(l) << ": stages reporting " << full.entries()[i].name;
    }
  }
  EXPECT_GT(layouts, 150);
}

TEST(RankPlan, TheOptimizersWindowsCoverEachFlatBufferOnce) {
  for (const GridLayout& l : grid()) {
    if (l.tp != 1 && l.tp != 4) continue;
    for (int s = 0; s < l.pp; ++s) {
      std::int64_t next = 0, P = -1;
      for (int k = 0; k < l.shards; ++k) {
        const RankPlan p = plan_of(l, 0, s, k);
        P = p.local.total_elements();
        EXPECT_EQ(p.shard_parts, l.shards) << tag(l);
        EXPECT_EQ(p.sharded(), l.shards > 1) << tag(l);
        EXPECT_EQ(p.shard.begin, next) << tag(l) << " shard " << k;
        if (l.shards > 1) EXPECT_EQ(p.shard.size % kShardAlignElements, 0) << tag(l);
        EXPECT_EQ(p.shard.padded, p.shard.size * l.shards) << tag(l);
        next += p.shard.size;
      }
      EXPECT_GE(next, P) << tag(l) << " stage " << s;
      EXPECT_LT(next - P, l.shards * kShardAlignElements) << tag(l) << " stage " << s;
    }
  }
}

TEST(RankPlan, ATiedEmbeddingIsReportedByTheFirstStageAndHeldByTheLast) {
  GridLayout l{"0.6B", 1, 1, 2, 1};
  ASSERT_TRUE(model_preset(l.model).tie_word_embeddings);
  const RankPlan first = plan_of(l, 0, 0, 0), last = plan_of(l, 0, 1, 0);
  const std::size_t embed = first.full.embed;
  EXPECT_TRUE(first.owned[embed] && first.reports[embed]);
  EXPECT_TRUE(last.owned[embed]);
  EXPECT_FALSE(last.reports[embed]);
  EXPECT_FALSE(last.gradients.counted[embed]);
}

TEST(RankPlan, LayoutsTheBackendRefusesAreRefusedByName) {
  auto refused = [](RankPlanInput in) -> std::string {
    try {
      plan_rank(in);
    } catch (const UsageError& e) {
      return e.what();
    }
    return "";
  };
  RankPlanInput in;
  in.model = model_preset("0.6B");
  in.max_batch = 1, in.max_seq = 4096;
  in.rank.cp = 2;
  in.cudnn_attention = false;
  EXPECT_NE(refused(in).find("--attention cudnn"), std::string::npos) << refused(in);
  in.cuda_rules = false;  // the CPU backend attends its chunks itself
  EXPECT_EQ(refused(in), "");
  in.cuda_rules = true, in.cudnn_attention = true;
  in.max_seq = 4098;  // not 2·cp chunks
  EXPECT_NE(refused(in).find("--seq-len 4098"), std::string::npos) << refused(in);
  in.max_seq = 4096, in.rank.cp = 1, in.rank.tp = 3;  // 16 heads
  EXPECT_NE(refused(in).find("--tp 3"), std::string::npos) << refused(in);
  in.rank.tp = 1, in.rank.pp = 29;  // 28 layers
  EXPECT_NE(refused(in).find("--pp 29"), std::string::npos) << refused(in);
  in.rank.pp = 2, in.rank.pp_rank = 2;
  EXPECT_THROW(plan_rank(in), InternalError);
}

}  // namespace
}  // namespace qwen3
