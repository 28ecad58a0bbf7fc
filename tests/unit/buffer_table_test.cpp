// The buffer table (train/buffer_table.h) at table level, without a GPU: for a grid of layouts, what every rank's CUDA
// engine would allocate (its own table input: tensor-parallel rank, pipeline stage, ZeRO-1 window) equals the memory
// plan by category, and every buffer the engine binds — each layer's activations per micro-batch slot, the stage's
// and the layout's buffers — is in the table exactly when the layout needs it, shared entries pointing at an owner of
// the same size. The same comparison on a GPU, against the allocator, is CudaEngine.AllocatesWhatTheMemoryPlanSays.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <tuple>

#include "config/model_config.h"
#include "model/pipeline_split.h"
#include "model/sequence_layout.h"
#include "ops/adamw_chunks.h"
#include "train/buffer_table.h"
#include "train/memory_plan.h"
#include "train/optimizer_segments.h"

using namespace qwen3;

namespace {

struct Layout {
  const char* model;
  std::int64_t batch, seq;
  int tp, cp, pp, dp;
  int micro_batches;
};

const MemoryPolicy kPolicies[] = {{}, {Recompute::selective}, {Recompute::full}, {Recompute::full, 2},
                                     {Recompute::full, 0, true}, {Recompute::none, 0, false, 0.4},
                                     {Recompute::full, 0, true, 1.0}};

std::vector<Layout> grid() {
  std::vector<Layout> out;
  for (const char* m : {"tiny", "0.6B", "8B"})
    for (int tp : {1, 2, 4})
      for (int cp : {1, 2})
        for (int pp : {1, 2, 4})
          for (int dp : {1, 2}) out.push_back({m, 2, 1024, tp, cp, pp, dp, pp > 1 ? 4 : 1});
  return out;
}

PlannedRun plan_input(const Layout& l, const MemoryPolicy& rc, bool cudnn, int stage) {
  PlannedRun in{model_preset(l.model), l.batch, l.seq, l.tp, l.dp, l.pp, l.cp};
  in.recompute = rc;
  in.cudnn_attention = cudnn;
  in.micro_batches = l.micro_batches;
  in.stage = stage;
  return in;
}

// One rank's plan (train/rank_plan.h) and its buffer table, the attention workspace estimated.
RankPlan rank_plan(const ModelConfig& c, const RankPlace& r, std::int64_t batch, std::int64_t seq,
                   const MemoryPolicy& rc, bool cudnn, std::int64_t micro_batches = 1) {
  RankPlanInput in;
  in.model = c, in.rank = r;
  in.max_batch = batch, in.max_seq = seq, in.micro_batches = micro_batches;
  in.recompute = rc, in.cudnn_attention = cudnn;
  return plan_rank(in);
}
std::vector<BufferSpec> table_of(const RankPlan& rank) { return buffer_table(rank, estimated_attention_workspace(rank)); }

// What rank (tp_rank, cp_rank, stage, dp_rank) of the layout allocates, by device category, as its engine builds it.
std::vector<std::int64_t> engine_bytes(const Layout& l, const MemoryPolicy& rc, bool cudnn, int tp_rank, int cp_rank,
                                       int stage, int dp_rank, std::int64_t* pinned) {
  // The default: ZeRO-1 over data × context ranks.
  const RankPlace r{l.tp, tp_rank, l.cp, cp_rank, l.pp, stage, l.dp * l.cp, dp_rank * l.cp + cp_rank};
  const auto table = table_of(rank_plan(model_preset(l.model), r, l.batch, l.seq, rc, cudnn, l.micro_batches));
  *pinned = host_pinned_bytes(table);
  return device_bytes_by_category(table);
}

}  // namespace

