// Tensor and sequence parallelism on the CPU backend over MPI: the split arithmetic on its own, then the parallel
// runs under mpirun against one rank — the golden check at tp 2, 4 and 8 (8 replicates the tiny model's 4 KV heads;
// the multi-query file's one KV head is replicated at every tp),
// an untied model whose tokens do not divide by tp (padded sequence shards), and training losses at tp 1, 2, 4 and
// tp 2 × dp 2. Bad layouts end with one clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>

#include "cli_runner.h"
#include "killed_rank.h"
#include "config/model_config.h"
#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "model/init.h"
#include "model/param_table.h"
#include "model/tensor_parallel.h"

namespace fs = std::filesystem;
using namespace qwen3;

TEST(TensorParallelSplit, SharesCoverEveryDimensionOnce) {
  const ModelConfig c = model_preset("8B");  // 32 heads, 8 KV heads, intermediate 12288, vocabulary 151936
  for (int tp : {1, 2, 4, 8}) {
    std::int64_t heads = 0, inter = 0, vocab = 0;
    for (int r = 0; r < tp; ++r) {
      const TpDims d = tp_dims(c, r, tp);
      EXPECT_EQ(d.head0, heads);
      heads += d.heads, inter += d.inter, vocab += d.vocab;
      EXPECT_EQ(d.kv_replicas, 1);
      EXPECT_EQ(d.kv_heads * tp, c.num_kv_heads);
    }
    EXPECT_EQ(heads, c.num_heads);
    EXPECT_EQ(inter, c.intermediate_size);
    EXPECT_EQ(vocab, c.vocab_size);
  }
  // tp 16 (two nodes) replicates each KV head on two adjacent ranks, whose query heads are all in that KV head's group.
  for (int r = 0; r < 16; ++r) {
    const TpDims d = tp_dims(c, r, 16);
    EXPECT_EQ(d.kv_replicas, 2);
    EXPECT_EQ(d.kv_heads, 1);
    EXPECT_EQ(d.kv_head0, r / 2);
    EXPECT_EQ(d.head0 / (c.num_heads / c.num_kv_heads), d.kv_head0);
    EXPECT_EQ((d.head0 + d.heads - 1) / (c.num_heads / c.num_kv_heads), d.kv_head0);
  }
}

TEST(TensorParallelSplit, ClearErrorsForSizesThatDoNotDivide) {
  const ModelConfig tiny = model_preset("tiny");  // 8 heads, 4 KV heads, intermediate 192, vocabulary 512
  try {
    tp_dims(tiny, 0, 3);
    FAIL() << "tp 3 accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--tp 3: the model's attention heads (8) is not divisible"), std::string::npos) << e.what();
  }
  ModelConfig odd_vocab = tiny;
  odd_vocab.vocab_size = 510;
  EXPECT_THROW(tp_dims(odd_vocab, 0, 4), UsageError);
  ModelConfig kv3 = tiny;
  kv3.num_heads = 12;
  kv3.num_kv_heads = 3;
  EXPECT_THROW(tp_dims(kv3, 0, 2), UsageError);  // 3 KV heads: neither divisible by 2 nor dividing it
}

TEST(TensorParallelSplit, ShardInitComputesTheSameValuesAsTheWholeTensor) {
  // init_tensor_block (the CUDA engine's shard-only init) against init_tensor followed by extract_shard.
  ModelConfig c = model_preset("tiny");
  const ParamTable full(c);
  for (int tp : {2, 4, 8})
    for (int rank = 0; rank < tp; ++rank) {
      const TpDims d = tp_dims(c, rank, tp);
      for (std::size_t i = 0; i < full.entries().size(); ++i) {
        const auto& f = full.entries()[i];
        std::vector<float> whole(static_cast<std::size_t>(f.numel));
        init_tensor(full, i, 99, 0.02, whole.data());
        const ShardSpec sh = shard_spec(full, i, d);
        const std::int64_t rows = f.shape.size() < 2 ? 1 : f.shape[0], cols = f.numel / rows;
        const std::int64_t r0 = sh.dim == 0 ? sh.begin : 0, nr = sh.dim == 0 ? sh.count : rows;
        const std::int64_t c0 = sh.dim == 1 ? sh.begin : 0, nc = sh.dim == 1 ? sh.count : cols;
        std::vector<float> expected(static_cast<std::size_t>(nr * nc)), got(expected.size());
        extract_shard(sh, f.shape, whole.data(), expected.data());
        init_tensor_block(full, i, 99, 0.02, r0, nr, c0, nc, got.data());
        ASSERT_EQ(got, expected) << f.name << " tp " << tp << " rank " << rank;
      }
    }
}

