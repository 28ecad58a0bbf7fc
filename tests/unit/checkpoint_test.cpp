// Checkpoints on the CPU backend under mpirun: a run saved at step 3 of 6 and resumed gives the uninterrupted run's
// losses (bit-identical at the same layout, with and without the distributed optimizer); a tp 2 × pp 2 checkpoint
// resumes on one rank (resharding on load); an interrupted save leaves the previous checkpoint loadable; retention;
// truncated, foreign or mismatched checkpoints are refused with one message.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "cli_runner.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "io/hf_checkpoint.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

struct RunOutcome {
  int exit_code;
  std::string output;
  std::vector<double> loss, grad_norm;
};

class CheckpointsMpirun : public ::testing::Test {
 protected:
  void SetUp() override {
    // One folder per test: ctest runs the tests of this fixture in parallel.
    dir_ = test::fresh_dir(std::string("qwen3_checkpoints_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    data_ = (dir_ / "data.h5").string();
    write_synthetic_dataset(data_, 512, {32}, 32, 17, false);
  }
  RunOutcome train(int np, const std::string& args, const std::string& tag) {
    const std::string out = (dir_ / (tag + ".h5")).string();
    const std::string data = args.find("--data") == std::string::npos ? "--data '" + data_ + "' " : "";
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' " + data +
                                     "--seq-len 32 " + (args.find("--steps") == std::string::npos ? "--steps 6 " : "") +
                                     (args.find("--lr") == std::string::npos ? "--lr 1e-2 --warmup-steps 2 " : "") +
                                     (args.find("--global-batch") == std::string::npos ? "--global-batch 4 " : "") + args +
                                     " --out '" + out + "' --overwrite");
    RunOutcome run{r.exit_code, r.output, {}, {}};
    if (r.exit_code == 0) {
      h5::Handle f = h5::open_read(out, "results");
      run.loss = h5::read_f64(f.get(), "steps/loss");
      run.grad_norm = h5::read_f64(f.get(), "steps/grad_norm");
    }
    return run;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
  std::string data_;
};

std::vector<double> tail(const std::vector<double>& v, std::size_t from) { return {v.begin() + static_cast<long>(from), v.end()}; }

}  // namespace

TEST_F(CheckpointsMpirun, ResumeAtTheSameLayoutGivesTheSameLossesToTheBit) {
  for (const auto& [np, layout, tag] : {std::tuple<int, std::string, std::string>{1, "", "one"},
                                        {2, "", "dp2"}, {2, "--no-shard-optimizer", "dp2-unsharded"}}) {
    const RunOutcome whole = train(np, layout + " --save '" + path(tag) + "' --save-interval 3", tag + "-whole");
    ASSERT_EQ(whole.exit_code, 0) << whole.output;
    ASSERT_EQ(whole.loss.size(), 6u);
    EXPECT_TRUE(fs::exists(path(tag) + "/step-00000003/manifest.h5")) << tag;
    EXPECT_TRUE(fs::exists(path(tag) + "/step-00000006/manifest.h5")) << tag;
    const RunOutcome resumed = train(np, layout + " --resume '" + path(tag) + "/step-00000003'", tag + "-resumed");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
    EXPECT_EQ(resumed.output.find("learning-rate schedule was"), std::string::npos) << "the same schedule: no note";
    EXPECT_EQ(resumed.loss, tail(whole.loss, 3)) << tag;
    EXPECT_EQ(resumed.grad_norm, tail(whole.grad_norm, 3)) << tag;
  }
}

TEST_F(CheckpointsMpirun, ATp2Pp2CheckpointResumesOnOneRank) {
  const RunOutcome whole = train(4, "--tp 2 --pp 2 --save '" + path("tp2pp2") + "' --save-interval 3", "tp2pp2");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  EXPECT_EQ(fs::exists(path("tp2pp2") + "/step-00000003/shard-00003-of-00004.h5"), true);  // every rank wrote a shard
  const RunOutcome one = train(1, "", "one");
  // --resume with the --save folder takes the newest: step 6 of 6 leaves nothing to run.
  const RunOutcome nothing = train(1, "--resume '" + path("tp2pp2") + "'", "nothing");
  EXPECT_EQ(nothing.exit_code, 2) << nothing.output;
  EXPECT_NE(nothing.output.find("nothing left to run"), std::string::npos) << nothing.output;
  // A checkpoint converts to a Hugging Face folder: resumed at its own step with --export-hf, nothing is trained and
  // the exported weights are the checkpoint's, exactly (fp32).
  const RunOutcome exported = train(1, "--resume '" + path("tp2pp2") + "' --export-hf '" + path("hf") + "' --export-dtype fp32",
                                    "export");
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_TRUE(exported.loss.empty());
  {
    const HfCheckpoint hf(path("hf"));
    h5::Handle manifest = h5::open_read(path("tp2pp2") + "/step-00000006/manifest.h5", "manifest");
    int checked = 0;
    for (int r = 0; r < 4; ++r) {
      h5::Handle shard = h5::open_read(path("tp2pp2") + "/step-00000006/shard-0000" + std::to_string(r) + "-of-00004.h5", "shard");
      if (!h5::exists(shard.get(), "weights")) continue;
      for (const auto& name : h5::list(shard.get(), "weights")) {
        EXPECT_EQ(hf.read(name), h5::read_f32(shard.get(), "weights/" + name)) << name;
        ++checked;
      }
    }
    EXPECT_EQ(checked, static_cast<int>(hf.names().size()));
  }
  // A longer run from the same checkpoint changes the schedule (the cosine decays over more steps): allowed, and said.
  const RunOutcome longer = train(1, "--steps 8 --resume '" + path("tp2pp2") + "/step-00000003'", "longer");
  EXPECT_EQ(longer.exit_code, 0) << longer.output;
  EXPECT_NE(longer.output.find("note: the checkpoint's learning-rate schedule was lr 0.01, min-lr 3e-05, warmup 2 of 6 steps"),
            std::string::npos) << longer.output;
  const RunOutcome resumed = train(1, "--resume '" + path("tp2pp2") + "/step-00000003'", "resumed");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  ASSERT_EQ(resumed.loss.size(), 3u);
  // The layouts sum in other orders: 1e-5 relative, as the parallel tests.
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(resumed.loss[i], whole.loss[i + 3], 1e-5 * std::abs(whole.loss[i + 3])) << i;
    EXPECT_NEAR(resumed.loss[i], one.loss[i + 3], 1e-5 * std::abs(one.loss[i + 3])) << i;
  }
}

