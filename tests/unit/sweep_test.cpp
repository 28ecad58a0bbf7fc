// qwen3-sweep and jobs/pretrain.sbatch: the study's specification expands to its 90 cells, named T<tp>P<pp>[C<cp>]D<dp>
// as in every tool; a small CPU sweep runs locally, pipeline cells included, resumes by skipping complete cells, and
// feeds qwen3-report; a layout qwen3-pretrain --plan refuses at a length (a context-parallel cell whose length does not
// divide by 2 × cp) is recorded in DIR/cells.json with its reason and never run; a dataset is rebuilt when the spec
// asks for a length, more documents or a seed it lacks; failed cells (status error) run again only with
// --retry-failed; bad specifications — unknown model or key (with the closest spelling), layouts that do not fit the
// ranks, names that would reach a shell, a device_memory qwen3-pretrain refuses — and a missing binary end with one
// clear message before anything runs; the job script answers --help and names QWEN3_BIN when it cannot find the
// binary; and the same small sweep submitted twice to a real single-node Slurm started by the test
// (tools/slurm/local_slurm.sh) queues its cells once, is reported, and the job script runs as root from another folder.
// Tests that need Slurm or the plotting stack skip with the reason on a host without them, and fail in CI (CI=true).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "calibration_fixture.h"
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
std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
// s with the first `from` replaced by `to`.
std::string replaced(std::string s, const std::string& from, const std::string& to) {
  return s.replace(s.find(from), from.size(), to);
}
// p in single quotes, for a shell command line.
std::string shq(const fs::path& p) { return "'" + p.string() + "'"; }
std::string repo_file(const std::string& path) { return test::test_data_dir() + "/../../" + path; }
// qwen3-report's answer when no Python with its packages (h5py, matplotlib, scipy) was found.
bool lacks_plotting_stack(const test::CliResult& r) {
  return r.exit_code != 0 && (r.output.find("h5py") != std::string::npos ||
                              r.output.find("matplotlib") != std::string::npos ||
                              r.output.find("scipy") != std::string::npos);
}
// A results file's status, rewritten as a failed or killed run would have left it.
void set_status(const fs::path& results, const std::string& status) {
  h5::Handle f = h5::open_rw(results.string());
  h5::write_attr(f.get(), "status", status);
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
// One rank per cell, one step: the cheapest cells, for the tests of what a re-run does.
const char* kOneRankSpec = R"([sweep]
name = one-rank
models = tiny
lengths = 64
layouts = T1P1
global_batch = 2
steps = 1
documents = 2
device = cpu
gpus_per_node = 1
)";
}  // namespace


TEST(Sweep, StudySpecificationExpandsToNinetyCells) {
  const auto r = test::run_program("qwen3-sweep", shq(repo_file("inputs/study-8xh200.sweep.ini")) + " --dir '" +
                                                      ::testing::TempDir() + "/qwen3_study' --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("90 cells (5 models × 6 lengths × 3 layouts), 8 ranks each"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cell 32B-L131072-T2P4D1:"), std::string::npos) << r.output;  // the layout's full name
  EXPECT_NE(r.output.find("--tp 2 --pp 4"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(fs::path(::testing::TempDir()) / "qwen3_study")) << "a dry run creates nothing";
  // Scaled to the 4-GPU hosts: the same 90 cells with 4-GPU layouts.
  const auto four = test::run_program("qwen3-sweep", shq(repo_file("inputs/study-4xh100.sweep.ini")) + " --dir '" +
                                                         ::testing::TempDir() + "/qwen3_study4' --dry-run");
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_NE(four.output.find("90 cells (5 models × 6 lengths × 3 layouts), 4 ranks each"), std::string::npos) << four.output;
  EXPECT_NE(four.output.find("cell 8B-L131072-T4P1D1:"), std::string::npos) << four.output;
}