TEST(BufferTable, EveryRankOfALayoutAllocatesWhatThePlanSays) {
  int compared = 0;
  for (const Layout& l : grid())
    for (const MemoryPolicy& rc : kPolicies)
      for (bool cudnn : {true, false}) {
        if (l.cp > 1 && !cudnn) continue;  // context parallelism runs on cuDNN only
        for (int stage = 0; stage < l.pp; ++stage)
          for (int q = 0; q < l.cp; ++q) {
            PlannedRun in = plan_input(l, rc, cudnn, stage);
            in.cp_rank = q;  // its chunks' keys size cuDNN's workspace
            const MemoryPlan plan = plan_cuda_rank_memory(in);
            const auto planned = plan.by_category();
            for (int t = 0; t < l.tp; ++t)
              for (int d = 0; d < l.dp; ++d) {
                std::int64_t pinned = 0;
                const auto bytes = engine_bytes(l, rc, cudnn, t, q, stage, d, &pinned);
                const std::string tag = std::string(l.model) + " tp" + std::to_string(l.tp) + " cp" + std::to_string(l.cp) +
                                        " pp" + std::to_string(l.pp) + " dp" + std::to_string(l.dp) + " " + rc.describe() +
                                        (cudnn ? " cudnn" : " own") + " rank t" + std::to_string(t) + " c" +
                                        std::to_string(q) + " s" + std::to_string(stage) + " d" + std::to_string(d);
                ASSERT_EQ(bytes.size(), planned.size());
                for (std::size_t k = 0; k < bytes.size(); ++k) {
                  // The plan is of the first shard's rank: another shard's window may cut one more tensor in two, one
                  // more AdamW chunk per tensor at most.
                  const std::int64_t slack = planned[k].first == "optimizer_state"
                                                 ? static_cast<std::int64_t>(sizeof(AdamWChunk)) * 16 * (1 + model_preset(l.model).num_layers)
                                                 : 0;
                  EXPECT_NEAR(static_cast<double>(bytes[k]), static_cast<double>(planned[k].second), static_cast<double>(slack))
                      << tag << " " << planned[k].first;
                }
                EXPECT_EQ(pinned, plan.host_pinned_bytes) << tag;
                ++compared;
              }
        }
      }
  EXPECT_GT(compared, 5000);
}