TEST_F(CheckpointsMpirun, AnInterruptedSaveLeavesThePreviousOneAndRetentionKeepsTheNewest) {
  const RunOutcome whole = train(1, "--save '" + path("keep") + "' --save-interval 2 --save-keep 2", "keep");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  // Steps 2, 4, 6 saved, the newest two kept.
  EXPECT_FALSE(fs::exists(path("keep") + "/step-00000002"));
  EXPECT_TRUE(fs::exists(path("keep") + "/step-00000004/manifest.h5"));
  EXPECT_TRUE(fs::exists(path("keep") + "/step-00000006/manifest.h5"));
  // A save killed half-way: step 6's files in step-00000006.partial (a shard cut short, no manifest) while latest
  // still names step 4 — resuming the folder takes step 4 and gives the uninterrupted losses.
  fs::remove(path("keep") + "/latest");
  fs::rename(path("keep") + "/step-00000006", path("keep") + "/step-00000006.partial");
  fs::remove(path("keep") + "/step-00000006.partial/manifest.h5");
  fs::resize_file(path("keep") + "/step-00000006.partial/shard-00000-of-00001.h5", 1000);
  {
    std::FILE* f = std::fopen((path("keep") + "/latest").c_str(), "w");
    std::fputs("step-00000004\n", f);
    std::fclose(f);
  }
  const RunOutcome resumed = train(1, "--resume '" + path("keep") + "'", "after-kill");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(resumed.loss, tail(whole.loss, 4));
}

