// Pipeline parallelism on the CPU backend over MPI: the 1F1B schedule run through a rendezvous simulator (every
// transfer must meet its partner, nothing may deadlock), the balanced stage split, then under mpirun: training at
// pp 2, 3 (uneven), 4, tp 2 × pp 2 and dp 2 × pp 2 against one rank, the golden check through the stages,
// gradient accumulation against one big batch, and clear messages for bad splits.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "cli_runner.h"
#include "config/model_config.h"
#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "model/pipeline_split.h"
#include "train/pipeline_schedule.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

// Runs every stage's schedule with blocking, unbuffered transfers: an exchange completes only when each of its
// transfers meets the matching one in the neighbour's current exchange. Returns false on deadlock.
struct SimResult {
  bool completed = false;
  std::vector<std::vector<std::string>> compute_order;  // per stage: "F0", "B0", ...
  std::vector<int> max_in_flight;
};

SimResult simulate(int p, int m) {
  std::vector<std::vector<PipeOp>> prog(p);
  for (int s = 0; s < p; ++s) prog[s] = one_f_one_b(s, p, m);
  std::vector<std::size_t> pc(p, 0);
  SimResult r;
  r.compute_order.resize(p);
  r.max_in_flight.assign(p, 0);
  std::vector<int> in_flight(p, 0);
  // A transfer as (from, to, kind, micro); kind 0 activations, 1 gradients.
  using Msg = std::tuple<int, int, int, int>;
  auto transfers = [&](int s, const PipeOp& op, bool sends) {
    std::vector<Msg> out;
    if (sends) {
      if (op.send_fwd >= 0) out.emplace_back(s, s + 1, 0, op.send_fwd);
      if (op.send_bwd >= 0) out.emplace_back(s, s - 1, 1, op.send_bwd);
    } else {
      if (op.recv_fwd >= 0) out.emplace_back(s - 1, s, 0, op.recv_fwd);
      if (op.recv_bwd >= 0) out.emplace_back(s + 1, s, 1, op.recv_bwd);
    }
    return out;
  };
  for (int guard = 0; guard < 100000; ++guard) {
    bool progressed = false, done = true;
    for (int s = 0; s < p; ++s) {
      if (pc[s] >= prog[s].size()) continue;
      done = false;
      const PipeOp& op = prog[s][pc[s]];
      if (op.kind != PipeOp::exchange) {
        r.compute_order[s].push_back(describe(op));
        in_flight[s] += op.kind == PipeOp::forward ? 1 : -1;
        r.max_in_flight[s] = std::max(r.max_in_flight[s], in_flight[s]);
        ++pc[s];
        progressed = true;
        continue;
      }
      // Every transfer of this exchange must be matched by the peer's current exchange.
      bool all_matched = true;
      for (bool sends : {true, false})
        for (const Msg& msg : transfers(s, op, sends)) {
          const int peer = sends ? std::get<1>(msg) : std::get<0>(msg);
          if (pc[peer] >= prog[peer].size() || prog[peer][pc[peer]].kind != PipeOp::exchange) {
            all_matched = false;
            continue;
          }
          const auto theirs = transfers(peer, prog[peer][pc[peer]], !sends);
          if (std::find(theirs.begin(), theirs.end(), msg) == theirs.end()) all_matched = false;
        }
      if (!all_matched) continue;
      // Complete this exchange and remove the matched halves from the peers' exchanges.
      for (bool sends : {true, false})
        for (const Msg& msg : transfers(s, op, sends)) {
          const int peer = sends ? std::get<1>(msg) : std::get<0>(msg);
          PipeOp& theirs = prog[peer][pc[peer]];
          const int micro = std::get<3>(msg);
          if (sends && std::get<2>(msg) == 0 && theirs.recv_fwd == micro) theirs.recv_fwd = -1;
          if (sends && std::get<2>(msg) == 1 && theirs.recv_bwd == micro) theirs.recv_bwd = -1;
          if (!sends && std::get<2>(msg) == 0 && theirs.send_fwd == micro) theirs.send_fwd = -1;
          if (!sends && std::get<2>(msg) == 1 && theirs.send_bwd == micro) theirs.send_bwd = -1;
          const PipeOp& t = theirs;
          if (t.send_fwd < 0 && t.recv_fwd < 0 && t.send_bwd < 0 && t.recv_bwd < 0) ++pc[peer];
        }
      ++pc[s];
      progressed = true;
    }
    if (done) {
      r.completed = true;
      return r;
    }
    if (!progressed) return r;
  }
  return r;
}

}  // namespace

