// --precision fp8 on the CPU backend under mpirun: the reference emulates the casts with each tensor's amax reduced
// over the ranks that hold parts of it, so fp8 training at tp 2, cp 2, pp 2 and dp 2 equals one rank's fp8 training
// (as the bf16 layouts equal one rank: tensor_parallel_test.cpp) — and differs from bf16 training, so the casts ran.
// The golden check's FP8 mode passes its bounds (docs/golden.md) at tp 1, 2 and cp 2.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "io/dataset.h"
#include "io/h5.h"

namespace fs = std::filesystem;
using namespace qwen3;

TEST(Fp8Mpirun, TrainingAtEveryLayoutEqualsOneRankAndDiffersFromBf16) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_fp8_layouts";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 16, 77, false);
  auto train = [&](int np, const std::string& layout, const std::string& precision) {
    const std::string out = (dir / (precision + std::to_string(np) + layout + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                                     data + "' --seq-len 64 --global-batch 4 --micro-batch 2 --steps 3 --lr 1e-2 " +
                                     layout + " --precision " + precision + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  };
  h5::Handle ref = h5::open_read(train(1, "", "fp8"), "results");
  h5::Handle bf16 = h5::open_read(train(1, "", "bf16"), "results");
  EXPECT_EQ(h5::read_attr_string(h5::open_group(ref.get(), "config").get(), "precision"), "fp8");
  // qwen3-results says so, with the run's weight policy, and that its MFU is of the bf16 peak
  const auto summary = test::run_program("qwen3-results", "'" + (dir / "fp81.h5").string() + "'");
  EXPECT_NE(summary.output.find(", device cpu, fp8 (weights kept)\n"), std::string::npos) << summary.output;
  EXPECT_NE(summary.output.find("of the bf16 peak"), std::string::npos) << summary.output;
  const auto as_json = nlohmann::json::parse(
      test::run_program("qwen3-results", "'" + (dir / "fp81.h5").string() + "' --format json").output);
  EXPECT_EQ(as_json["config"]["precision"], "fp8");
  EXPECT_EQ(as_json["config"]["fp8_weights"], "kept");
  EXPECT_EQ(as_json["config"]["fp8_scaling"], "current");
  const auto fp8_loss = h5::read_f64(ref.get(), "steps/loss"), bf16_loss = h5::read_f64(bf16.get(), "steps/loss");
  ASSERT_EQ(fp8_loss.size(), 3u);
  EXPECT_GT(std::abs(fp8_loss[2] - bf16_loss[2]), 1e-6 * std::abs(bf16_loss[2])) << "fp8 training equals bf16's";
  EXPECT_LT(std::abs(fp8_loss[2] - bf16_loss[2]), 0.05 * std::abs(bf16_loss[2])) << "fp8 training far from bf16's";
  for (const std::string layout : {"--tp 2", "--cp 2", "--pp 2", ""}) {  // "" on 2 ranks: data parallel
    h5::Handle f = h5::open_read(train(2, layout, "fp8"), "results");
    // Context parallelism sums attention in another order (fp64: ~1e-16 apart), which AdamW's first steps magnify to
    // ~1e-10 in the weights (bf16 too); FP8's rounding then flips a code now and then from the third step on, where a
    // flip moves the gradient norm by ~1e-4 (measured: 9e-5 at step 3 of this run). Its first two steps are compared.
    const int steps = layout == "--cp 2" ? 2 : 3;
    for (const char* s : {"steps/loss", "steps/grad_norm"}) {
      const auto a = h5::read_f64(ref.get(), s), b = h5::read_f64(f.get(), s);
      ASSERT_EQ(b.size(), 3u) << s;
      for (int i = 0; i < steps; ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << s << " step " << i << " " << layout;
    }
  }
}

// Delayed scaling (--fp8-scaling delayed): gate|up's output gradient scaled from the previous step's amax over every
// rank. Its first step is current scaling's (no history yet): the same first gradient norm, and so the same weights
// and loss at the second step. The history's amax is max-reduced over the tensor-, context- and data-parallel ranks
// (each pipeline stage holds its own layers'), so every layout equals one rank again. A bf16 run refuses the option.
TEST(Fp8Mpirun, DelayedScalingEqualsCurrentOnItsFirstStepAndOneRankAtEveryLayout) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_fp8_delayed";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 16, 77, false);
  auto train = [&](int np, const std::string& layout, const std::string& scaling) {
    const std::string out = (dir / (scaling + std::to_string(np) + layout + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                                     data + "' --seq-len 64 --global-batch 4 --micro-batch 2 --steps 3 --lr 1e-2 " +
                                     layout + " --precision fp8 --fp8-scaling " + scaling + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(scaling == "delayed" ? "), fp8 (delayed scaling), " : "), fp8, "), std::string::npos)
        << r.output;  // the run's first line names the recipe
    return out;
  };
  h5::Handle ref = h5::open_read(train(1, "", "delayed"), "results");
  h5::Handle current = h5::open_read(train(1, "", "current"), "results");
  EXPECT_EQ(h5::read_attr_string(h5::open_group(ref.get(), "config").get(), "fp8_scaling"), "delayed");
  // qwen3-results names the recipe for people and tools
  const std::string file = "'" + (dir / "delayed1.h5").string() + "'";
  const auto summary = test::run_program("qwen3-results", file);
  EXPECT_NE(summary.output.find(", fp8 (weights kept, delayed scaling)\n"), std::string::npos) << summary.output;
  EXPECT_EQ(nlohmann::json::parse(test::run_program("qwen3-results", file + " --format json").output)["config"]
                ["fp8_scaling"], "delayed");
  const auto loss = h5::read_f64(ref.get(), "steps/loss"), norm = h5::read_f64(ref.get(), "steps/grad_norm");
  const auto loss_c = h5::read_f64(current.get(), "steps/loss"), norm_c = h5::read_f64(current.get(), "steps/grad_norm");
  ASSERT_EQ(loss.size(), 3u);
  EXPECT_EQ(norm[0], norm_c[0]);
  EXPECT_EQ(loss[1], loss_c[1]);
  // (the later steps equal current scaling's or lie near: power-of-two scales differ only where a value leaves the
  // format's normal range — Fp8.DelayedScalingCastsGateUpsGradientFromThePreviousStepsAmax shows the history used)
  for (int i = 1; i < 3; ++i) EXPECT_NEAR(norm[i], norm_c[i], 0.01 * norm_c[i]) << "step " << i;
  for (const std::string layout : {"--tp 2", "--cp 2", "--pp 2", ""}) {  // "" on 2 ranks: data parallel
    h5::Handle f = h5::open_read(train(2, layout, "delayed"), "results");
    const int steps = layout == "--cp 2" ? 2 : 3;  // as in TrainingAtEveryLayoutEqualsOneRankAndDiffersFromBf16
    for (const char* s : {"steps/loss", "steps/grad_norm"}) {
      const auto a = h5::read_f64(ref.get(), s), b = h5::read_f64(f.get(), s);
      ASSERT_EQ(b.size(), 3u) << s;
      for (int i = 0; i < steps; ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << s << " step " << i << " " << layout;
    }
  }
  const auto bf16 = test::run_command("'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" + data +
                                      "' --seq-len 64 --steps 1 --fp8-scaling delayed --out '" + (dir / "x.h5").string() + "'");
  EXPECT_NE(bf16.exit_code, 0);
  EXPECT_NE(bf16.output.find("--fp8-scaling delayed applies to --precision fp8 only"), std::string::npos) << bf16.output;
}

// Either scaling: with delayed, the check's training steps after the first scale from the step before.
TEST(Fp8Mpirun, TheGoldenCheckPassesItsFp8BoundsAtTp1Tp2AndCp2) {
  for (const std::string scaling : {"current", "delayed"})
    for (auto [np, layout] : {std::pair{1, ""}, std::pair{2, "--tp 2"}, std::pair{2, "--cp 2"}}) {
      const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-golden-check' --golden '" +
                                       test::test_data_dir() + "/qwen3-tiny.h5' --precision fp8 --fp8-scaling " +
                                       scaling + " " + layout);
      EXPECT_EQ(r.exit_code, 0) << scaling << " " << layout << "\n" << r.output;
      EXPECT_NE(r.output.find("precision: fp8, " + scaling + " scaling"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find("0 out of tolerance: PASS"), std::string::npos) << scaling << " " << layout << "\n" << r.output;
    }
}

// A diverging FP8 run (its weights blown up by the learning rate: an amax of inf casts every value to NaN) stops as
// any diverged run does: exit 8, status diverged, no checkpoint of the non-finite step.
TEST(Fp8Mpirun, ADivergingFp8RunStopsAsDiverged) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_fp8_diverge";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string(), out = (dir / "r.h5").string();
  write_synthetic_dataset(data, 512, {64}, 16, 77, false);
  const auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" +
                                   data + "' --seq-len 64 --global-batch 4 --micro-batch 2 --steps 6 --warmup-steps 0 " +
                                   "--lr 1e6 --tp 2 --precision fp8 --save '" + (dir / "ckpt").string() +
                                   "' --save-interval 1 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 8) << r.output;
  EXPECT_NE(r.output.find("diverged at step"), std::string::npos) << r.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "diverged");
}