TEST(BufferTable, EveryBufferTheEngineBindsIsThereWhenTheLayoutNeedsIt) {
  for (const Layout& l : grid())
    for (const MemoryPolicy& rc : kPolicies)
      for (bool cudnn : {true, false})
        for (int stage = 0; stage < l.pp; ++stage) {
          if (l.cp > 1 && !cudnn) continue;
          const ModelConfig c = model_preset(l.model);
          const RankPlace r{l.tp, 0, l.cp, 0, l.pp, stage, 1, 0};
          const RankPlan in = rank_plan(c, r, l.batch, l.seq, rc, cudnn, l.micro_batches);
          const auto table = table_of(in);
          const std::string tag = std::string(l.model) + " tp" + std::to_string(l.tp) + " cp" + std::to_string(l.cp) +
                                  " pp" + std::to_string(l.pp) + " stage " + std::to_string(stage) + " " + rc.describe();
          std::map<std::tuple<Buf, int, int>, int> where;
          for (std::size_t i = 0; i < table.size(); ++i) {
            const BufferSpec& s = table[i];
            ASSERT_TRUE(where.emplace(std::tuple{s.id, s.slot, s.layer}, static_cast<int>(i)).second) << tag << " entry " << i;
            if (s.shares < 0) continue;
            ASSERT_LT(s.shares, static_cast<int>(i)) << tag;
            const BufferSpec& owner = table[static_cast<std::size_t>(s.shares)];
            EXPECT_EQ(owner.shares, -1) << tag;
            EXPECT_EQ(owner.elements * dtype_bytes(owner.dtype), s.elements * dtype_bytes(s.dtype)) << tag;
          }
          auto has = [&](Buf id, int slot = 0, int layer = -1) { return where.count({id, slot, layer}) > 0; };
          const int L = static_cast<int>(in.stage.layers()), slots = in.slots;
          EXPECT_EQ(slots, l.pp > 1 ? std::min(l.pp - stage, l.micro_batches) : 1) << tag;
          for (int slot = 0; slot < slots; ++slot) {
            for (int layer = 0; layer < L; ++layer) {
              for (Buf id : {Buf::x_in, Buf::qkv, Buf::q, Buf::k, Buf::attn, Buf::x_mid, Buf::h_in, Buf::h_mid,
                             Buf::gate_up, Buf::rstd_in, Buf::rstd_q, Buf::rstd_k, Buf::lse, Buf::rstd_mid})
                EXPECT_TRUE(has(id, slot, layer)) << tag << " slot " << slot << " layer " << layer;
              EXPECT_EQ(has(Buf::v, slot, layer), !cudnn) << tag;
            }
            EXPECT_EQ(has(Buf::stage_out, slot), !in.stage.last) << tag;
          }
          for (Buf id : {Buf::x_final, Buf::h_final, Buf::rstd_final, Buf::logits, Buf::row_loss, Buf::labels})
            EXPECT_EQ(has(id), in.stage.last) << tag;
          EXPECT_EQ(has(Buf::tokens), in.stage.first) << tag;
          for (Buf id : {Buf::sp_h_local, Buf::sp_partial, Buf::sp_sum_local, Buf::sp_dh_local})
            EXPECT_EQ(has(id), l.tp > 1) << tag;
          EXPECT_EQ(has(Buf::sp_dy_gathered, 1), l.tp > 1) << tag;
          EXPECT_EQ(has(Buf::sp_dres_full), l.tp > 1 && in.stage.first) << tag;
          EXPECT_EQ(has(Buf::ce_max), l.tp > 1 && in.stage.last) << tag;
          for (Buf id : {Buf::cp_kv_local, Buf::cp_kv_ranks, Buf::cp_kv_full, Buf::cp_dkv, Buf::cp_dkv_first})
            EXPECT_EQ(has(id), l.cp > 1) << tag;
          const std::int64_t F = rc.full_layers(L);
          EXPECT_EQ(has(Buf::recompute_out), F > 0) << tag;
          EXPECT_EQ(has(Buf::host_inputs), rc.offload_inputs && F > 1) << tag;
          EXPECT_EQ(has(Buf::offload_ring, 1), rc.offload_inputs && F > 1) << tag;  // stage layer 1's input (odd)
          EXPECT_EQ(has(Buf::offload_ring, 0), rc.offload_inputs && F > 2) << tag;  // layer 2's (even)
          for (Buf id : {Buf::host_master, Buf::host_adam_m, Buf::host_adam_v, Buf::host_grad_stage, Buf::host_weight_stage})
            EXPECT_EQ(has(id), rc.offload_optimizer > 0) << tag;
          EXPECT_EQ(has(Buf::host_grad_stage, 1), rc.offload_optimizer > 0) << tag;
          for (Buf id : {Buf::master_weights, Buf::compute_weights, Buf::gradients, Buf::adam_m, Buf::adam_v,
                         Buf::adamw_chunks, Buf::attention_workspace, Buf::reduce_partials, Buf::reduce_result,
                         Buf::gemm_workspace, Buf::dres, Buf::dh, Buf::dy_bf16, Buf::dqkv, Buf::rope_cos})
            EXPECT_TRUE(has(id)) << tag;
        }
}

TEST(BufferTable, RecomputationKeepsOneLayerAndOffloadKeepsTwoInputs) {
  // 0.6B, 28 layers, one rank: full recomputation owns 28 inputs and one layer's other fields; offloading keeps the
  // first input and two ring buffers on the device, the other 27 inputs in pinned host memory; selective shares the
  // norm outputs and q, k of one layer.
  const ModelConfig c = model_preset("0.6B");
  auto owned = [&](const MemoryPolicy& rc, Buf id) {
    int n = 0;
    for (const auto& s : table_of(rank_plan(c, {}, 1, 4096, rc, true)))
      n += s.id == id && s.shares < 0;
    return n;
  };
  EXPECT_EQ(owned({}, Buf::qkv), 28);
  EXPECT_EQ(owned({Recompute::full}, Buf::x_in), 28);
  EXPECT_EQ(owned({Recompute::full}, Buf::qkv), 1);
  EXPECT_EQ(owned({Recompute::full, 0, true}, Buf::x_in), 1);
  EXPECT_EQ(owned({Recompute::full, 0, true}, Buf::offload_ring), 2);
  EXPECT_EQ(owned({Recompute::full, 4}, Buf::qkv), 1 + 24);
  EXPECT_EQ(owned({Recompute::selective}, Buf::h_in), 1);
  EXPECT_EQ(owned({Recompute::selective}, Buf::qkv), 28);
  const auto offload = table_of(rank_plan(c, {}, 1, 4096, {Recompute::full, 0, true}, true));
  EXPECT_EQ(host_pinned_bytes(offload), 27ll * 4096 * c.hidden_size * 2);
}