TEST(PipelineSchedule, OneFOneBCompletesWithoutDeadlockAndKeepsItsOrder) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 12; ++m) {
      SCOPED_TRACE("p " + std::to_string(p) + ", m " + std::to_string(m));
      const SimResult r = simulate(p, m);
      ASSERT_TRUE(r.completed) << "deadlock";
      for (int s = 0; s < p; ++s) {
        const auto& order = r.compute_order[s];
        ASSERT_EQ(order.size(), static_cast<std::size_t>(2 * m));
        int next_f = 0, next_b = 0;
        for (const auto& op : order) {
          if (op[0] == 'F') EXPECT_EQ(op, "F" + std::to_string(next_f++));
          else {
            EXPECT_EQ(op, "B" + std::to_string(next_b++));
            EXPECT_LT(next_b, next_f + 1) << "backward before its forward";
          }
        }
        EXPECT_EQ(r.max_in_flight[s], in_flight(s, p, m)) << "stage " << s;
      }
    }
}

TEST(PipelineSchedule, BubbleFormula) {
  EXPECT_DOUBLE_EQ(bubble_fraction(1, 8), 0.0);
  EXPECT_DOUBLE_EQ(bubble_fraction(4, 8), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(bubble_fraction(8, 32), 7.0 / 39.0);
}

TEST(PipelineSplit, BalancedSplitsCoverTheModelAndCountTheOutputProjection) {
  for (const std::string name : {"0.6B", "1.7B", "8B", "14B", "32B"}) {
    const ModelConfig c = model_preset(name);
    for (int pp : {2, 3, 4, 8}) {
      const auto counts = pipeline_layer_counts(c, pp, 4096);
      ASSERT_EQ(counts.size(), static_cast<std::size_t>(pp)) << name;
      std::int64_t sum = 0;
      for (auto n : counts) {
        EXPECT_GE(n, 1) << name << " pp " << pp;
        sum += n;
      }
      EXPECT_EQ(sum, c.num_layers) << name << " pp " << pp;
      // The output projection (151,936 × hidden) weighs several layers: the last stage holds fewer than the most.
      EXPECT_LT(counts.back(), *std::max_element(counts.begin(), counts.end())) << name << " pp " << pp;
    }
  }
  // 28 layers over 8 stages (the published study could not): the 0.6B and 1.7B models.
  EXPECT_EQ(pipeline_layer_counts(model_preset("0.6B"), 8, 4096).size(), 8u);
  const auto r = stage_range({3, 4, 4}, 1);
  EXPECT_EQ(r.first_layer, 3);
  EXPECT_EQ(r.last_layer, 7);
  EXPECT_FALSE(r.first);
  EXPECT_FALSE(r.last);
}

TEST(PipelineSplit, BadSplitsNameTheProblem) {
  const ModelConfig tiny = model_preset("tiny");
  auto message = [&](auto&& f) {
    try {
      f();
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { pipeline_layer_counts(tiny, 8, 64); }).find("--pp 8 exceeds the model's 4 layers"), std::string::npos);
  EXPECT_NE(message([&] { pipeline_layer_counts(tiny, 3, 64, {1, 1}); }).find("--pp-layers lists 2 stages holding 2 layers"),
            std::string::npos);
  EXPECT_NE(message([&] { parse_layer_list("--pp-layers", "1,x,2"); }).find("not a comma-separated list"), std::string::npos);
  EXPECT_NE(message([&] { parse_layer_list("--pp-layers", "2,0,2"); }).find("not a comma-separated list"), std::string::npos);
  EXPECT_EQ(parse_layer_list("--pp-layers", "1,1,2"), (std::vector<std::int64_t>{1, 1, 2}));
}

TEST(PipelineMpirun, TrainingEqualsOneRankForEveryLayout) {
  const fs::path dir = test::fresh_dir("qwen3_pp_training");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 32, 21, false);
  auto train = [&](int np, const std::string& args, const std::string& tag) {
    const std::string out = (dir / (tag + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                                     data + "' --seq-len 64 --global-batch 8 --steps 3 --lr 1e-2 " + args + " --out '" +
                                     out + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    return out;
  };
  h5::Handle ref = h5::open_read(train(1, "--micro-batch 1", "one"), "results");
  struct Case {
    int np;
    std::string args, tag;
  };
  for (const Case& c : {Case{2, "--pp 2", "pp2"}, Case{4, "--pp 4", "pp4"}, Case{3, "--pp 3", "pp3"},
                        Case{3, "--pp 3 --pp-layers 2,1,1", "pp3-uneven"}, Case{4, "--pp 2 --tp 2", "tp2pp2"},
                        Case{4, "--pp 2", "dp2pp2"}, Case{2, "--cp 2", "cp2"}, Case{4, "--cp 2 --pp 2", "cp2pp2"}}) {
    h5::Handle f = h5::open_read(train(c.np, c.args, c.tag), "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok") << c.tag;
    for (const char* s : {"steps/loss", "steps/grad_norm"}) {
      const auto a = h5::read_f64(ref.get(), s), b = h5::read_f64(f.get(), s);
      ASSERT_EQ(b.size(), 3u) << c.tag;
      // Same float32 arithmetic per tensor; sums over stages/ranks in another order: 1e-5 relative.
      for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << c.tag << " " << s << " step " << i;
    }
    // The layers of each stage and every rank's timings are in the results file.
    const auto first = h5::read_f64(f.get(), "stages/first_layer"), end = h5::read_f64(f.get(), "stages/end_layer");
    EXPECT_EQ(end.back(), 4.0) << c.tag;
    if (c.tag == "pp3-uneven") EXPECT_EQ(first, (std::vector<double>{0, 2, 3}));
    EXPECT_EQ(h5::read_f64(f.get(), "ranks/compute_s").size(), static_cast<std::size_t>(c.np)) << c.tag;
    EXPECT_EQ(h5::read_f64(f.get(), "ranks/pipeline_wait_s").size(), static_cast<std::size_t>(c.np)) << c.tag;
  }
}

TEST(PipelineMpirun, GradientAccumulationEqualsOneBigBatch) {
  const fs::path dir = test::fresh_dir("qwen3_accumulation");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 16, 5, false);
  auto losses = [&](int micro_batch, int np, const std::string& args) {
    const std::string out = (dir / ("mb" + std::to_string(micro_batch) + "np" + std::to_string(np) + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                                     data + "' --seq-len 64 --global-batch 4 --steps 3 --lr 1e-2 --micro-batch " +
                                     std::to_string(micro_batch) + " " + args + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    h5::Handle f = h5::open_read(out, "results");
    return std::pair{h5::read_f64(f.get(), "steps/loss"), h5::read_f64(f.get(), "steps/grad_norm")};
  };
  const auto big = losses(4, 1, "");        // one micro-batch of 4 sequences per step
  const auto accumulated = losses(1, 1, "");  // 4 micro-batches of 1
  const auto piped = losses(1, 2, "--pp 2");  // 4 micro-batches through two stages
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(big.first[i], accumulated.first[i], 1e-5 * big.first[i]) << "step " << i;
    EXPECT_NEAR(big.second[i], accumulated.second[i], 1e-5 * big.second[i]) << "step " << i;
    EXPECT_NEAR(big.first[i], piped.first[i], 1e-5 * big.first[i]) << "step " << i;
  }
}

TEST(PipelineMpirun, GoldenCheckPassesThroughTheStages) {
  struct Case {
    int np;
    std::string file, args;
  };
  // Context parallelism splits every sequence: with four partial sums of each weight gradient (cp 4, or cp 2 × dp 2)
  // AdamW's first step (≈ lr·sign(g)) turns their float32 rounding into a 1.0–1.2e-5 after-step error on the tiny
  // model's near-zero gradients, hence 2e-5 there; everything else holds 1e-5.
  for (const Case& c : {Case{2, "qwen3-tiny.h5", "--pp 2"}, Case{4, "qwen3-tiny.h5", "--pp 4"},
                        Case{4, "qwen3-tiny.h5", "--tp 2 --pp 2"}, Case{2, "qwen3-tiny.h5", ""},
                        Case{3, "qwen3-small-untied.h5", "--pp 3"}, Case{4, "qwen3-mqa.h5", "--pp 2"},
                        Case{2, "qwen3-tiny.h5", "--cp 2"}, Case{2, "qwen3-mqa.h5", "--cp 2"},
                        Case{4, "qwen3-tiny.h5", "--cp 2 --tp 2"}, Case{4, "qwen3-tiny.h5", "--cp 4 --tolerance 2e-5"}}) {
    const auto r = test::run_command(test::mpirun(c.np) + "'" + test::bin_dir() + "/qwen3-golden-check' --golden '" +
                                     test::test_data_dir() + "/" + c.file + "' " + c.args);
    EXPECT_EQ(r.exit_code, 0) << c.file << " " << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("0 out of tolerance: PASS"), std::string::npos) << c.file << " " << c.args << "\n" << r.output;
  }
}

TEST(PipelineMpirun, BadPipelineLayoutsEndWithOneClearMessage) {
  const fs::path dir = test::fresh_dir("qwen3_pp_bad");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 8, 5, false);
  const std::string pretrain = "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" + data +
                               "' --seq-len 64 --global-batch 4 --steps 1 --out '" + (dir / "r.h5").string() + "' ";
  struct Case {
    int np;
    std::string args, message;
  };
  for (const Case& c : {Case{2, "--pp 3", "is not divisible by tp·cp·pp = 3"},
                        Case{2, "--pp 2 --pp-layers 1,1,2", "--pp-layers lists 3 stages holding 4 layers"},
                        Case{2, "--pp 2 --pp-layers 2,x", "not a comma-separated list of positive layer counts"},
                        Case{2, "--cp 3", "--seq-len 64 must divide by 2 × cp"}}) {
    const auto r = test::run_command(test::mpirun(c.np) + pretrain + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(dir / "r.h5")) << c.args;
  }
}