TEST(SweepMpirun, LocalSweepRunsEveryCellResumesAndReports) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_local");
  const std::string spec = spec_file(dir, "tiny.sweep.ini", kTinySpec);
  const std::string args = shq(spec) + " --dir " + shq(dir / "run") + " --local";
  auto r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // The C2 cell at 30 tokens is refused at expansion by qwen3-pretrain --plan (30 does not divide by 2 × cp): not run.
  EXPECT_NE(r.output.find("1 refused by qwen3-pretrain"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tiny-L30-T1P1C2D1 not run: --cp 2: --seq-len 30 must divide by 2 × cp"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("[1/3] tiny-L30-T1P2D1: ok"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[3/3] tiny-L64-T1P1C2D1: ok"), std::string::npos) << r.output;
  // Each rank its share of the cores, none bound (here 2 cores over 2 ranks at most).
  EXPECT_NE(r.output.find("mpirun --bind-to none"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L64-T1P2D1.h5"));
  EXPECT_FALSE(fs::exists(dir / "run" / "logs" / "tiny-L30-T1P1C2D1.log")) << "a refused cell never runs";
  // The manifest for qwen3-report: every cell, the refused one with its reason.
  const std::string manifest = read_text(dir / "run" / "cells.json");
  EXPECT_NE(manifest.find("\"format\": \"qwen3-sweep-cells\", \"version\": 1, \"sweep\": \"tiny-test\""), std::string::npos)
      << manifest;
  EXPECT_NE(manifest.find("{\"name\": \"tiny-L30-T1P1C2D1\", \"model\": \"tiny\", \"seq\": 30, \"layout\": \"T1P1C2D1\", "
                          "\"tp\": 1, \"pp\": 1, \"cp\": 2, \"dp\": 1, \"device\": \"cpu\", \"results\": \"results/tiny-L30-T1P1C2D1.h5\", "
                          "\"refused\": \"--cp 2: --seq-len 30 must divide by 2 × cp"),
            std::string::npos) << manifest;
  EXPECT_NE(manifest.find("\"layout\": \"T1P2D1\", \"tp\": 1, \"pp\": 2, \"cp\": 1, \"dp\": 1, \"device\": \"cpu\", \"results\": "
                          "\"results/tiny-L64-T1P2D1.h5\", \"refused\": null, \"steps\": 2, \"global_batch\": 2, \"planned_peak_bytes\": "),
            std::string::npos) << manifest;
  EXPECT_NE(manifest.find(", \"plan_fits\": true, \"predicted_step_s\": null}"), std::string::npos) << manifest;
  // No calibration of a CPU run's device: no predicted step (the report then says only that the cell has not run).
  EXPECT_NE(manifest.find("\"predicted_step_s\": null}"), std::string::npos) << manifest;
  r = test::run_program("qwen3-sweep", args);  // resumes: the complete cells are skipped, the refused one stays refused
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 complete, 1 refused by qwen3-pretrain"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0 to run"), std::string::npos) << r.output;
  r = test::run_program("qwen3-report", shq(dir / "run") + " --out " + shq(dir / "report"));
  QWEN3_REQUIRE_OR_SKIP(!lacks_plotting_stack(r), "qwen3-report has no Python with h5py, matplotlib and scipy: " + r.output);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 runs"), std::string::npos) << r.output;
  // The pipeline cells' per-rank time split and stage layers.
  const std::string report = read_text(dir / "report" / "report.md");
  EXPECT_NE(report.find("## Where each rank's time went"), std::string::npos) << report;
  EXPECT_NE(report.find("| tiny | T1P2D1 | 30 | 0–1, 2–3 |"), std::string::npos) << report;
}

TEST(SweepMpirun, AStaleDatasetIsRebuiltWhenTheSpecAsksForMore) {
  // The dataset holds lengths, documents and a seed; a spec asking for one it lacks rebuilds it before any cell runs
  // (keeping the lengths it had), instead of failing every new cell with "no bucket for sequence length".
  const fs::path dir = test::fresh_dir("qwen3_sweep_stale");
  const std::string base(kOneRankSpec);
  auto with = [&](const std::string& from, const std::string& to) { return replaced(base, from, to); };
  const std::string args = shq(dir / "spec.ini") + " --dir " + shq(dir / "run") + " --local";
  const std::string info = "info " + shq(dir / "run" / "data" / "data-v512.h5");
  auto r = test::run_program("qwen3-sweep", shq(spec_file(dir, "spec.ini", base)) + " --dir " + shq(dir / "run") +
                                                " --local");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  spec_file(dir, "spec.ini", with("lengths = 64", "lengths = 64, 96"));  // a new length
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("1 complete, 1 to run"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("data-v512.h5 (lacks 2 documents of length 96)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[1/1] tiny-L96-T1P1D1: ok"), std::string::npos) << r.output;
  // More documents (with a new length, so that a cell runs): every bucket gets them.
  spec_file(dir, "spec.ini", replaced(with("lengths = 64", "lengths = 64, 96, 128"), "documents = 2", "documents = 4"));
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("(lacks 4 documents of length 128)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[1/1] tiny-L128-T1P1D1: ok"), std::string::npos) << r.output;
  auto d = test::run_program("qwen3-dataset", info);
  EXPECT_NE(d.output.find("seed=1234"), std::string::npos) << d.output;
  for (const char* row : {"          64            4", "          96            4", "         128            4"})
    EXPECT_NE(d.output.find(row), std::string::npos) << row << "\n" << d.output;
  // Another seed: rebuilt with it, the lengths it had kept.
  spec_file(dir, "spec.ini", with("lengths = 64", "lengths = 64, 96, 128, 160") + "seed = 7\n");
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("(built with seed 1234, the spec asks for seed 7)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[1/1] tiny-L160-T1P1D1: ok"), std::string::npos) << r.output;
  d = test::run_program("qwen3-dataset", info);
  EXPECT_NE(d.output.find("seed=7"), std::string::npos) << d.output;
  for (const char* row : {"          64            4", "         128            4", "         160            4"})
    EXPECT_NE(d.output.find(row), std::string::npos) << row << "\n" << d.output;
}

