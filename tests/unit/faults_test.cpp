// Fault injection: the accidents of a shared cluster, each done to a real run, and what the user must see and keep
// (docs/faults.md lists every row with its test). Two runs given one --out, a rank killed while the run checkpoints,
// a run that diverges, a checkpoint of non-finite weights, --device cuda on a host without a GPU.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>

#include "cli_runner.h"
#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "io/output_lock.h"
#include "killed_rank.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A results file's outcome, read back as a reader (qwen3-report, a person's h5py) would.
struct Outcome {
  std::string status, message;
  std::int64_t exit_code = -1, steps = -1;
};
Outcome outcome_of(const std::string& path) {
  h5::Handle f = h5::open_read(path, "results");
  Outcome o;
  o.status = h5::read_attr_string(f.get(), "status");
  o.message = h5::read_attr_string(f.get(), "error_message");
  if (H5Aexists(f.get(), "exit_code") > 0) o.exit_code = h5::read_attr_int(f.get(), "exit_code");
  o.steps = static_cast<std::int64_t>(h5::read_f64(f.get(), "steps/loss").size());
  return o;
}

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = test::fresh_dir(std::string("faults_") + info->test_suite_name() + "_" + info->name());
    data_ = (dir_ / "data.h5").string();
    write_synthetic_dataset(data_, 512, {64}, 32, 9, false);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string pretrain() const { return "'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" + data_ + "' --seq-len 64 --global-batch 4 "; }
  fs::path dir_;
  std::string data_;
};

class FaultsMpirun : public Faults {};

// The results file's folder is a 512 KiB tmpfs, as a full scratch disk is (mounting needs root, which CI has;
// elsewhere the test skips, saying so).
class FaultsFullDiskMpirun : public Faults {
 protected:
  void SetUp() override {
    Faults::SetUp();
    disk_ = dir_ / "disk";
    fs::create_directories(disk_);
    if (::mount("tmpfs", disk_.c_str(), "tmpfs", 0, "size=512k") != 0)
      GTEST_SKIP() << "cannot mount a tmpfs at " << disk_ << " (" << std::strerror(errno) << "): needs root";
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
  }
  fs::path disk_;
  bool mounted_ = false;
};

}  // namespace

// The lock itself: a second holder is refused with the first's description; released, the path is free again and the
// lock file is gone (a crashed holder's lock goes with its process: the kernel drops flock locks).
TEST_F(Faults, AnOutputLockIsHeldByOneWriterAndNamesIt) {
  const std::string out = path("run.h5");
  auto first = std::make_unique<OutputLock>(out);
  try {
    OutputLock second(out);
    FAIL() << "a second lock on the same output was granted";
  } catch (const OutputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("is being written by another run"), std::string::npos) << m;
    EXPECT_NE(m.find("pid " + std::to_string(::getpid())), std::string::npos) << m;
    EXPECT_NE(m.find("started 20"), std::string::npos) << m;
  }
  first.reset();
  EXPECT_FALSE(fs::exists(OutputLock::lock_path(out)));
  OutputLock again(out);  // free once released
  EXPECT_TRUE(fs::exists(OutputLock::lock_path(out)));
}