TEST(PipelineMpirun, RecomputationGivesBitIdenticalTraining) {
  // Every policy recomputes with the same arithmetic in the same order on the CPU reference — selective (norm outputs,
  // q and k), full (whole layers from their inputs), full for the first layer of each stage only — so the same losses
  // and gradient norms to the last bit, at any layout. The results file names the policy.
  const fs::path dir = test::fresh_dir("qwen3_recompute");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 16, 8, false);
  auto run = [&](int np, const std::string& args, const std::string& tag, const std::string& mode) {
    const std::string out = (dir / (tag + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                                     data + "' --seq-len 64 --global-batch 4 --steps 3 --lr 1e-2 " + args + " --out '" +
                                     out + "' --overwrite");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    h5::Handle f = h5::open_read(out, "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "recompute"), mode) << tag;
    return std::pair{h5::read_f64(f.get(), "steps/loss"), h5::read_f64(f.get(), "steps/grad_norm")};
  };
  for (const auto& [np, layout] : {std::pair{1, std::string("")}, std::pair{4, std::string("--tp 2 --pp 2")}}) {
    const auto plain = run(np, layout, "none" + std::to_string(np), "none");
    for (const auto& [policy, mode] : {std::pair<std::string, std::string>{"--recompute selective", "selective"},
                                       {"--recompute full", "full"}, {"--recompute full --recompute-num-layers 1", "full"}}) {
      const auto again = run(np, layout + " " + policy, "again" + std::to_string(np), mode);
      EXPECT_EQ(plain.first, again.first) << layout << " " << policy;
      EXPECT_EQ(plain.second, again.second) << layout << " " << policy;
    }
  }
}

TEST(PipelineMpirun, PhasesAreNvtxRangesInOrder) {
  // The 1F1B phases are NVTX ranges (what Nsight Systems shows): recorded here by the test's NVTX injection library,
  // which a CUDA build puts beside the executables. Every stage of every step opens warm-up, steady and cool-down in
  // that order, each closed before the next opens. The CPU backend runs the same driver, so no GPU is needed.
  const std::string recorder = test::bin_dir() + "/libqwen3_nvtx_recorder.so";
  if (!fs::exists(recorder)) GTEST_SKIP() << "no NVTX recorder: a build without CUDA has no NVTX ranges";
  const fs::path dir = test::fresh_dir("qwen3_pp_nvtx");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {32}, 16, 5, false);
  const std::string record = (dir / "ranges").string();
  const auto r = test::run_command("NVTX_INJECTION64_PATH='" + recorder + "' QWEN3_NVTX_RECORD='" + record + "' " +
                                   test::mpirun(2) + "-x NVTX_INJECTION64_PATH -x QWEN3_NVTX_RECORD '" + test::bin_dir() +
                                   "/qwen3-pretrain' --model tiny --data '" + data + "' --seq-len 32 --global-batch 4 "
                                   "--micro-batch 1 --steps 2 --pp 2 --out '" + (dir / "run.h5").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("ranges.", 0) != 0) continue;
    ++files;
    std::ifstream in(entry.path());
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::vector<std::string> expected;
    for (int step = 0; step < 2; ++step)
      for (const char* phase : {"1F1B warm-up", "1F1B steady", "1F1B cool-down"})
        expected.insert(expected.end(), {std::string("push ") + phase, "pop"});
    EXPECT_EQ(lines, expected) << entry.path();
  }
  EXPECT_EQ(files, 2) << "one record per rank";
}