TEST(BufferTable, OptimizerOnTheHostMovesTheWindowsTailOffTheDevice) {
  // --offload-optimizer=F: the last F of this rank's optimizer window (fp32 master weights and both moments, 12 bytes
  // per element) in pinned host memory with two staging slots each way; the device keeps the head and chunks AdamW
  // over it only; the host's runs cover the tail, segment by segment, and together they cover every tensor once.
  const ModelConfig c = model_preset("0.6B");
  for (int shards : {1, 4})
    for (double f : {0.0, 0.25, 1.0}) {
      const RankPlace r{1, 0, 1, 0, 1, 0, shards, shards - 1};
      const RankPlan in = rank_plan(c, r, 1, 1024, {Recompute::none, 0, false, f}, true);
      const auto table = table_of(in);
      const std::int64_t hb = in.shard.host_begin(f), host = in.shard.size - hb;
      const std::string tag = "shards " + std::to_string(shards) + " fraction " + std::to_string(f);
      EXPECT_EQ(hb % 64 == 0 || hb == in.shard.size, true) << tag;
      EXPECT_NEAR(static_cast<double>(host), f * static_cast<double>(in.shard.size), 64) << tag;
      std::map<Buf, std::int64_t> bytes;
      for (const auto& s : table) bytes[s.id] += s.bytes();
      EXPECT_EQ(bytes[Buf::master_weights], 4 * hb) << tag;
      EXPECT_EQ(bytes[Buf::adam_m] + bytes[Buf::adam_v], 8 * hb) << tag;
      EXPECT_EQ(bytes[Buf::host_master] + bytes[Buf::host_adam_m] + bytes[Buf::host_adam_v], 12 * host) << tag;
      const std::int64_t piece = std::min(host, kHostAdamWPieceElements);
      EXPECT_EQ(host_pinned_bytes(table), 12 * host + 2 * piece * (4 + 2)) << tag;
      const OptimizerSegments seg = optimizer_segments(in.local, c.num_layers, in.shard, hb);
      ASSERT_EQ(seg.host.size(), seg.segments.size()) << tag;
      EXPECT_EQ(bytes[Buf::adamw_chunks], static_cast<std::int64_t>(seg.chunks.size() * sizeof(AdamWChunk))) << tag;
      std::int64_t covered = 0;
      for (const auto& ch : seg.chunks) {
        EXPECT_LE(ch.end, hb) << tag;
        covered += ch.end - ch.begin;
      }
      std::int64_t last_end = hb;
      for (const auto& runs : seg.host)
        for (const auto& run : runs) {
          EXPECT_GE(run.begin, last_end) << tag << ": the host's runs ascend through the tail";
          last_end = run.end;
          covered += run.end - run.begin;
        }
      // Every element of the window that belongs to a tensor (the last shard's window ends in padding).
      const std::int64_t real = std::min(in.shard.begin + in.shard.size, in.local.total_elements()) - in.shard.begin;
      EXPECT_EQ(covered, real) << tag;
    }
}

