// qwen3-report over a folder of real results files (tiny CPU runs, one under mpirun with tp 2, one that failed, and a
// dataset file it must skip): the feasibility table with the failure's reason, the regression over sequence length,
// the CSV tables and the plots; bad input ends with one clear message and its exit code.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "cli_runner.h"
#include "io/dataset.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {
std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

TEST(Report, FeasibilityRegressionTablesAndPlotsFromAFolderOfRuns) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_report";
  fs::remove_all(dir);
  fs::create_directories(dir / "runs");
  const std::string data = (dir / "runs" / "data.h5").string();  // not a results file: skipped
  write_synthetic_dataset(data, 512, {32, 64, 128}, 16, 21, false);
  const std::string common = "--model tiny --data '" + data + "' --global-batch 2 --steps 3 ";
  for (int L : {32, 64, 128}) {
    const auto r = test::run_program("qwen3-pretrain", common + "--seq-len " + std::to_string(L) + " --out '" +
                                                          (dir / "runs" / ("t1-" + std::to_string(L) + ".h5")).string() + "'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-pretrain' " + common +
                             "--seq-len 64 --tp 2 --out '" + (dir / "runs" / "t2-64.h5").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_program("qwen3-pretrain", common + "--seq-len 256 --out '" + (dir / "runs" / "t1-256.h5").string() + "'");
  ASSERT_EQ(r.exit_code, 3) << r.output;  // no bucket of 256 tokens: the results file says so

  const fs::path out = dir / "report";
  r = test::run_program("qwen3-report", "'" + (dir / "runs").string() + "' --out '" + out.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("5 runs"), std::string::npos) << r.output;
  const std::string md = read_text(out / "report.md");
  EXPECT_NE(md.find("### T1P1D1"), std::string::npos) << md;
  EXPECT_NE(md.find("### T2P1D1"), std::string::npos) << md;
  // T1P1 row: three finished lengths with their measured peak (resident memory on the CPU), then the failure.
  const auto row = md.find("| tiny | ✔ (");
  ASSERT_NE(row, std::string::npos) << md;
  const std::string line = md.substr(row, md.find('\n', row) - row);
  EXPECT_EQ(std::count(line.begin(), line.end(), '|'), 6) << line;
  EXPECT_NE(line.find(" GiB) | ✖ error |"), std::string::npos) << line;
  EXPECT_NE(md.find("no bucket for sequence length 256"), std::string::npos) << md;
  EXPECT_NE(md.find("| tiny | T1P1D1 | 3 |"), std::string::npos) << md;  // the fit over 32, 64, 128
  const std::string fits = read_text(out / "regression.csv");
  EXPECT_NE(fits.find("tiny,T1P1D1,3,"), std::string::npos) << fits;
  const std::string runs = read_text(out / "runs.csv");
  EXPECT_EQ(std::count(runs.begin(), runs.end(), '\n'), 6) << runs;  // header + 5 runs
  const std::string feas = read_text(out / "feasibility.csv");
  EXPECT_NE(feas.find("tiny,T1P1D1,ok,ok,ok,error"), std::string::npos) << feas;
  for (const char* png : {"time_vs_length.png", "memory.png", "throughput.png"}) {
    ASSERT_TRUE(fs::exists(out / png)) << png;
    EXPECT_GT(fs::file_size(out / png), 1000u) << png;
    EXPECT_EQ(read_text(out / png).substr(1, 3), "PNG") << png;
  }
}

TEST(Report, BadInputEndsWithOneClearMessage) {
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_report_bad";
  fs::remove_all(dir);
  fs::create_directories(dir / "empty");
  std::ofstream(dir / "junk.h5") << "not hdf5";
  struct Case { std::string args; int code; std::string message; };
  for (const Case& c : {Case{"'" + (dir / "missing").string() + "' --out x", 2, "does not exist"},
                        Case{"'" + (dir / "empty").string() + "' --out '" + (dir / "o").string() + "'", 3,
                             "no qwen3-pretrain results files under"},
                        Case{"'" + (dir / "junk.h5").string() + "' --out '" + (dir / "o").string() + "'", 3,
                             "is not a readable HDF5 file"},
                        Case{"'" + (dir / "empty").string() + "'", 2, "--out"}}) {
    const auto r = test::run_program("qwen3-report", c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}
