// qwen3-sweep: the study's specification expands to its 90 cells; a small CPU sweep runs locally with one cell that
// fails (a context-parallel cell whose length does not divide by 2 × cp) without stopping the others, pipeline cells
// included, resumes by skipping complete cells, and feeds
// qwen3-report; bad specifications — unknown model, layouts that do not fit the ranks, names that would reach a
// shell — and a missing binary end with one clear message before anything runs; and the same small sweep submitted
// to a real single-node Slurm started by the test (tools/slurm/local_slurm.sh), reported, and its daemons stopped.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "cli_runner.h"
#include "io/h5.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {
std::string spec_file(const fs::path& dir, const std::string& name, const std::string& body) {
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream(p) << body;
  return p.string();
}
const char* kTinySpec = R"([sweep]
name = tiny-test
models = tiny
lengths = 30, 64
layouts = T1P2, T1P1C2
global_batch = 2
steps = 2
documents = 8
device = cpu
gpus_per_node = 2
)";
}  // namespace

TEST(Sweep, StudySpecificationExpandsToNinetyCells) {
  const auto r = test::run_program("qwen3-sweep", "'" + test::test_data_dir() + "/../../inputs/study-8xh200.sweep.ini' "
                                   "--dir '" + ::testing::TempDir() + "/qwen3_study' --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("90 cells (5 models × 6 lengths × 3 layouts), 8 ranks each"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cell 32B-L131072-T2P4:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--tp 2 --pp 4"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(fs::path(::testing::TempDir()) / "qwen3_study")) << "a dry run creates nothing";
  // Scaled to the 4-GPU hosts: the same 90 cells with 4-GPU layouts.
  const auto four = test::run_program("qwen3-sweep", "'" + test::test_data_dir() + "/../../inputs/study-4xh100.sweep.ini' "
                                      "--dir '" + ::testing::TempDir() + "/qwen3_study4' --dry-run");
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_NE(four.output.find("90 cells (5 models × 6 lengths × 3 layouts), 4 ranks each"), std::string::npos) << four.output;
  EXPECT_NE(four.output.find("cell 8B-L131072-T4P1:"), std::string::npos) << four.output;
}