// The attention backward's workspace (buffer_table.h estimated_attention_workspace): the own kernels' exactly as the
// kernels ask (a dQ accumulator only for the flash head sizes); cuDNN's with an fp32 dQ accumulator over the query rows
// and as much per key row — under context parallelism rank r's later chunk sees (2cp − r) chunks of keys, so rank 0
// needs one chunk of keys more than rank 1 (the tiny model at cp 2 on an H100: 98,304 and 65,536 bytes above the old
// estimate's, measured).
TEST(BufferTable, TheAttentionWorkspaceFollowsTheKernelsAndTheRanksKeys) {
  const ModelConfig tiny = model_preset("tiny"), m06 = model_preset("0.6B");  // head_dim 16 (fallback) and 128 (flash)
  auto ws = [](const ModelConfig& c, int cp, int cp_rank, bool cudnn) {
    return estimated_attention_workspace(rank_plan(c, RankPlace{1, 0, cp, cp_rank, 1, 0, 1, 0}, 1, 256, {}, cudnn));
  };
  const std::int64_t H = tiny.num_heads, D = tiny.head_dim;
  EXPECT_EQ(ws(tiny, 1, 0, false), 4 * H * 256);                           // delta only: no flash kernels at D = 16
  EXPECT_EQ(ws(m06, 1, 0, false), 4 * m06.num_heads * 256 * (1 + m06.head_dim));  // delta and the dQ accumulator
  EXPECT_EQ(ws(tiny, 1, 0, true), 2 * 4 * H * 256 * D + 4 * H * 256 + 256);
  EXPECT_EQ(ws(tiny, 2, 0, true), 4 * H * D * (64 + 256) + 4 * H * 64 + 256);  // chunks 0 and 3: keys up to 256
  EXPECT_EQ(ws(tiny, 2, 0, true) - ws(tiny, 2, 1, true), 4 * H * D * 64);     // chunks 1 and 2: keys up to 192
  EXPECT_EQ(ws(tiny, 2, 0, true) - (2 * 4 * H * 64 * D + 4 * H * 64 + 256), 98304);  // the measured difference
}

// --precision fp8 adds, per layer of the stage, two bytes per element of its four linear weights (E4M3 and its
// transpose; padding only where a width is not a multiple of 16), and the casts' scratch and scale table; nothing else
// changes. The plan (which reads the same table) counts them.
TEST(BufferTable, Fp8AddsTheWeightCopiesAndTheCastsScratchAndNothingElse) {
  for (const char* m : {"tiny", "0.6B", "8B"})
    for (int tp : {1, 2, 4})
      for (int pp : {1, 2}) {
        const ModelConfig c = model_preset(m);
        const RankPlace r{tp, 0, 1, 0, pp, 0, 1, 0};
        RankPlanInput in;
        in.model = c, in.rank = r, in.max_batch = 1, in.max_seq = 1000, in.micro_batches = pp > 1 ? 4 : 1;
        const RankPlan bf16 = plan_rank(in);
        in.fp8 = true;
        const RankPlan fp8 = plan_rank(in);
        const auto a = table_of(bf16), b = table_of(fp8);
        const std::string tag = std::string(m) + " tp" + std::to_string(tp) + " pp" + std::to_string(pp);
        std::int64_t weights = 0, scratch = 0, other = 0;
        for (const BufferSpec& s : b) {
          if (s.id == Buf::fp8_weights) weights += s.bytes();
          else if (s.id == Buf::fp8_scales || s.id == Buf::fp8_act || s.id == Buf::fp8_grad || s.id == Buf::fp8_grad_t)
            scratch += s.bytes();
          else other += s.bytes();
        }
        std::int64_t bf16_total = 0;
        for (const BufferSpec& s : a) bf16_total += s.bytes();
        EXPECT_EQ(other, bf16_total) << tag;
        const TpDims& d = fp8.tp;
        const std::int64_t H = c.hidden_size, qkv = d.q_dim + 2 * d.kv_dim;
        auto both = [](std::int64_t out, std::int64_t in_) { return out * fp8_padded(in_) + in_ * fp8_padded(out); };
        const std::int64_t layer = both(qkv, H) + both(H, d.q_dim) + both(2 * d.inter, H) + both(H, d.inter);
        EXPECT_EQ(weights, fp8.stage.layers() * layer) << tag;
        if (std::string(m) != "tiny") EXPECT_EQ(layer, 2 * (qkv * H + H * d.q_dim + 2 * d.inter * H + H * d.inter)) << tag;
        const std::int64_t T = fp8.tokens, widest = std::max({H, d.q_dim, d.inter, qkv, 2 * d.inter});
        EXPECT_GT(scratch, 0) << tag;
        EXPECT_LE(scratch, 4 * fp8_padded(T) * fp8_padded(widest) + 4096) << tag;  // four operands at most, and the scales
        PlannedRun p{c, 1, 1000, tp, 1, pp, 1};
        p.micro_batches = pp > 1 ? 4 : 1;
        const auto plan_bf16 = plan_cuda_rank_memory(p).total();
        p.fp8 = true;
        EXPECT_EQ(plan_cuda_rank_memory(p).total() - plan_bf16, weights + scratch) << tag;
        // Cast per layer: one layer's copies, the rest as kept.
        in.recompute.fp8_weights_per_layer = true;
        std::int64_t one = 0;
        for (const BufferSpec& s : table_of(plan_rank(in))) one += s.id == Buf::fp8_weights ? s.bytes() : 0;
        EXPECT_EQ(one, layer) << tag;
        p.recompute.fp8_weights_per_layer = true;
        EXPECT_EQ(plan_cuda_rank_memory(p).total() - plan_bf16, layer + scratch) << tag;
      }
}