TEST(SweepMpirun, FailedCellsRunAgainOnlyWithRetryFailed) {
  // oom and oom_predicted answer a cell; error counts as complete too, said in the summary, until --retry-failed; a
  // run killed from outside (only its .partial file) is not complete.
  const fs::path dir = test::fresh_dir("qwen3_sweep_failed");
  const std::string body = replaced(kOneRankSpec, "lengths = 64", "lengths = 64, 96, 128");
  const std::string args = shq(spec_file(dir, "spec.ini", body)) + " --dir " + shq(dir / "run") + " --local";
  auto r = test::run_program("qwen3-sweep", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path results = dir / "run" / "results";
  set_status(results / "tiny-L64-T1P1D1.h5", "error");
  set_status(results / "tiny-L96-T1P1D1.h5", "oom");
  fs::rename(results / "tiny-L128-T1P1D1.h5", results / "tiny-L128-T1P1D1.h5.partial");
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 complete (1 failed: error; --retry-failed re-runs them), 1 to run"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("[1/1] tiny-L128-T1P1D1: ok"), std::string::npos) << r.output;
  r = test::run_program("qwen3-sweep", args + " --retry-failed");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 complete, 1 to run (1 failed before: error)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[1/1] tiny-L64-T1P1D1: ok"), std::string::npos) << r.output;
  {
    h5::Handle f = h5::open_read((results / "tiny-L64-T1P1D1.h5").string(), "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
  }
  h5::Handle f = h5::open_read((results / "tiny-L96-T1P1D1.h5").string(), "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "oom") << "an out-of-memory cell is an answer: never re-run";
}

TEST(Sweep, BadSpecificationsAreRefusedBeforeAnythingRuns) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_bad");
  const std::string good(kTinySpec);
  auto with = [&](const std::string& from, const std::string& to) { return replaced(good, from, to); };
  struct Case { std::string body, message; };
  for (const Case& c : {Case{with("models = tiny", "models = tiny, 7B"), "unknown model '7B'"},
                        Case{with("layouts = T1P2, T1P1C2", "layouts = T4P1"), "layout T4P1 needs tp·pp·cp = 4 to divide the 2 ranks"},
                        Case{with("layouts = T1P2, T1P1C2", "layouts = 4x2"), "layout '4x2' is not of the form"},
                        Case{with("layouts = T1P2, T1P1C2", "layouts = T1P1D1"), "layout T1P1D1 says D1, but 2 ranks"},
                        Case{with("name = tiny-test", "name = x;rm -rf ~"), "may hold only letters, digits"},
                        Case{good + "extra_args = --lr $(reboot)\n", "holds characters a job script must not receive"},
                        Case{good + "colour = blue\n", "unknown key 'colour' in [sweep]"},
                        Case{with("global_batch", "global_bacth"), "unknown key 'global_bacth' in [sweep] (did you mean 'global_batch'?"},
                        Case{good + "global-batch = 4\n", "sets 'global_batch' twice"},
                        Case{with("lengths = 30, 64", "lengths = 30, -64"), "must be a positive integer, got '-64'"},
                        Case{good + "device_memory = 80 GB\n", "device_memory '80 GB' is neither a memory size"},
                        // Safe characters, but qwen3-pretrain --plan judges the meaning: its message, once.
                        Case{good + "device_memory = lots\n",
                             "qwen3-pretrain refuses the specification's options: --device-memory: 'lots'"}}) {
    const std::string spec = spec_file(dir, "bad.sweep.ini", c.body);
    const auto r = test::run_program("qwen3-sweep", shq(spec) + " --dir " + shq(dir / "run") + " --local");
    EXPECT_EQ(r.exit_code, 2) << c.body << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.body << "\n" << r.output;
    EXPECT_EQ(r.output.find("error:"), r.output.rfind("error:")) << "one message\n" << r.output;
    EXPECT_FALSE(fs::exists(dir / "run")) << "nothing may be created for a bad specification";
  }
  // Keys spelled as in qwen3-pretrain's config files, and a layout with its data-parallel part, are accepted.
  const std::string hyphens = spec_file(dir, "hyphens.sweep.ini",
                                        replaced(with("global_batch", "global-batch"), "gpus_per_node", "gpus-per-node"));
  auto r = test::run_program("qwen3-sweep", shq(hyphens) + " --dir " + shq(dir / "run") + " --dry-run");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--global-batch 2"), std::string::npos) << r.output;
  // Any other run option of qwen3-pretrain's option table (--list-options) is a key, passed to every cell in the
  // table's order; a flag takes true or false; an option each cell sets itself is not a key.
  const std::string run_keys = spec_file(dir, "run-keys.sweep.ini", good + "lr = 0.001\nno_gemm_autotune = true\n");
  r = test::run_program("qwen3-sweep", shq(run_keys) + " --dir " + shq(dir / "run") + " --dry-run");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--lr 0.001 --no-gemm-autotune"), std::string::npos) << r.output;
  for (const auto& [body, message] : {std::pair{good + "tp = 2\n", "unknown key 'tp' in [sweep]"},
                                      std::pair{good + "no_gemm_autotune = maybe\n", "true or false, got 'maybe'"},
                                      std::pair{good + "lr = 0\n", "qwen3-pretrain refuses the specification's options: --lr must be positive"},
                                      std::pair{good + "attention = --overwrite\n", "must not receive"}}) {
    r = test::run_program("qwen3-sweep", shq(spec_file(dir, "bad-run-key.sweep.ini", body)) + " --dir " + shq(dir / "run") +
                                             " --local");
    EXPECT_EQ(r.exit_code, 2) << body << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << body << "\n" << r.output;
  }
  const std::string spec = spec_file(dir, "good.sweep.ini", good);
  r = test::run_program("qwen3-sweep", shq(spec) + " --dir " + shq(dir / "run") + " --bin /nonexistent --local");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("'/nonexistent/qwen3-pretrain' is missing"), std::string::npos) << r.output;
  // --help says what each exit code means.
  r = test::run_program("qwen3-sweep", "--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"exit codes:", "1  some cells failed (--local)", "2  bad option or specification",
                           "4  the sweep folder cannot be written", "--retry-failed"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
}

// Without running anything (no mpirun): a dry run judges each cell by its results file and the dataset by what it
// holds, both read through the tools' --format json (qwen3-results, qwen3-dataset info), not their text.
TEST(Sweep, DryRunReadsCellStatusesAndTheDatasetThroughTheToolsJson) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_dry_state");
  const std::string body = replaced(kOneRankSpec, "lengths = 64", "lengths = 64, 96, 128");
  const std::string spec = spec_file(dir, "spec.ini", body);
  const fs::path run = dir / "run", data = run / "data" / "data-v512.h5";
  fs::create_directories(run / "results");
  fs::create_directories(run / "data");
  // The dataset and two cells' results as an earlier sweep would have left them, one of them failed.
  auto r = test::run_program("qwen3-dataset", "synthetic --out " + shq(data) +
                                                  " --vocab-size 512 --lengths 64,96,128 --documents 2 --seed 1234");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string len : {"64", "96"}) {
    r = test::run_program("qwen3-pretrain", "--model tiny --data " + shq(data) + " --seq-len " + len +
                                                " --global-batch 2 --steps 1 --out " + shq(run / "results" / ("tiny-L" + len + "-T1P1D1.h5")));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  set_status(run / "results" / "tiny-L96-T1P1D1.h5", "error");
  const std::string args = shq(spec) + " --dir " + shq(run) + " --dry-run";
  r = test::run_program("qwen3-sweep", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 complete (1 failed: error; --retry-failed re-runs them), 1 to run"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cell tiny-L128-T1P1D1:"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("dataset ("), std::string::npos) << "the dataset holds what the cell needs\n" << r.output;
  // Another seed, then more documents: what the file holds, read back, says why it would be rebuilt.
  spec_file(dir, "spec.ini", body + "seed = 7\n");
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("dataset (built with seed 1234, the spec asks for seed 7):"), std::string::npos) << r.output;
  spec_file(dir, "spec.ini", replaced(body, "documents = 2", "documents = 4"));
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("dataset (lacks 4 documents of length 128):"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(run / "cells.json")) << "a dry run writes nothing";
}