TEST(TensorParallelSplit, ShardsReassembleEveryTensor) {
  const ModelConfig c = model_preset("tiny");
  const ParamTable full(c);
  for (int tp : {2, 4, 8}) {
    for (std::size_t i = 0; i < full.entries().size(); ++i) {
      const auto& p = full.entries()[i];
      std::vector<float> src(static_cast<std::size_t>(p.numel)), back(src.size(), -1.0f);
      std::iota(src.begin(), src.end(), 0.0f);
      for (int r = 0; r < tp; ++r) {
        const TpDims d = tp_dims(c, r, tp);
        const ParamTable local(c, d.q_dim, d.kv_dim, d.inter, d.vocab);
        std::vector<float> shard(static_cast<std::size_t>(local.entries()[i].numel));
        const ShardSpec s = shard_spec(full, i, d);
        extract_shard(s, p.shape, src.data(), shard.data());
        insert_shard(s, p.shape, shard.data(), back.data());
      }
      EXPECT_EQ(src, back) << p.name << " tp " << tp;
    }
  }
}

namespace {


test::CliResult golden_at(int tp, const std::string& file) {
  return test::run_command(test::mpirun(tp) + "'" + test::bin_dir() + "/qwen3-golden-check' --golden '" +
                   test::test_data_dir() + "/" + file + "' --tp " + std::to_string(tp));
}
}  // namespace

TEST(TensorParallelMpirun, GoldenCheckPassesAtTp2And4AndWithReplicatedKvHeads) {
  for (int tp : {2, 4, 8}) {
    const auto r = golden_at(tp, "qwen3-tiny.h5");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("0 out of tolerance: PASS"), std::string::npos) << "tp " << tp << "\n" << r.output;
    EXPECT_NE(r.output.find("tensor parallelism: " + std::to_string(tp) + " ranks"), std::string::npos) << r.output;
  }
  // One KV head (multi-query), replicated on 2, 4 and 8 ranks.
  for (int tp : {2, 4, 8}) {
    const auto r = golden_at(tp, "qwen3-mqa.h5");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("0 out of tolerance: PASS"), std::string::npos) << "tp " << tp << "\n" << r.output;
  }
  // 3 × 37 = 111 tokens over 2 ranks: the sequence shards are padded.
  const auto r = golden_at(2, "qwen3-small-untied.h5");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0 out of tolerance: PASS"), std::string::npos) << r.output;
}

TEST(TensorParallelMpirun, TrainingLossesEqualOneRank) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_tp_training";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 16, 77, false);
  auto train = [&](int np, int tp) {
    const std::string out = (dir / ("np" + std::to_string(np) + "tp" + std::to_string(tp) + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                             data + "' --seq-len 64 --global-batch 4 --micro-batch 2 --steps 3 --lr 1e-2 --tp " +
                             std::to_string(tp) + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  };
  const std::string one = train(1, 1);
  h5::Handle ref = h5::open_read(one, "results");
  for (auto [np, tp] : {std::pair{2, 2}, std::pair{4, 4}, std::pair{4, 2}}) {
    h5::Handle f = h5::open_read(train(np, tp), "results");
    EXPECT_EQ(h5::read_attr_string(h5::open_group(f.get(), "config").get(), "tp"), std::to_string(tp));
    for (const char* s : {"steps/loss", "steps/grad_norm"}) {
      const auto a = h5::read_f64(ref.get(), s), b = h5::read_f64(f.get(), s);
      ASSERT_EQ(b.size(), 3u) << s;
      for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << s << " step " << i << " np " << np << " tp " << tp;
    }
  }
}

TEST(TensorParallelMpirun, BadLayoutsEndWithOneClearMessage) {
  auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-golden-check' --golden '" + test::test_data_dir() +
                     "/qwen3-tiny.h5' --tp 4");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--tp 4 × --pp 1 does not divide the job's 2 ranks"), std::string::npos) << r.output;
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_tp_bad";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {32}, 8, 5, false);
  const std::string pretrain = "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" + data +
                               "' --seq-len 32 --global-batch 4 --steps 1 --overwrite --out '" + (dir / "x.h5").string() + "' ";
  struct Case { int np; std::string args, message; };
  for (const Case& c : {Case{3, "--tp 3", "--tp 3: the model's attention heads (8) is not divisible by the tensor-parallel size"},
                        Case{3, "--tp 2", "not divisible"},
                        Case{2, "--tp 16", "--tp 16: the model's attention heads (8) is not divisible"}}) {
    r = test::run_command(test::mpirun(c.np) + pretrain + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST(TensorParallelMpirun, KilledRankEndsTheJobAndTheResultsFileSaysSo) {
  const auto k = test::kill_rank_during_run("cpu", 2, "qwen3_killed_rank");
  ASSERT_TRUE(k.mpirun_ended) << k.output;
  EXPECT_FALSE(k.mpirun_exit_zero) << k.output;
  EXPECT_LT(k.seconds, 60) << k.output;
  EXPECT_NE(k.log.find("rank 1"), std::string::npos) << k.log;
  EXPECT_EQ(k.status, "error") << k.log;
  EXPECT_NE(k.error_message.find("terminated by signal"), std::string::npos) << k.error_message;
}
