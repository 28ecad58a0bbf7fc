// The training run end to end through qwen3-pretrain: a 20-step CPU run writes every results field and its loss
// falls; data parallelism under mpirun equals one rank; every bad input ends with one clear line and its exit code.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "cli_runner.h"
#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "train/lr_schedule.h"
#include "train/sampler.h"

namespace fs = std::filesystem;
using namespace qwen3;
using qwen3::test::run_program;

TEST(LrSchedule, WarmupThenCosineToMin) {
  EXPECT_DOUBLE_EQ(learning_rate(0, 20, 4, 1.0, 0.1), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(3, 20, 4, 1.0, 0.1), 1.0);
  EXPECT_NEAR(learning_rate(19, 20, 4, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(4, 20, 4, 1.0, 0.1), 1.0, 1e-12);  // decay starts at the peak
  for (int s = 5; s < 20; ++s) EXPECT_LT(learning_rate(s, 20, 4, 1.0, 0.1), learning_rate(s - 1, 20, 4, 1.0, 0.1));
  EXPECT_DOUBLE_EQ(learning_rate(0, 1, 0, 1.0, 0.1), 1.0);  // a single step runs at the peak
}

TEST(Sampler, EachEpochIsAPermutationSplitOverRanks) {
  const std::int64_t n = 10, gb = 4;
  DocumentSampler s(n, gb, 7);
  std::vector<std::int64_t> order;
  for (std::int64_t step = 0; step < 5; ++step)  // 20 samples = 2 epochs
    for (int r = 0; r < 2; ++r)
      for (std::int64_t m = 0; m < 2; ++m)
        for (auto d : s.micro_batch(step, r, 2, m, 1)) order.push_back(d);
  std::set<std::int64_t> first(order.begin(), order.begin() + 10), second(order.begin() + 10, order.end());
  EXPECT_EQ(first.size(), 10u);
  EXPECT_EQ(second.size(), 10u);
  EXPECT_NE(std::vector<std::int64_t>(order.begin(), order.begin() + 10), std::vector<std::int64_t>(order.begin() + 10, order.end()));
  // Same seed, same order on every rank count: one rank with micro-batch 2 sees what two ranks see together.
  EXPECT_EQ(s.micro_batch(3, 0, 1, 0, 2), (std::vector<std::int64_t>{s.micro_batch(3, 0, 2, 0, 1)[0], s.micro_batch(3, 0, 2, 1, 1)[0]}));
}

class Pretrain : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("qwen3_train_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_ = (dir_ / "data.h5").string();
    write_synthetic_dataset(data_, 512, {32, 64}, 16, 1234, false);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Runs qwen3-pretrain (the tiny model is the default) with the given extra arguments.
  test::CliResult pretrain(const std::string& args) {
    return run_program("qwen3-pretrain", "--data '" + data_ + "' " + args);
  }
  // Expects exit code `code`, exactly one error line naming `needle`, and no complete results file at `out`.
  void expect_failure(const std::string& args, int code, const std::string& needle) {
    auto r = pretrain(args);
    EXPECT_EQ(r.exit_code, code) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in:\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  fs::path dir_;
  std::string data_;
};

TEST_F(Pretrain, TwentyStepRunWritesEveryFieldAndLossFalls) {
  const auto out = path("run.h5");
  auto r = pretrain("--seq-len 64 --global-batch 8 --micro-batch 2 --steps 20 --lr 3e-3 --min-lr 3e-4 "
                    "--warmup-steps 2 --memory-interval-ms 20 --out '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 20/20 | loss"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| MFU "), std::string::npos);
  EXPECT_NE(r.output.find("| ETA "), std::string::npos);
  EXPECT_FALSE(fs::exists(out + ".partial"));
  h5::Handle f = h5::open_read(out, "results");
  const hid_t root = f.get();
  EXPECT_EQ(h5::read_attr_string(root, "format"), "qwen3-pretrain-results");
  EXPECT_EQ(h5::read_attr_int(root, "format_version"), 1);
  EXPECT_EQ(h5::read_attr_string(root, "status"), "ok");
  EXPECT_EQ(h5::read_attr_string(root, "error_message"), "");
  for (const char* a : {"git_commit", "start_time_utc", "end_time_utc", "version_cuda", "version_cudnn", "version_nccl",
                        "version_mpi", "version_hdf5", "hostnames", "device_names"})
    EXPECT_TRUE(h5::has_attr(root, a)) << a;
  EXPECT_NE(h5::read_attr_string(root, "version_mpi").find("MPI"), std::string::npos);
  h5::Handle cfg = h5::open_group(root, "config");
  for (const char* k : {"model", "data", "seq_len", "global_batch", "micro_batch", "steps", "lr", "min_lr", "warmup_steps",
                        "weight_decay", "clip_grad", "seed", "device", "out", "tp", "pp", "cp", "memory_interval_ms"})
    EXPECT_TRUE(h5::has_attr(cfg.get(), k)) << k;
  EXPECT_EQ(h5::read_attr_string(cfg.get(), "global_batch"), "8");
  for (const char* s : {"loss", "grad_norm", "lr", "step_time_s", "tokens_per_s", "tflops_per_device"}) {
    auto v = h5::read_f64(root, std::string("steps/") + s);
    ASSERT_EQ(v.size(), 20u) << s;
    for (double x : v) EXPECT_TRUE(std::isfinite(x) && x > 0) << s;
  }
  h5::Handle t = h5::open_group(root, "timings");
  EXPECT_GT(h5::read_attr_double(t.get(), "total_s"), h5::read_attr_double(t.get(), "first_step_s"));
  EXPECT_GE(h5::read_attr_double(t.get(), "init_s"), 0);
  std::vector<std::int64_t> shape;
  auto trace = h5::read_f64(root, "memory/trace/rank_0", &shape);
  ASSERT_EQ(shape.size(), 2u);
  EXPECT_GE(shape[0], 3);
  EXPECT_EQ(shape[1], 2);
  auto peak = h5::read_f64(root, "memory/peak_bytes");
  ASSERT_EQ(peak.size(), 1u);
  EXPECT_GT(peak[0], 1 << 20);  // resident memory of a running process
  // The loss falls: the last five steps average clearly below the first five.
  auto loss = h5::read_f64(root, "steps/loss");
  const double head = std::accumulate(loss.begin(), loss.begin() + 5, 0.0) / 5;
  const double tail = std::accumulate(loss.end() - 5, loss.end(), 0.0) / 5;
  EXPECT_LT(tail, head - 0.1) << "loss " << head << " -> " << tail;
  auto lr = h5::read_f64(root, "steps/lr");
  EXPECT_NEAR(lr[1], 3e-3, 1e-12);
  EXPECT_NEAR(lr[19], 3e-4, 1e-12);
  // The summary tool reads it back.
  auto summary = run_program("qwen3-results", "'" + out + "'");
  EXPECT_EQ(summary.exit_code, 0) << summary.output;
  EXPECT_NE(summary.output.find("status        ok"), std::string::npos) << summary.output;
}

// Under mpirun (ctest label mpi: the suite's name says so).
class PretrainMpirun : public Pretrain {};

TEST_F(PretrainMpirun, DataParallelEqualsOneRank) {
  const std::string common = "--model tiny --data '" + data_ + "' --seq-len 32 --global-batch 4 --steps 3 --lr 1e-2 ";
  const std::string exe = test::bin_dir() + "/qwen3-pretrain";
  auto run = [&](int np, const std::string& out) {
    const auto r = test::run_command(test::mpirun(np) + "'" + exe + "' " + common + "--out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
  };
  run(1, path("one.h5"));
  run(2, path("two.h5"));
  h5::Handle one = h5::open_read(path("one.h5"), "results"), two = h5::open_read(path("two.h5"), "results");
  EXPECT_EQ(h5::read_attr_int(two.get(), "world_size"), 2);
  EXPECT_EQ(h5::read_f64(two.get(), "memory/peak_bytes").size(), 2u);
  for (const char* s : {"steps/loss", "steps/grad_norm"}) {
    auto a = h5::read_f64(one.get(), s), b = h5::read_f64(two.get(), s);
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(b.size(), 3u);
    // Same documents, same weights; only the order of float32 gradient sums differs.
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << s << " step " << i;
  }
}

TEST_F(Pretrain, ExistingOutputIsRefusedUnlessOverwrite) {
  const auto out = path("run.h5");
  ASSERT_EQ(pretrain("--seq-len 32 --global-batch 2 --steps 1 --out '" + out + "'").exit_code, 0);
  const auto before = fs::last_write_time(out);
  expect_failure("--seq-len 32 --global-batch 2 --steps 1 --out '" + out + "'", 4, "already exists (pass --overwrite");
  EXPECT_EQ(fs::last_write_time(out), before);  // untouched
  EXPECT_EQ(pretrain("--seq-len 32 --global-batch 2 --steps 1 --overwrite --out '" + out + "'").exit_code, 0);
}

TEST_F(Pretrain, UnwritableOutputPath) {
  expect_failure("--seq-len 32 --out /nonexistent-folder/run.h5", 4, "output folder '/nonexistent-folder' does not exist");
  expect_failure("--seq-len 32 --out '" + dir_.string() + "'", 4, "is a folder");
}

TEST_F(Pretrain, BadOptionsExitTwoNamingTheOption) {
  const auto out = "--out '" + path("x.h5") + "' ";
  expect_failure(out + "--seq-len 32 --bogus 3", 2, "--bogus");
  expect_failure(out + "--seq-len 32 --steps abc", 2, "--steps");
  expect_failure(out + "--seq-len 32 --model 7B", 2, "unknown model preset '7B' (valid: tiny, 0.6B, 1.7B, 4B, 8B, 14B, 32B)");
  expect_failure(out + "--seq-len 32 --device tpu", 2, "--device: invalid value 'tpu' (valid: cpu, cuda)");
  expect_failure(out + "--seq-len 32 --global-batch 6 --micro-batch 4", 2, "--global-batch 6 is not divisible by --micro-batch");
  expect_failure(out + "--seq-len 30 --cp 2", 2, "--cp 2: --seq-len 30 must divide by 2 × cp");
  expect_failure(out + "--seq-len 32 --pp 2", 2, "the number of ranks (1) is not divisible by tp·cp·pp = 2");
  expect_failure(out + "--seq-len 32 --pp-layers 2,2", 2, "--pp-layers lists 2 stages but --pp is 1");
  expect_failure(out + "--seq-len 32 --tp 0", 2, "--tp must be at least 1");
  expect_failure(out + "--seq-len 32 --min-lr 1", 2, "--min-lr must be between 0 and --lr");
  expect_failure(out, 2, "--seq-len is required");
  EXPECT_FALSE(fs::exists(path("x.h5")));
  EXPECT_FALSE(fs::exists(path("x.h5.partial")));
}

TEST_F(Pretrain, BadConfigFilesExitTwo) {
  const auto out = "--out '" + path("x.h5") + "' --seq-len 32 ";
  { std::ofstream(path("run.ini")) << "steps = 3\nnot-an-option = 1\n"; }
  expect_failure(out + "--config '" + path("run.ini") + "'", 2, "not-an-option");
  expect_failure(out + "--config '" + path("missing.ini") + "'", 2, "cannot read");
  { std::ofstream(path("model.ini")) << "vocab_size = 512\nhidden_size = 64\n"; }
  expect_failure(out + "--model-config '" + path("model.ini") + "'", 2, "missing required key 'intermediate_size'");
  { std::ofstream(path("run.ini")) << "steps = 2\nglobal-batch = 2\n"; }  // a good file, overridden on the command line
  auto r = pretrain(out + "--config '" + path("run.ini") + "' --steps 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 1/1"), std::string::npos) << r.output;
}

// Dataset problems surface after the results file exists: it is finished with status "error" and the message.
class PretrainBadData : public Pretrain {
 protected:
  void expect_data_error(const std::string& data, const std::string& extra, const std::string& needle) {
    const auto out = path("bad.h5");
    fs::remove(out);
    auto r = run_program("qwen3-pretrain", "--model tiny --data '" + data + "' --out '" + out + "' " + extra);
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in:\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    ASSERT_TRUE(fs::exists(out));
    h5::Handle f = h5::open_read(out, "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "error");
    EXPECT_NE(h5::read_attr_string(f.get(), "error_message").find(needle), std::string::npos);
    EXPECT_EQ(h5::read_f64(f.get(), "steps/loss").size(), 0u);
  }
};

TEST_F(PretrainBadData, MissingOrCorruptDataset) {
  expect_data_error(path("none.h5"), "--seq-len 32", "does not exist");
  { std::ofstream(path("junk.h5")) << "this is not hdf5"; }
  expect_data_error(path("junk.h5"), "--seq-len 32", "not an HDF5 file");
}

TEST_F(PretrainBadData, WrongFormatOrVersion) {
  fs::copy_file(data_, path("fmt.h5"));
  {
    h5::Handle f = h5::open_rw(path("fmt.h5"));
    h5::write_attr(f.get(), "format", std::string("something-else"));
  }
  expect_data_error(path("fmt.h5"), "--seq-len 32", "something-else");
  fs::copy_file(data_, path("ver.h5"));
  {
    h5::Handle f = h5::open_rw(path("ver.h5"));
    h5::write_attr(f.get(), "format_version", std::int64_t{99});
  }
  expect_data_error(path("ver.h5"), "--seq-len 32", "99");
}

TEST_F(PretrainBadData, NoBucketTooFewDocumentsTokenOutOfRange) {
  expect_data_error(data_, "--seq-len 48", "no bucket for sequence length 48");
  expect_data_error(data_, "--seq-len 32 --global-batch 64", "16");
  write_synthetic_dataset(path("big_vocab.h5"), 1000, {32}, 8, 1, false);
  expect_data_error(path("big_vocab.h5"), "--seq-len 32 --global-batch 8", "1000");
  fs::copy_file(data_, path("bad_token.h5"));
  {
    h5::Handle f = h5::open_rw(path("bad_token.h5"));
    std::vector<std::int32_t> row(32, 7);
    row[5] = 600;  // the tiny model's vocabulary is 512
    h5::write_i32_rows(f.get(), "buckets/len_32/tokens", 3, row, 1);
  }
  expect_data_error(path("bad_token.h5"), "--seq-len 32 --global-batch 8", "600");
}