TEST(Sweep, LocalSweepRunsEveryCellResumesAndReports) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_sweep_local";
  fs::remove_all(dir);
  const std::string spec = spec_file(dir, "tiny.sweep.ini", kTinySpec);
  const std::string args = "'" + spec + "' --dir '" + (dir / "run").string() + "' --local";
  auto r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 1) << r.output;  // the C2 cell at 30 tokens fails: 30 does not divide by 2 × cp
  EXPECT_NE(r.output.find("[1/4] tiny-L30-T1P2: ok"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tiny-L30-T1P1C2: failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[3/4] tiny-L64-T1P2: ok"), std::string::npos) << r.output;  // the failure stopped nothing
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L64-T1P2.h5"));
  std::ifstream log(dir / "run" / "logs" / "tiny-L30-T1P1C2.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("--seq-len 30 must divide by 2 × cp"), std::string::npos) << text;
  r = test::run_program("qwen3-sweep", args);  // resumes: the complete cells are skipped, the failed one retried
  EXPECT_NE(r.output.find("3 complete, 1 to run"), std::string::npos) << r.output;
  r = test::run_program("qwen3-report", "'" + (dir / "run").string() + "' --out '" + (dir / "report").string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 runs"), std::string::npos) << r.output;
  // The pipeline cells' per-rank time split and stage layers.
  std::ifstream md(dir / "report" / "report.md");
  const std::string report((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(report.find("## Where each rank's time went"), std::string::npos) << report;
  EXPECT_NE(report.find("| tiny | T1P2D1 | 30 | 0–1, 2–3 |"), std::string::npos) << report;
}

TEST(Sweep, BadSpecificationsAreRefusedBeforeAnythingRuns) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_sweep_bad";
  fs::remove_all(dir);
  const std::string good(kTinySpec);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  struct Case { std::string body, message; };
  for (const Case& c : {Case{with("models = tiny", "models = tiny, 7B"), "unknown model '7B'"},
                        Case{with("layouts = T1P2, T1P1C2", "layouts = T4P1"), "layout T4P1 needs tp·pp·cp = 4 to divide the 2 ranks"},
                        Case{with("layouts = T1P2, T1P1C2", "layouts = 4x2"), "layout '4x2' is not of the form"},
                        Case{with("name = tiny-test", "name = x;rm -rf ~"), "may hold only letters, digits"},
                        Case{good + "extra_args = --lr $(reboot)\n", "holds characters a job script must not receive"},
                        Case{good + "colour = blue\n", "unknown key 'colour' in [sweep]"},
                        Case{with("lengths = 30, 64", "lengths = 30, -64"), "must be a positive integer, got '-64'"}}) {
    const std::string spec = spec_file(dir, "bad.sweep.ini", c.body);
    const auto r = test::run_program("qwen3-sweep", "'" + spec + "' --dir '" + (dir / "run").string() + "' --local");
    EXPECT_EQ(r.exit_code, 2) << c.body << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.body << "\n" << r.output;
    EXPECT_FALSE(fs::exists(dir / "run")) << "nothing may be created for a bad specification";
  }
  const std::string spec = spec_file(dir, "good.sweep.ini", good);
  const auto r = test::run_program("qwen3-sweep", "'" + spec + "' --dir '" + (dir / "run").string() + "' --bin /nonexistent --local");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("'/nonexistent/qwen3-pretrain' is missing"), std::string::npos) << r.output;
}

TEST(Sweep, SubmittedToARealSlurmAsOneArrayJob) {
  if (::geteuid() != 0) GTEST_SKIP() << "starting slurmctld/slurmd needs root (CI runs the suite as root)";
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_sweep_slurm";
  fs::remove_all(dir);
  const std::string cluster = (dir / "cluster").string();
  const std::string script = "'" + test::test_data_dir() + "/../../tools/slurm/local_slurm.sh' ";
  struct Stop {  // the daemons this test started end with it, whatever happens
    std::string cmd;
    ~Stop() { test::run_command(cmd); }
  } stop{script + "stop '" + cluster + "'"};
  auto r = test::run_command(script + "start '" + cluster + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ::setenv("SLURM_CONF", (fs::path(cluster) / "slurm.conf").c_str(), 1);
  const std::string spec = spec_file(dir, "tiny.sweep.ini", kTinySpec);
  r = test::run_program("qwen3-sweep", "'" + spec + "' --dir '" + (dir / "run").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto at = r.output.find("submitted array job ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string job = r.output.substr(at + 20, r.output.find(' ', at + 20) - at - 20);
  EXPECT_NE(r.output.find("(4 tasks)"), std::string::npos) << r.output;
  for (int i = 0; i < 600; ++i) {  // until the array has left the queue (at most 2 minutes)
    if (test::run_command("squeue -h -j " + job).output.find_first_not_of(" \n") == std::string::npos) break;
    ::usleep(200000);
  }
  EXPECT_EQ(test::run_command("squeue -h -j " + job).output.find_first_not_of(" \n"), std::string::npos) << "still queued";
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L30-T1P2.h5"));
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L64-T1P2.h5"));
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L64-T1P1C2.h5"));
  EXPECT_FALSE(fs::exists(dir / "run" / "results" / "tiny-L30-T1P1C2.h5"));  // refused: 30 tokens over 2 × cp chunks
  r = test::run_command("cat '" + (dir / "run" / "logs").string() + "'/*_1.out");  // task 1: tiny-L30-T1P1C2
  EXPECT_NE(r.output.find("--seq-len 30 must divide by 2 × cp"), std::string::npos) << r.output;
  r = test::run_program("qwen3-report", "'" + (dir / "run").string() + "' --out '" + (dir / "report").string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 runs"), std::string::npos) << r.output;
  // Re-submitting resumes: only the failed cell goes to Slurm again.
  r = test::run_program("qwen3-sweep", "'" + spec + "' --dir '" + (dir / "run").string() + "' --dry-run");
  EXPECT_NE(r.output.find("3 complete, 1 to run"), std::string::npos) << r.output;
}

TEST(Sweep, PlanPrintsEveryCellsPeakPerRank) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_sweep_plan";
  fs::remove_all(dir);
  const std::string spec = spec_file(dir, "tiny.sweep.ini", std::string(kTinySpec) + "device_memory = 1GB\n");
  const auto r = test::run_program("qwen3-sweep", "'" + spec + "' --dir '" + (dir / "run").string() + "' --plan");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| tiny | 30 | T1P2 | none |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("✖ does not fit"), std::string::npos) << r.output;  // with the 1 GiB runtime reserve
  EXPECT_NE(r.output.find("| tiny | 64 | T1P1C2 | none |"), std::string::npos) << r.output;  // context parallelism planned
  EXPECT_NE(r.output.find("| tiny | 30 | T1P1C2 | — | — | --cp 2: --seq-len 30 must divide by 2 × cp"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir / "run")) << "planning creates nothing";
}

TEST(Sweep, APreemptedCellRunsAgainFromItsCheckpoint) {
  // save_interval makes every cell checkpoint and continue from its checkpoint (--auto-resume). A cell whose results
  // file says "preempted" is not complete: the next sweep runs it again, from its checkpoint.
  const fs::path dir = test::fresh_dir("qwen3_sweep_preempted");
  const std::string spec = spec_file(dir, "ckpt.sweep.ini", R"([sweep]
name = ckpt-test
models = tiny
lengths = 64
layouts = T1P1
global_batch = 2
steps = 4
documents = 8
device = cpu
gpus_per_node = 1
save_interval = 2
)");
  const std::string args = "'" + spec + "' --dir '" + (dir / "run").string() + "' --local";
  auto r = test::run_program("qwen3-sweep", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path ckpt = dir / "run" / "checkpoints" / "tiny-L64-T1P1", results = dir / "run" / "results" / "tiny-L64-T1P1.h5";
  EXPECT_TRUE(fs::exists(ckpt / "step-00000004" / "manifest.h5"));
  EXPECT_FALSE(fs::exists(ckpt / "step-00000002")) << "the cells keep their newest checkpoint only";
  // As if Slurm had stopped the cell after step 2: its checkpoint of step 2 and a results file saying so.
  fs::remove_all(ckpt);
  const auto again = test::run_program("qwen3-pretrain", "--model tiny --data '" + (dir / "run" / "data" / "data-v512.h5").string() +
                                                             "' --seq-len 64 --global-batch 2 --steps 2 --save '" + ckpt.string() +
                                                             "' --out '" + (dir / "partial.h5").string() + "'");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  {
    h5::Handle f = h5::open_rw(results.string());
    h5::write_attr(f.get(), "status", std::string("preempted"));
  }
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0 complete, 1 to run"), std::string::npos) << r.output;
  std::ifstream log(dir / "run" / "logs" / "tiny-L64-T1P1.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("resumed from"), std::string::npos) << text;
  EXPECT_NE(text.find("at step 2"), std::string::npos) << text;
  h5::Handle f = h5::open_read(results.string(), "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
  EXPECT_EQ(h5::read_f64(f.get(), "steps/loss").size(), 2u);  // steps 3 and 4
}