TEST_F(CheckpointsMpirun, BadCheckpointsEndWithOneClearMessage) {
  ASSERT_EQ(train(1, "--save '" + path("good") + "' --save-interval 3", "good").exit_code, 0);
  const std::string step3 = path("good") + "/step-00000003";
  auto copy = [&](const std::string& name) {
    fs::copy(step3, path(name), fs::copy_options::recursive);
    return path(name);
  };
  struct Case {
    std::string what, args, expect;
    int code;
  };
  std::vector<Case> cases = {
      {"no checkpoint", "--resume '" + path("absent") + "'", "holds no checkpoint", 3},
      {"another seed", "--resume '" + step3 + "' --seed 99", "was saved with --seed 1234, this run has 99", 3},
      {"another global batch", "--resume '" + step3 + "' --global-batch 8", "--global-batch 4, this run has 8", 3},
      {"another model", "--resume '" + step3 + "' --model-config '" + path("wide.ini") + "'", "is of another model", 3},
      {"with --init-from-hf", "--resume '" + step3 + "' --init-from-hf '" + test::test_data_dir() + "/hf/tiny-fp32'",
       "--resume and --init-from-hf are exclusive", 2},
  };
  {
    std::FILE* f = std::fopen(path("wide.ini").c_str(), "w");
    std::fputs("vocab_size = 512\nhidden_size = 64\nintermediate_size = 256\nnum_hidden_layers = 4\nnum_attention_heads = 8\n"
               "num_key_value_heads = 4\nhead_dim = 16\ntie_word_embeddings = true\n", f);
    std::fclose(f);
  }
  {
    const std::string other = path("other.h5");  // the same bucket length, another document count
    write_synthetic_dataset(other, 512, {32}, 16, 17, false);
    cases.push_back({"another dataset", "--resume '" + step3 + "' --data '" + other + "'",
                     "saved with a dataset bucket of 32 documents, this run's has 16", 3});
  }
  {
    const std::string d = copy("truncated");
    fs::resize_file(d + "/shard-00000-of-00001.h5", fs::file_size(d + "/shard-00000-of-00001.h5") / 2);
    cases.push_back({"a truncated shard", "--resume '" + d + "'", "shard-00000-of-00001.h5", 3});
  }
  {
    const std::string d = copy("version");
    h5::Handle f = h5::open_rw(d + "/manifest.h5");
    h5::write_attr(f.get(), "version", std::int64_t{99});
    cases.push_back({"a newer format version", "--resume '" + d + "'", "checkpoint version 99, this build reads version 1", 3});
  }
  for (const auto& c : cases) {
    const RunOutcome r = train(1, c.args, "bad");
    EXPECT_EQ(r.exit_code, c.code) << c.what << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.what << "\n" << r.output;
  }
}

TEST_F(CheckpointsMpirun, ASignalSavesEndsAsPreemptedAndAutoResumeContinues) {
  // Slurm ends a job (time limit, pre-emption, scancel) with SIGTERM to every process of it: here the ranks get it
  // directly, mid-run. With --save they finish the step they are in, save, and end with status "preempted" and exit
  // code 7; the same command with --auto-resume continues from that checkpoint. A constant learning rate after the
  // warm-up (--min-lr = --lr) makes runs of any --steps follow the same schedule, so the continuation's losses must
  // equal those of an uninterrupted run at the same steps, to the bit.
  for (int np : {1, 2}) {
    const std::string tag = "signal" + std::to_string(np), save = path(tag), out = path(tag + ".h5");
    const std::string exe = test::bin_dir() + "/qwen3-pretrain";
    const std::string common = " --data '" + data_ + "' --seq-len 32 --global-batch 4 --lr 1e-2 --min-lr 1e-2 --warmup-steps 2";
    const auto r = test::run_command(
        "(" + test::mpirun(np) + "'" + exe + "'" + common + " --steps 100000 --save '" + save + "' --auto-resume --out '" +
        out + "' --overwrite > '" + path(tag + ".log") + "' 2>&1 & pid=$!; sleep 3; pkill -TERM -f '^" + exe +
        " --data " + data_ + "'; wait $pid; echo \"exit $?\"; cat '" + path(tag + ".log") + "')");
    EXPECT_NE(r.output.find("exit 7"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("preempted after step"), std::string::npos) << r.output;
    h5::Handle f = h5::open_read(out, "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "preempted");
    const std::int64_t k = h5::read_attr_int(f.get(), "preempted_at_step");
    ASSERT_GT(k, 0);
    const auto before = h5::read_f64(f.get(), "steps/loss");
    EXPECT_EQ(static_cast<std::int64_t>(before.size()), k);
    const std::string steps = " --steps " + std::to_string(k + 3);
    const RunOutcome resumed = train(np, common.substr(common.find("--lr")) + steps + " --save '" + save + "' --auto-resume", tag + "-resumed");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
    const RunOutcome whole = train(np, common.substr(common.find("--lr")) + steps, tag + "-whole");
    ASSERT_EQ(whole.exit_code, 0) << whole.output;
    EXPECT_EQ(std::vector<double>(whole.loss.begin(), whole.loss.begin() + k), before) << np;
    EXPECT_EQ(resumed.loss, tail(whole.loss, static_cast<std::size_t>(k))) << np;
    // Run once more (a requeue after the last save): nothing left to train, and it ends well.
    const RunOutcome done = train(np, common.substr(common.find("--lr")) + steps + " --save '" + save + "' --auto-resume", tag + "-done");
    EXPECT_EQ(done.exit_code, 0) << done.output;
    EXPECT_TRUE(done.loss.empty());
  }
}