TEST(Sweep, JobScriptAnswersHelpAndNamesQwen3BinWhenTheBinaryIsMissing) {
  const std::string script = shq(repo_file("jobs/pretrain.sbatch"));
  auto r = test::run_command("bash " + script + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* word : {"usage: sbatch", "QWEN3_BIN", "NCCL_NVLS_ENABLE", "OMP_NUM_THREADS", "--bind-to none"})
    EXPECT_NE(r.output.find(word), std::string::npos) << word << "\n" << r.output;
  r = test::run_command("bash " + script);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = test::run_command("QWEN3_BIN=/nonexistent bash " + script + " --model tiny");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("pretrain.sbatch: error: QWEN3_BIN=/nonexistent holds no executable qwen3-pretrain"),
            std::string::npos) << r.output;
  // A copy outside any repository, run from elsewhere with no QWEN3_BIN: one message naming QWEN3_BIN.
  const fs::path dir = test::fresh_dir("qwen3_sbatch_lone");
  fs::copy_file(repo_file("jobs/pretrain.sbatch"), dir / "pretrain.sbatch");
  r = test::run_command("cd / && env -u QWEN3_BIN -u SLURM_JOB_ID -u SLURM_SUBMIT_DIR PATH=/usr/bin:/bin bash " +
                        shq(dir / "pretrain.sbatch") + " --model tiny");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("pretrain.sbatch: error: qwen3-pretrain not found"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("set QWEN3_BIN to the folder holding it"), std::string::npos) << r.output;
}