// Item 1 of issue 30: a second run given the same --out, with or without --overwrite, while the first (two ranks)
// runs: refused at once (exit 4) naming the first run's host and pid; the first run ends ok and its file reads whole.
TEST_F(FaultsMpirun, ASecondRunOnTheSameOutIsRefusedAndTheFirstFileStaysWhole) {
  const std::string out = path("same.h5"), log = path("first.log");
  const std::string first = test::mpirun(2) + pretrain() + "--steps 200 --out '" + out + "'";
  const std::string second = pretrain() + "--steps 2 --out '" + out + "'";
  // The second run starts once the first has printed a step (so its file and lock exist), and is refused long before
  // 200 steps are done; the script then waits for the first.
  const auto r = test::run_command(
      "( (" + first + " > '" + log + "' 2>&1; echo \"first exit $?\" >> '" + log + "') & F=$!; " +
      "for i in $(seq 1200); do grep -q '^step' '" + log + "' && break; sleep 0.1; done; " + second +
      "; echo \"second exit $?\"; " + second + " --overwrite; echo \"overwrite exit $?\"; " +
      "grep -q 'first exit' '" + log + "' && echo 'FIRST ENDED TOO SOON'; wait $F; cat '" + log + "')");
  ASSERT_EQ(r.output.find("FIRST ENDED TOO SOON"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("second exit 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("overwrite exit 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is being written by another run (host "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(", pid "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("first exit 0"), std::string::npos) << r.output;
  const Outcome o = outcome_of(out);
  EXPECT_EQ(o.status, "ok");
  EXPECT_EQ(o.steps, 200);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_FALSE(fs::exists(out + ".partial"));
  EXPECT_FALSE(fs::exists(OutputLock::lock_path(out)));
  const auto results = test::run_program("qwen3-results", "'" + out + "'");
  EXPECT_EQ(results.exit_code, 0) << results.output;
}

// Item 3: rank 1 killed with SIGKILL while the run saves a checkpoint every step (--save): rank 0 must not wait for a
// step boundary that will never come (the grace a pre-emption gets); the file ends as without --save: status error,
// naming rank 1 and its host, and no checkpoint is left looking complete that is not.
TEST_F(FaultsMpirun, ARankKilledWhileTheRunCheckpointsIsNamedInTheResults) {
  const std::string save = path("ckpt");
  const test::KilledRun k = test::kill_rank_during_run("cpu", 2, "faults_killed_saving", "--save '" + save + "' --save-interval 1");
  ASSERT_TRUE(k.mpirun_ended) << k.output;
  EXPECT_FALSE(k.mpirun_exit_zero) << k.output;
  ASSERT_EQ(k.status, "error") << k.output << k.log;
  EXPECT_NE(k.error_message.find("rank 1 on host "), std::string::npos) << k.error_message;
  // The kill may land in the first save (no `latest` yet) or a later one: whatever is named, or looks complete (a
  // step-N folder without .partial), is complete.
  std::string latest = read_text(fs::path(save) / "latest");
  while (!latest.empty() && latest.back() == '\n') latest.pop_back();
  if (!latest.empty()) EXPECT_TRUE(fs::exists(fs::path(save) / latest / "manifest.h5")) << latest;
  if (fs::exists(save))
    for (const auto& e : fs::directory_iterator(save))
      if (e.is_directory() && e.path().extension() != ".partial")
        EXPECT_TRUE(fs::exists(e.path() / "manifest.h5")) << e.path();
}

// Item 7: a learning rate that makes the loss overflow: the first non-finite loss or gradient norm stops both ranks
// before the optimizer applies it, status diverged naming the step, exit code 8 from every rank (no abort), the steps
// before it kept, and `latest` left at the last checkpoint saved before it (finite weights).
TEST_F(FaultsMpirun, ADivergingRunStopsAtTheFirstNonFiniteStepAndKeepsTheLastGoodCheckpoint) {
  const std::string out = path("diverged.h5"), save = path("ckpt");
  const auto r = test::run_command(test::mpirun(2) + pretrain() + "--steps 80 --lr 1e6 --save '" + save +
                                   "' --save-interval 2 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 8) << r.output;
  EXPECT_NE(r.output.find("error: diverged at step "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("MPI_ABORT"), std::string::npos) << r.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "diverged");
  EXPECT_EQ(h5::read_attr_int(f.get(), "exit_code"), 8);
  const std::int64_t at = h5::read_attr_int(f.get(), "diverged_at_step");
  ASSERT_GT(at, 1);
  ASSERT_LT(at, 80);
  EXPECT_NE(h5::read_attr_string(f.get(), "error_message").find("step " + std::to_string(at)), std::string::npos);
  const auto loss = h5::read_f64(f.get(), "steps/loss");
  EXPECT_EQ(static_cast<std::int64_t>(loss.size()), at - 1);  // the steps applied, every one finite
  for (double l : loss) EXPECT_TRUE(std::isfinite(l));
  std::string latest = read_text(fs::path(save) / "latest");
  while (!latest.empty() && latest.back() == '\n') latest.pop_back();
  char expected[32];
  std::snprintf(expected, sizeof expected, "step-%08lld", static_cast<long long>((at - 1) / 2 * 2));
  EXPECT_EQ(latest, expected);
  // The report's reader: qwen3-results says diverged and exits with the run's code.
  const auto results = test::run_program("qwen3-results", "'" + out + "'");
  EXPECT_NE(results.output.find("diverged"), std::string::npos) << results.output;
  EXPECT_NE(results.exit_code, 0) << results.output;
}

// Item 7, the checkpoint's own guard: weights that overflow (a learning rate of 1e39 turns the first update into
// infinities while the first loss and gradient norm are finite) are never saved; the run ends diverged at that step.
TEST_F(Faults, ACheckpointOfNonFiniteWeightsIsNeverWritten) {
  const std::string out = path("inf.h5"), save = path("ckpt");
  const auto r = test::run_command(pretrain() + "--steps 3 --warmup-steps 0 --lr 1e39 --save '" + save +
                                   "' --save-interval 1 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 8) << r.output;
  EXPECT_NE(r.output.find("hold a non-finite value: not saved"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(fs::path(save) / "latest"));
  EXPECT_FALSE(fs::exists(fs::path(save) / "step-00000001"));
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "diverged");
  EXPECT_EQ(h5::read_attr_int(f.get(), "diverged_at_step"), 1);
}

// Item 6: --device cuda where no GPU can be used (no CUDA device here, or a build without the CUDA backend): one clear
// message, exit 2, and a results file that still says what was asked (/config), so a sweep's report can place the cell.
TEST_F(Faults, ACudaRunWithoutAGpuLeavesAResultsFileWithItsConfig) {
  const std::string hide = "CUDA_VISIBLE_DEVICES= ";  // no device, on a GPU host too
  const std::string out = path("nogpu.h5");
  const auto r = test::run_command(hide + pretrain() + "--device cuda --steps 2 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  ASSERT_TRUE(fs::exists(out)) << r.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "error");
  EXPECT_EQ(h5::read_attr_int(f.get(), "exit_code"), 2);
  h5::Handle config(H5Gopen2(f.get(), "config", H5P_DEFAULT));
  ASSERT_GE(config.get(), 0);
  EXPECT_EQ(h5::read_attr_string(config.get(), "device"), "cuda");
  EXPECT_EQ(h5::read_attr_string(config.get(), "seq_len"), "64");
  const auto results = test::run_program("qwen3-results", "'" + out + "'");
  EXPECT_EQ(results.output.find("missing group"), std::string::npos) << results.output;
}

// Item 4: the results file's disk fills during a two-rank run (memory sampled every millisecond, so the traces grow
// fast): exit 4 from every rank (the flush is agreed on: no abort, no signal blamed), one line naming the file and
// the disk's reason, and the partial file, where the status could still be written, saying the same.
TEST_F(FaultsFullDiskMpirun, AFullDiskEndsTheRunWithExitFourNamingTheFile) {
  const std::string out = (disk_ / "run.h5").string();
  const auto r = test::run_command(test::mpirun(2) + pretrain() + "--steps 20000 --memory-interval-ms 1 --out '" +
                                   out + "'");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  const std::string line = "qwen3-pretrain: error: cannot write '" + out + ".partial': no space left on device\n";
  EXPECT_NE(r.output.find(line), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("could not finish"), std::string::npos) << r.output;  // said once
  EXPECT_EQ(r.output.find("signal"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("MPI_ABORT"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(OutputLock::lock_path(out)));
  const std::string left = fs::exists(out) ? out : out + ".partial";
  ASSERT_TRUE(fs::exists(left));
  h5::Handle f = h5::open_read(left, "results");
  const std::string status = h5::read_attr_string(f.get(), "status");
  if (status != "running") {  // written, where the disk still took it
    EXPECT_EQ(status, "error");
    EXPECT_NE(h5::read_attr_string(f.get(), "error_message").find("no space left on device"), std::string::npos);
  }
  EXPECT_GT(h5::read_f64(f.get(), "steps/loss").size(), 0u);  // the steps flushed before the disk filled are kept
}

// Item 5: SIGTERM to the job — to mpirun (what Slurm's scancel and time limit do, with every other process of the job)
// or to the job script (sbatch --signal=B:…, scancel --batch, a person's kill). mpirun exits 1 whenever it is itself
// signalled; the job script ends with the run's own code all the same: 7 when --save let it save and stop, 128 + 15
// without. (Two ranks from a hostfile of two slots, as Slurm's allocation would give; mpirun's kill delay is the
// job script's own, 5 s, so that a loaded machine still reaches the step boundary in time: docs/results.md says why.)
TEST_F(FaultsMpirun, ASignalToMpirunOrTheJobScriptEndsTheJobWithTheRunsOwnCode) {
  const fs::path hostfile = dir_ / "hosts";
  std::ofstream(hostfile) << "localhost slots=2\n";
  const std::string script = fs::path(test::test_data_dir()).parent_path().parent_path() / "jobs" / "pretrain.sbatch";
  struct Case {
    const char* target;  // what is signalled: mpirun, or the job script
    bool save;
    int code;  // the job's
    const char* status;
    int file_code;  // the results file's: the ranks see the job script's SIGUSR1 (128 + 10)
  };
  for (const Case c : {Case{"mpirun", true, 7, "preempted", 7}, Case{"mpirun", false, 143, "error", 143},
                       Case{"script", true, 7, "preempted", 7}, Case{"script", false, 143, "error", 138}}) {
    const std::string tag = std::string(c.target) + (c.save ? "-save" : "");
    const std::string out = path(tag + ".h5"), log = path(tag + ".log");
    const std::string job = "OMPI_MCA_orte_default_hostfile='" + hostfile.string() + "' "
                            "QWEN3_BIN='" + test::bin_dir() + "' OMP_NUM_THREADS=1 bash '" + script + "' --model tiny --data '" +
                            data_ + "' --seq-len 64 --global-batch 4 --steps 100000 " +
                            (c.save ? "--save '" + path(tag) + "' " : "") + "--out '" + out + "'";
    const std::string kill = std::string(c.target) == "mpirun" ? "pkill -TERM -P $J -x mpirun"
                                                               : "kill -TERM $J";
    const auto r = test::run_command("( " + job + " > '" + log + "' 2>&1 & J=$!; for i in $(seq 1200); do grep -q '^step' '" +
                                     log + "' && break; sleep 0.1; done; " + kill + "; wait $J; echo \"job exit $?\"; cat '" +
                                     log + "' )");
    EXPECT_NE(r.output.find("job exit " + std::to_string(c.code) + "\n"), std::string::npos) << tag << "\n" << r.output;
    ASSERT_TRUE(fs::exists(out)) << tag << "\n" << r.output;
    const Outcome o = outcome_of(out);
    EXPECT_EQ(o.status, c.status) << tag << ": " << o.message;
    EXPECT_EQ(o.exit_code, c.file_code) << tag;
  }
}

// docs/faults.md names a test in every row: each name must be a test of this suite (a renamed or deleted test fails
// here), and every test of the Faults suites above must have its row.
TEST(FaultsDoc, EveryTestItNamesExistsAndEveryFaultTestHasItsRow) {
  const std::string doc = read_text(fs::path(test::test_data_dir()).parent_path().parent_path() / "docs" / "faults.md");
  ASSERT_FALSE(doc.empty());
  std::set<std::string> tests;
  const auto* unit = ::testing::UnitTest::GetInstance();
  for (int s = 0; s < unit->total_test_suite_count(); ++s) {
    const auto* suite = unit->GetTestSuite(s);
    for (int t = 0; t < suite->total_test_count(); ++t)
      tests.insert(std::string(suite->name()) + "." + suite->GetTestInfo(t)->name());
  }
  std::set<std::string> named;
  const std::regex name("`([A-Z][A-Za-z0-9]*\\.[A-Z][A-Za-z0-9]*)`");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), name); it != std::sregex_iterator(); ++it)
    named.insert((*it)[1]);
  EXPECT_GT(named.size(), 30u);
  for (const auto& n : named) EXPECT_TRUE(tests.count(n)) << "docs/faults.md names " << n << ", which is no test";
  for (const auto& t : tests)
    if (t.rfind("Faults", 0) == 0 && t.rfind("FaultsDoc.", 0) != 0)
      EXPECT_TRUE(named.count(t)) << t << " has no row in docs/faults.md";
}