// The linear layers' shapes the CUDA engine's GEMMs read in either precision (train/cuda_engine/linears.h, from
// model/fp8_layout.h) are the local parameter table's: q|k|v and gate|up adjacent, each one [out, in] matrix.
TEST(BufferTable, TheLinearLayersShapesAreTheParameterTables) {
  for (const char* m : {"tiny", "0.6B", "8B"})
    for (int tp : {1, 2, 4, 8}) {
      const ModelConfig c = model_preset(m);
      RankPlanInput in;
      in.model = c, in.rank = RankPlace{tp, tp - 1, 1, 0, 1, 0, 1, 0}, in.max_batch = 1, in.max_seq = 1024;
      const RankPlan r = plan_rank(in);
      const Fp8Layout f = fp8_layout(r);
      const auto& e = r.local.entries();
      const auto& p = r.local.layers[0];
      auto shape = [&](Fp8Linear w) { return f.weights[static_cast<std::size_t>(w)]; };
      auto rows = [&](std::size_t i) { return e[i].shape[0]; };
      const std::string tag = std::string(m) + " tp" + std::to_string(tp);
      EXPECT_EQ(shape(Fp8Linear::qkv).out, rows(p.q_proj) + rows(p.k_proj) + rows(p.v_proj)) << tag;
      EXPECT_EQ(e[p.k_proj].offset, e[p.q_proj].offset + e[p.q_proj].numel) << tag;  // adjacent: one matrix
      EXPECT_EQ(e[p.v_proj].offset, e[p.k_proj].offset + e[p.k_proj].numel) << tag;
      EXPECT_EQ(shape(Fp8Linear::qkv).in, e[p.q_proj].shape[1]) << tag;
      EXPECT_EQ(shape(Fp8Linear::o).out, rows(p.o_proj)) << tag;
      EXPECT_EQ(shape(Fp8Linear::o).in, e[p.o_proj].shape[1]) << tag;
      EXPECT_EQ(shape(Fp8Linear::gate_up).out, rows(p.gate_proj) + rows(p.up_proj)) << tag;
      EXPECT_EQ(e[p.up_proj].offset, e[p.gate_proj].offset + e[p.gate_proj].numel) << tag;
      EXPECT_EQ(shape(Fp8Linear::gate_up).in, e[p.gate_proj].shape[1]) << tag;
      EXPECT_EQ(shape(Fp8Linear::down).out, rows(p.down_proj)) << tag;
      EXPECT_EQ(shape(Fp8Linear::down).in, e[p.down_proj].shape[1]) << tag;
    }
}