TEST(SweepSlurm, SubmittedToARealSlurmAsOneArrayJob) {
  const bool slurm = test::run_command("command -v sbatch && command -v squeue && command -v scontrol && "
                                       "{ command -v slurmd || test -x /usr/sbin/slurmd; } && "
                                       "{ command -v slurmctld || test -x /usr/sbin/slurmctld; } && "
                                       "{ command -v munged || test -x /usr/sbin/munged; }").exit_code == 0;
  QWEN3_REQUIRE_OR_SKIP(slurm, "Slurm is not installed (munge slurmctld slurmd slurm-client)");
  QWEN3_REQUIRE_OR_SKIP(::geteuid() == 0, "starting slurmctld/slurmd needs root (CI runs the suite as root)");
  const fs::path dir = test::fresh_dir("qwen3_sweep_slurm");
  const std::string cluster = (dir / "cluster").string();
  const std::string script = shq(repo_file("tools/slurm/local_slurm.sh")) + " ";
  struct Stop {  // the daemons this test started end with it, whatever happens
    std::string cmd;
    ~Stop() { test::run_command(cmd); }
  } stop{script + "stop '" + cluster + "'"};
  auto r = test::run_command(script + "start '" + cluster + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ::setenv("SLURM_CONF", (fs::path(cluster) / "slurm.conf").c_str(), 1);
  const std::string spec = spec_file(dir, "tiny.sweep.ini", kTinySpec);
  const std::string args = shq(spec) + " --dir " + shq(dir / "run");
  r = test::run_program("qwen3-sweep", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto at = r.output.find("submitted array job ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string job = r.output.substr(at + 20, r.output.find(' ', at + 20) - at - 20);
  EXPECT_NE(r.output.find("(3 tasks)"), std::string::npos) << r.output;  // the refused cell is not submitted
  const auto job_files = [&] {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir / "run" / "jobs")) ++n;
    return n;
  };
  EXPECT_TRUE(fs::exists(dir / "run" / "jobs" / ("submission-" + job + ".json")));
  const std::size_t files = job_files();
  // Submitted again at once: every cell is queued, running or complete, so nothing is submitted or written.
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("nothing to submit"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(", 0 to run"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("submitted array job"), std::string::npos) << r.output;
  EXPECT_EQ(job_files(), files) << "a submission with nothing to run writes nothing";
  for (int i = 0; i < 600; ++i) {  // until the array has left the queue (at most 2 minutes)
    if (test::run_command("squeue -h -j " + job).output.find_first_not_of(" \n") == std::string::npos) break;
    ::usleep(200000);
  }
  EXPECT_EQ(test::run_command("squeue -h -j " + job).output.find_first_not_of(" \n"), std::string::npos) << "still queued";
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L30-T1P2D1.h5"));
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L64-T1P2D1.h5"));
  EXPECT_TRUE(fs::exists(dir / "run" / "results" / "tiny-L64-T1P1C2D1.h5"));
  EXPECT_FALSE(fs::exists(dir / "run" / "results" / "tiny-L30-T1P1C2D1.h5"));  // refused: 30 tokens over 2 × cp chunks
  EXPECT_NE(read_text(dir / "run" / "cells.json").find("\"refused\": \"--cp 2: --seq-len 30 must divide by 2 × cp"),
            std::string::npos);
  r = test::run_program("qwen3-sweep", args + " --dry-run");  // resumes: nothing left
  EXPECT_NE(r.output.find("3 complete, 1 refused by qwen3-pretrain"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0 to run"), std::string::npos) << r.output;

  // The job script as root, submitted from another folder with no QWEN3_BIN: it finds build/bin of the repository
  // it was submitted from (here a copy of jobs/ beside a link to the binaries) and gives each rank its cores.
  fs::create_directories(dir / "repo" / "jobs");
  fs::create_directories(dir / "repo" / "build");
  fs::copy_file(repo_file("jobs/pretrain.sbatch"), dir / "repo" / "jobs" / "pretrain.sbatch");
  fs::create_directory_symlink(fs::absolute(test::bin_dir()), dir / "repo" / "build" / "bin");
  fs::create_directories(dir / "elsewhere");
  r = test::run_command("cd " + shq(dir / "elsewhere") + " && env -u QWEN3_BIN sbatch --wait --nodes=1 "
                        "--ntasks-per-node=2 --gpus-per-node=0 -o job.out " + shq(dir / "repo" / "jobs" / "pretrain.sbatch") +
                        " --model tiny --data " + shq(dir / "run" / "data" / "data-v512.h5") +
                        " --seq-len 64 --global-batch 2 --steps 2 --device cpu --out run.h5");
  EXPECT_EQ(r.exit_code, 0) << r.output << read_text(dir / "elsewhere" / "job.out");
  EXPECT_TRUE(fs::exists(dir / "elsewhere" / "run.h5")) << read_text(dir / "elsewhere" / "job.out");

  r = test::run_program("qwen3-report", shq(dir / "run") + " --out " + shq(dir / "report"));
  QWEN3_REQUIRE_OR_SKIP(!lacks_plotting_stack(r), "qwen3-report has no Python with h5py, matplotlib and scipy: " + r.output);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 runs"), std::string::npos) << r.output;
}

TEST(Sweep, PlanPrintsEveryCellsPeakPerRank) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_plan");
  // A GPU spec: the peak against the spec's device.
  const std::string gpu = spec_file(dir, "gpu.sweep.ini", replaced(kTinySpec, "device = cpu", "device = cuda") +
                                                             "device_memory = 1GB\n");
  auto r = test::run_program("qwen3-sweep", shq(gpu) + " --dir " + shq(dir / "run") + " --plan");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| memory policy | planned peak per rank (GiB, 1GB device) |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| tiny | 64 | T1P2D1 | none |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("✖ does not fit"), std::string::npos) << r.output;  // with the 1 GiB runtime reserve
  // host_memory: the node's, shared by gpus_per_node ranks; the optimizer on the host pins more than 90% of 1 MB.
  const std::string host = spec_file(dir, "host.sweep.ini", replaced(kTinySpec, "device = cpu", "device = cuda") +
                                     "device_memory = 1TB\nhost_memory = 1MB\nrecompute = full\n"
                                     "extra_args = --offload-optimizer\n");
  r = test::run_program("qwen3-sweep", shq(host) + " --dir " + shq(dir / "run-host") + " --plan");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| tiny | 64 | T1P2D1 | full, optimizer on host |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("✖ host memory"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("✔ fits"), std::string::npos) << r.output;
  // A CPU spec (issue 30, item 11): no device, so no capacity in the header and no verdict against one.
  const std::string spec = spec_file(dir, "tiny.sweep.ini", kTinySpec);
  r = test::run_program("qwen3-sweep", shq(spec) + " --dir " + shq(dir / "run") + " --plan");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| memory policy | planned peak per rank (GiB) |"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("device)"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("fit"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| tiny | 30 | T1P2D1 | none |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("runs (CPU: no device limit)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| tiny | 64 | T1P1C2D1 | none |"), std::string::npos) << r.output;  // context parallelism planned
  EXPECT_NE(r.output.find("| tiny | 30 | T1P1C2D1 | — | — | — | --cp 2: --seq-len 30 must divide by 2 × cp"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir / "run")) << "planning creates nothing";
}

// Issue 28 item 6: a cell whose operations the calibration lacks (4B: a calibration without its kernels, passed through
// extra_args) shows no predicted step, and the run-time total leaves it out saying so; a calibrated cell (1.7B) keeps
// its.
TEST(Sweep, PlanShowsNoPredictionForACellTheCalibrationDoesNotPrice) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_plan_unpriced");
  const std::string without = test::h200_calibration_without_4b(dir);
  const std::string spec = spec_file(dir, "h200.sweep.ini", "[sweep]\nextra_args = --calibration " + without + R"(
name = unpriced-test
models = 1.7B, 4B
lengths = 4096
layouts = T1P1
global_batch = 8
steps = 10
documents = 8
device = cuda
device_memory = h200
gpus_per_node = 1
)");
  const auto r = test::run_program("qwen3-sweep", shq(spec) + " --dir " + shq(dir / "run") + " --plan");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto row = [&](const std::string& model) {
    const auto at = r.output.find("| " + model + " | 4096 | T1P1D1 |");
    return at == std::string::npos ? std::string() : r.output.substr(at, r.output.find('\n', at) - at);
  };
  EXPECT_NE(row("4B").find("✔ fits | no prediction (unpriced) | — | — | — |"), std::string::npos) << r.output;
  EXPECT_EQ(row("4B").find('%'), std::string::npos) << r.output;  // no MFU
  EXPECT_NE(row("1.7B").find('%'), std::string::npos) << r.output;  // its MFU, as before
  EXPECT_NE(r.output.find("leaving out 1 cell with no prediction."), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 cell that fits has no predicted step"), std::string::npos) << r.output;
}

namespace {
// The field names docs/cli.md lists for `qwen3-pretrain --plan --format json` (its table's first column).
std::set<std::string> documented_plan_fields() {
  const std::string doc = read_text(repo_file("docs/cli.md"));
  const auto start = doc.find("### `qwen3-pretrain --plan --format json`");
  EXPECT_NE(start, std::string::npos) << "docs/cli.md has no section on --plan --format json";
  const auto end = doc.find("\n#", start + 10);
  std::set<std::string> fields;
  std::size_t at = start;
  while ((at = doc.find("\n| `", at)) != std::string::npos && at < end) {
    const auto close = doc.find('`', at + 4);
    fields.insert(doc.substr(at + 4, close - at - 4));
    at = close;
  }
  return fields;
}

// Every key of a --plan JSON object as docs/cli.md names it: "predicted.step_s", "reserve[].what"; by_category's keys
// are categories (data, not fields), so it is one field.
void collect_fields(const nlohmann::json& j, const std::string& prefix, std::set<std::string>& out) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix + key;
    out.insert(name);
    if (key == "by_category" || key == "sources") continue;  // objects keyed by data: documented as a whole
    if (value.is_object()) collect_fields(value, name + ".", out);
    if (value.is_array() && !value.empty() && value[0].is_object()) collect_fields(value[0], name + "[].", out);
  }
}
}  // namespace

// Issue 30, item 10: `qwen3-pretrain --plan --format json` emits exactly the fields docs/cli.md lists (every emitted
// key documented, every documented key emitted), the memory policy as separate fields a tool can read.
TEST(Sweep, PlanJsonFieldsAreExactlyThoseDocsCliMdLists) {
  const std::set<std::string> documented = documented_plan_fields();
  ASSERT_GT(documented.size(), 20u);
  std::set<std::string> emitted;
  // With a calibration (h200's is committed: "predicted" is an object) and without one (a CPU plan: null), the
  // memory policy spelled out: full recomputation of 4 layers, inputs and 60% of the optimizer on the host.
  // And a layout the calibration lacks kernels of (4B with a calibration without them: "predicted" null, "unpriced" an
  // object; issue 28 item 6).
  const std::vector<std::string> cases = {
      "--model 1.7B --seq-len 4096 --device-memory h200 --recompute full --recompute-num-layers 4 --offload-inputs "
      "--offload-optimizer=0.6",
      "--model tiny --seq-len 64 --device cpu",
      "--model 4B --seq-len 4096 --device-memory h200 --calibration " +
          test::h200_calibration_without_4b(test::fresh_dir("qwen3_plan_json_fields"))};
  for (const std::string& args : cases) {
    const auto r = test::run_program("qwen3-pretrain", "--plan --format json --world-size 1 " + args);
    ASSERT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    const auto j = nlohmann::json::parse(r.output);
    collect_fields(j, "", emitted);
    if (args.find("4B") != std::string::npos) {
      EXPECT_TRUE(j["predicted"].is_null()) << r.output;
      ASSERT_TRUE(j["unpriced"].is_object()) << r.output;
      EXPECT_EQ(j["unpriced"]["calibration"], "h200") << r.output;
      EXPECT_FALSE(j["unpriced"]["operations"].empty()) << r.output;
      EXPECT_EQ(j["unpriced"]["command"].get<std::string>().rfind("qwen3-calibrate --models 4B --lengths 4096 --tp 1 --base ", 0), 0u)
          << r.output;
    } else if (args.find("h200") != std::string::npos) {
      EXPECT_EQ(j["recompute"], "full") << r.output;
      EXPECT_EQ(j["recompute_num_layers"], 4) << r.output;
      EXPECT_EQ(j["offload_inputs"], true) << r.output;
      EXPECT_NEAR(j["offload_optimizer"].get<double>(), 0.6, 1e-9) << r.output;
      EXPECT_EQ(j["memory_policy"], "full (first 4 layers of each stage), inputs offloaded to host, 60% of the optimizer on host")
          << r.output;
      EXPECT_TRUE(j["predicted"].is_object()) << r.output;
      EXPECT_TRUE(j["unpriced"].is_null()) << r.output;
    } else {
      EXPECT_EQ(j["recompute"], "none") << r.output;
      EXPECT_EQ(j["offload_optimizer"], 0.0) << r.output;
      EXPECT_TRUE(j["predicted"].is_null()) << r.output;
    }
  }
  for (const auto& f : emitted) EXPECT_TRUE(documented.count(f)) << "emitted but not in docs/cli.md: " << f;
  for (const auto& f : documented) EXPECT_TRUE(emitted.count(f)) << "in docs/cli.md but not emitted: " << f;
}

TEST(SweepMpirun, APreemptedCellRunsAgainFromItsCheckpoint) {
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
  const std::string args = shq(spec) + " --dir " + shq(dir / "run") + " --local";
  auto r = test::run_program("qwen3-sweep", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path ckpt = dir / "run" / "checkpoints" / "tiny-L64-T1P1D1", results = dir / "run" / "results" / "tiny-L64-T1P1D1.h5";
  EXPECT_TRUE(fs::exists(ckpt / "step-00000004" / "manifest.h5"));
  EXPECT_FALSE(fs::exists(ckpt / "step-00000002")) << "the cells keep their newest checkpoint only";
  // As if Slurm had stopped the cell after step 2: its checkpoint of step 2 and a results file saying so.
  fs::remove_all(ckpt);
  const auto again = test::run_program("qwen3-pretrain", "--model tiny --data " + shq(dir / "run" / "data" / "data-v512.h5") +
                                                             " --seq-len 64 --global-batch 2 --steps 2 --save " + shq(ckpt) +
                                                             " --out " + shq(dir / "partial.h5"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  set_status(results, "preempted");
  r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0 complete, 1 to run"), std::string::npos) << r.output;
  const std::string text = read_text(dir / "run" / "logs" / "tiny-L64-T1P1D1.log");
  EXPECT_NE(text.find("resumed from"), std::string::npos) << text;
  EXPECT_NE(text.find("at step 2"), std::string::npos) << text;
  h5::Handle f = h5::open_read(results.string(), "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
  EXPECT_EQ(h5::read_f64(f.get(), "steps/loss").size(), 2u);  // steps 3 and 4
}

namespace {
// A results file of a finished one-rank run (tiny, 64 tokens), and one at 96 tokens edited as a run that diverged at
// step 2 leaves it (status diverged, diverged_at_step, the message naming the step): made once per test process.
struct DivergedFiles { fs::path ok, diverged; };
const DivergedFiles& diverged_files() {
  static const DivergedFiles files = [] {
    const fs::path d = test::fresh_dir("qwen3_sweep_diverged_files_" + std::to_string(::getpid()));
    auto r = test::run_program("qwen3-dataset", "synthetic --out " + shq(d / "data.h5") +
                                                    " --vocab-size 512 --lengths 64,96 --documents 2");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = test::run_program("qwen3-pretrain", "--model tiny --data " + shq(d / "data.h5") +
                                                " --seq-len 64 --global-batch 2 --steps 2 --out " + shq(d / "ok.h5"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = test::run_program("qwen3-pretrain", "--model tiny --data " + shq(d / "data.h5") +
                                                " --seq-len 96 --global-batch 2 --steps 2 --out " + shq(d / "diverged.h5"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    h5::Handle f = h5::open_rw((d / "diverged.h5").string());
    h5::write_attr(f.get(), "status", std::string("diverged"));
    h5::write_attr(f.get(), "diverged_at_step", std::int64_t{2});
    h5::write_attr(f.get(), "error_message", std::string("the loss is not finite (nan) at step 2"));
    return DivergedFiles{d / "ok.h5", d / "diverged.h5"};
  }();
  return files;
}

void write_executable(const fs::path& p, const std::string& body) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
  fs::permissions(p, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}
}  // namespace

// Issue 30, item 7: with --local a cell that diverged (qwen3-pretrain's exit code 8, status diverged) is said so with
// its step, its log ends with the exit code, and it is an answer: the next sweep does not run it again, nor does
// --retry-failed (the same seed, data and options diverge again); the report shows it as diverged at its step.
// The launcher is a stand-in for mpirun that writes what a diverging run writes (no MPI, no real divergence needed).
TEST(Sweep, ADivergedCellIsAnAnswerNeverRunAgain) {
  const DivergedFiles& files = diverged_files();
  const fs::path dir = test::fresh_dir("qwen3_sweep_diverged");
  const fs::path launcher = dir / "fake-mpirun", calls = dir / "calls";
  write_executable(launcher, "echo run >> " + shq(calls) + "\nout=''; seq=''; prev=''\n"
                   "for a in \"$@\"; do [ \"$prev\" = --out ] && out=$a; [ \"$prev\" = --seq-len ] && seq=$a; prev=$a; done\n"
                   "if [ \"$seq\" = 96 ]; then cp " + shq(files.diverged) + " \"$out\"; "
                   "echo 'qwen3-pretrain: error: the loss is not finite (nan) at step 2' >&2; exit 8; fi\n"
                   "cp " + shq(files.ok) + " \"$out\"");
  const std::string spec = spec_file(dir, "spec.ini", replaced(kOneRankSpec, "lengths = 64", "lengths = 64, 96"));
  const std::string args = shq(spec) + " --dir " + shq(dir / "run") + " --local --mpirun " + shq(launcher);
  auto r = test::run_program("qwen3-sweep", args);
  EXPECT_EQ(r.exit_code, 1) << r.output;  // a cell did not run to the end
  EXPECT_NE(r.output.find("[1/2] tiny-L64-T1P1D1: ok"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[2/2] tiny-L96-T1P1D1: diverged (exit 8: the loss is not finite (nan) at step 2, "),
            std::string::npos) << r.output;
  const std::string log = read_text(dir / "run" / "logs" / "tiny-L96-T1P1D1.log");
  EXPECT_NE(log.find("qwen3-sweep: cell ended with exit code 8\n"), std::string::npos) << log;
  for (const std::string extra : {"", " --retry-failed"}) {
    r = test::run_program("qwen3-sweep", args + extra);
    EXPECT_EQ(r.exit_code, 0) << extra << "\n" << r.output;
    EXPECT_NE(r.output.find("2 complete (1 diverged: an answer, not run again), 0 to run"), std::string::npos)
        << extra << "\n" << r.output;
  }
  EXPECT_EQ(read_text(calls), "run\nrun\n") << "each cell ran once";
  r = test::run_program("qwen3-report", shq(dir / "run") + " --out " + shq(dir / "report"));
  QWEN3_REQUIRE_OR_SKIP(!lacks_plotting_stack(r), "qwen3-report has no Python with h5py, matplotlib and scipy: " + r.output);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string md = read_text(dir / "report" / "report.md");
  EXPECT_NE(md.find("| tiny | ✔ (0.2 GiB) | ✖ diverged at step 2"), std::string::npos) << md;
  EXPECT_NE(md.find("- tiny T1P1D1 96: diverged at step 2 — the loss is not finite (nan) at step 2"), std::string::npos) << md;
}

// Issue 30, item 7, the Slurm path: the array job's script requeues a task that ended pre-empted (exit code 7) and
// leaves one that diverged (8) as it ended. Run here with stand-ins for sbatch, mpirun and scontrol.
TEST(Sweep, TheSlurmJobScriptRequeuesAPreemptedCellButNotADivergedOne) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_requeue");
  const fs::path bin = dir / "fake-bin", requeues = dir / "requeues";
  write_executable(bin / "sbatch", "echo 4242");
  write_executable(bin / "mpirun", "exit \"$FAKE_RC\"");
  write_executable(bin / "scontrol", "echo \"$*\" >> " + shq(requeues));
  const std::string path = "PATH=" + shq(bin) + ":\"$PATH\" ";
  const std::string spec = spec_file(dir, "spec.ini", kOneRankSpec);
  auto r = test::run_command(path + shq(fs::path(test::bin_dir()) / "qwen3-sweep") + " " + shq(spec) + " --dir " +
                             shq(dir / "run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("submitted array job 4242 (1 tasks)"), std::string::npos) << r.output;
  fs::path script;
  for (const auto& e : fs::directory_iterator(dir / "run" / "jobs"))
    if (e.path().extension() == ".sbatch") script = e.path();
  ASSERT_FALSE(script.empty());
  for (const int rc : {8, 7}) {
    fs::remove(requeues);
    r = test::run_command(path + "FAKE_RC=" + std::to_string(rc) +
                          " SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_JOB_ID=4242 bash " + shq(script));
    EXPECT_EQ(r.exit_code, rc) << r.output;
    EXPECT_EQ(fs::exists(requeues) ? read_text(requeues) : "", rc == 7 ? "requeue 4242_0\n" : "") << rc;
  }
}

// Issue 30, item 6: a `device = cuda` sweep run with --local on a host where no GPU is visible: every cell fails
// (exit 2, the run's message), and the report shows each as its own cell with that reason — never one phantom cell.
TEST(SweepMpirun, ACudaSweepWithoutAGpuReportsEveryFailedCellAsItsOwn) {
  const fs::path dir = test::fresh_dir("qwen3_sweep_no_gpu");
  const std::string spec = spec_file(dir, "spec.ini", replaced(replaced(kOneRankSpec, "device = cpu", "device = cuda"),
                                                               "lengths = 64", "lengths = 64, 128"));
  auto r = test::run_command("CUDA_VISIBLE_DEVICES= " + shq(fs::path(test::bin_dir()) / "qwen3-sweep") + " " + shq(spec) +
                             " --dir " + shq(dir / "run") + " --local");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("[1/2] tiny-L64-T1P1D1: failed (exit 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[2/2] tiny-L128-T1P1D1: failed (exit 2"), std::string::npos) << r.output;
  // One of them as if it had left no results file at all: its log says how it ended.
  fs::remove(dir / "run" / "results" / "tiny-L128-T1P1D1.h5");
  r = test::run_program("qwen3-report", shq(dir / "run") + " --out " + shq(dir / "report"));
  QWEN3_REQUIRE_OR_SKIP(!lacks_plotting_stack(r), "qwen3-report has no Python with h5py, matplotlib and scipy: " + r.output);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string feas = read_text(dir / "report" / "feasibility.csv");
  EXPECT_EQ(feas, "model,layout,seq_len_64,seq_len_128\ntiny,T1P1D1,error,error\n") << feas;
  const std::string md = read_text(dir / "report" / "report.md");
  EXPECT_NE(md.find("- tiny T1P1D1 64: error — --device cuda"), std::string::npos) << md;
  EXPECT_NE(md.find("- tiny T1P1D1 128: error — no results file; exit code 2; logs/tiny-L128-T1P1D1.log: "
                    "qwen3-pretrain: error: --device cuda"), std::string::npos) << md;
  EXPECT_EQ(md.find("| ? |"), std::string::npos) << md;
}
