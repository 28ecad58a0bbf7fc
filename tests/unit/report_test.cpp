// qwen3-report over folders of real results files (tiny CPU runs, one under mpirun with tp 2, one that failed, and a
// dataset file it must skip), some edited the way other runs would have written them (newer results of one cell, a
// GPU run, a `layout` attribute, variable-length strings), and a sweep's cells.json: the feasibility table with every
// reason, the regression over sequence length, the CSV tables, and what the plots draw (each PNG's Description); the
// launcher's choice of Python; bad input ends with one clear message and its exit code.
// Tests that need h5py/matplotlib/scipy skip on a host where no Python has them, and fail there under CI=true.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "cli_runner.h"
#include "io/dataset.h"
#include "io/h5.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {
std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_script(const fs::path& p, const std::string& body) {
  std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
  fs::permissions(p, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}

// The launcher's message when no Python has the report's packages; empty when one has.
std::string plotting_stack_missing() {
  const auto r = test::run_program("qwen3-report", "--help");
  return r.exit_code == 0 ? "" : r.output;
}

// CI installs the packages (tools/bootstrap.sh), so there a missing stack is a failure, elsewhere a skip with why.
#define REQUIRE_PLOTTING_STACK()                                                                              \
  do {                                                                                                        \
    const std::string why = plotting_stack_missing();                                                         \
    QWEN3_REQUIRE_OR_SKIP(why.empty(), "no Python with h5py, matplotlib and scipy here: " + why);             \
  } while (0)

// The interpreter the launcher picked (the help's last line: "Python: PATH").
std::string report_python() {
  const std::string help = test::run_program("qwen3-report", "--help").output;
  const auto at = help.rfind("Python: ");
  return at == std::string::npos ? "" : help.substr(at + 8, help.find('\n', at) - at - 8);
}

// A folder of real results files, made once per test process: tiny on one CPU rank at 32, 64 and 128 tokens
// (t1-<L>.h5), at 64 tokens with tp 2 under mpirun (t2-64.h5), one that failed (t1-256.h5: no such bucket), and the
// dataset (data.h5, not a results file).
const fs::path& runs_folder() {
  static const fs::path dir = [] {
    const fs::path d = test::fresh_dir("qwen3_report_runs_" + std::to_string(::getpid()));
    const std::string data = (d / "data.h5").string();
    write_synthetic_dataset(data, 512, {32, 64, 128}, 16, 21, false);
    const std::string common = "--model tiny --data '" + data + "' --global-batch 2 --steps 3 ";
    auto out = [&](const std::string& name) { return " --out '" + (d / name).string() + "'"; };
    for (int L : {32, 64, 128}) {
      const auto r = test::run_program("qwen3-pretrain", common + "--seq-len " + std::to_string(L) +
                                                             out("t1-" + std::to_string(L) + ".h5"));
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
    auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-pretrain' " + common +
                               "--seq-len 64 --tp 2" + out("t2-64.h5"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = test::run_program("qwen3-pretrain", common + "--seq-len 256" + out("t1-256.h5"));
    EXPECT_EQ(r.exit_code, 3) << r.output;  // no bucket of 256 tokens: the results file says so
    return d;
  }();
  return dir;
}

// Sets a string attribute of the file's root (group "") or of a group the way newer results files store strings:
// variable-length UTF-8, which h5py returns as str (the file's other strings stay fixed-length: bytes in h5py).
void set_vlen_string(const fs::path& file, const std::string& group, const std::string& name,
                     const std::string& value) {
  const h5::Handle f = h5::open_rw(file.string());
  const h5::Handle opened = group.empty() ? h5::Handle() : h5::open_group(f.get(), group);
  const hid_t g = group.empty() ? f.get() : opened.get();
  if (h5::has_attr(g, name)) H5Adelete(g, name.c_str());
  const h5::Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const h5::Handle space(H5Screate(H5S_SCALAR));
  const h5::Handle a(H5Acreate2(g, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  const char* s = value.c_str();
  ASSERT_GE(H5Awrite(a.get(), type.get(), &s), 0) << name;
}

// Report of `args` into dir/report; returns its stdout and leaves the files there.
std::string report(const fs::path& dir, const std::string& inputs) {
  const auto r = test::run_program("qwen3-report", inputs + " --out '" + (dir / "report").string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

// The value of column `name` in the CSV row that starts with `row` (no quoted commas in these rows).
std::string csv_field(const std::string& csv, const std::string& row, const std::string& name) {
  auto split = [](const std::string& line) {
    std::vector<std::string> out(1);
    for (char ch : line) {
      if (ch == ',') out.emplace_back();
      else out.back().push_back(ch);
    }
    return out;
  };
  const auto header = split(csv.substr(0, csv.find('\n')));
  const auto at = csv.find("\n" + row);
  if (at == std::string::npos) return "<no row " + row + ">";
  const auto fields = split(csv.substr(at + 1, csv.find('\n', at + 1) - at - 1));
  const auto col = std::find(header.begin(), header.end(), name) - header.begin();
  return static_cast<std::size_t>(col) < fields.size() ? fields[col] : "<no column " + name + ">";
}

// What a PNG draws: the Description qwen3-report stores in it, an uncompressed tEXt/iTXt chunk (length, type,
// keyword, NUL-separated header fields, then the text).
std::string png_description(const fs::path& png) {
  const std::string bytes = read_text(png);
  EXPECT_EQ(bytes.substr(1, 3), "PNG") << png;
  const auto at = bytes.find("Description");
  if (at == std::string::npos || at < 8) return "";
  std::uint32_t length = 0;
  for (int i = 8; i > 4; --i) length = (length << 8) | static_cast<unsigned char>(bytes[at - i]);
  const std::string chunk = bytes.substr(at, length);
  return chunk.substr(chunk.rfind('\0') + 1);
}
}  // namespace

TEST(Report, NoPythonWithThePackagesIsOneMessageNamingEachInterpreter) {
  const fs::path dir = test::fresh_dir("qwen3_report_no_python");
  fs::create_directories(dir / "bin");
  // Interpreters without the packages: Python without its site packages (-S), or a program that is no Python at all
  // where /usr/bin/python3 is missing; the launcher's last resort pointed at a path that does not exist.
  const std::string lacking = "if [ -x /usr/bin/python3 ]; then exec /usr/bin/python3 -S \"$@\"; fi; exit 1";
  write_script(dir / "venv-python", lacking);
  write_script(dir / "bin" / "python3", lacking);
  const std::string launcher = (dir / "qwen3-report").string();
  auto r = test::run_command("sed 's#/usr/bin/python3#/nonexistent/python3#g' '" + test::bin_dir() + "/qwen3-report' > '" +
                             launcher + "' && chmod +x '" + launcher + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_command("QWEN3_PYTHON='" + (dir / "venv-python").string() + "' PATH='" + (dir / "bin").string() +
                        "':/usr/bin:/bin '" + launcher + "' --help");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("qwen3-report: error: no Python with h5py, matplotlib and scipy"), std::string::npos) << r.output;
  // Each interpreter named with what it lacks, in the order tried: QWEN3_PYTHON, python3 on the PATH, /usr/bin/python3.
  const auto env = r.output.find((dir / "venv-python").string() + " (");
  const auto path = r.output.find((dir / "bin" / "python3").string() + " (");
  const auto last = r.output.find("/nonexistent/python3 (not found)");
  EXPECT_NE(env, std::string::npos) << r.output;
  EXPECT_LT(env, path) << r.output;
  EXPECT_LT(path, last) << r.output;
  if (fs::exists("/usr/bin/python3")) EXPECT_NE(r.output.find("(lacks h5py matplotlib scipy)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("python3-h5py python3-matplotlib python3-scipy"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("set QWEN3_PYTHON"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << "one line: " << r.output;
}

TEST(Report, RunsUnderQwen3PythonThenPython3OnThePathThenUsrBinPython3) {
  REQUIRE_PLOTTING_STACK();
  const std::string python = report_python();
  ASSERT_FALSE(python.empty());
  const fs::path dir = test::fresh_dir("qwen3_report_python");
  fs::create_directories(dir / "bin");
  const std::string log = (dir / "log").string();
  write_script(dir / "venv-python", "echo env >> '" + log + "'; exec '" + python + "' \"$@\"");
  write_script(dir / "bin" / "python3", "echo path >> '" + log + "'; exec '" + python + "' \"$@\"");
  write_script(dir / "bare-python", "exec '" + python + "' -S \"$@\"");  // without its site packages
  const std::string path = "PATH='" + (dir / "bin").string() + "':\"$PATH\" ";
  const std::string exe = "'" + test::bin_dir() + "/qwen3-report' --help";
  struct Case { std::string env, used, note; };
  for (const Case& c : {Case{"QWEN3_PYTHON='" + (dir / "venv-python").string() + "' ", "env\n", ""},
                        Case{"env -u QWEN3_PYTHON ", "path\n", ""},
                        Case{"QWEN3_PYTHON='" + (dir / "bare-python").string() + "' ", "path\n",
                             "note: not using QWEN3_PYTHON: " + (dir / "bare-python").string() + " (lacks h5py"}}) {
    fs::remove(log);
    const auto r = test::run_command(path + c.env + exe);
    EXPECT_EQ(r.exit_code, 0) << c.env << "\n" << r.output;
    const std::string used = read_text(log);  // one line per run of the wrapper: the probe, then the report
    EXPECT_EQ(used, c.used + c.used) << c.env << "\n" << r.output;
    if (!c.note.empty()) EXPECT_NE(r.output.find(c.note), std::string::npos) << r.output;
  }
}

TEST(Report, HelpListsItsExitCodes) {
  REQUIRE_PLOTTING_STACK();
  const auto r = test::run_program("qwen3-report", "--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"exit codes:", "0  report written", "2  usage", "3  input", "4  output"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
}

TEST(ReportMpirun, FeasibilityRegressionTablesAndPlotsFromAFolderOfRuns) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = runs_folder();
  const fs::path dir = test::fresh_dir("qwen3_report");
  const fs::path out = dir / "report";
  EXPECT_NE(report(dir, "'" + runs.string() + "'").find("5 runs"), std::string::npos);
  const std::string md = read_text(out / "report.md");
  EXPECT_NE(md.find("### T1P1D1"), std::string::npos) << md;
  EXPECT_NE(md.find("### T2P1D1"), std::string::npos) << md;
  // T1P1 row: three finished lengths with their measured peak (resident memory on the CPU), then the failure.
  const auto row = md.find("| tiny | ✔ (");
  ASSERT_NE(row, std::string::npos) << md;
  const std::string line = md.substr(row, md.find('\n', row) - row);
  EXPECT_EQ(std::count(line.begin(), line.end(), '|'), 6) << line;
  EXPECT_NE(line.find(" GiB) | ✖ error"), std::string::npos) << line;  // with its peak where the run recorded one
  EXPECT_NE(md.find("no bucket for sequence length 256"), std::string::npos) << md;
  EXPECT_NE(md.find("| tiny | T1P1D1 | 3 |"), std::string::npos) << md;  // the fit over 32, 64, 128
  // One finished length of T2P1D1: said, not fitted.
  EXPECT_NE(md.find("Too few finished lengths for a fit (three are needed): tiny T2P1D1 (1 finished)."), std::string::npos) << md;
  EXPECT_EQ(md.find("| tiny | T2P1D1 | 1 |"), std::string::npos) << md;
  const std::string fits = read_text(out / "regression.csv");
  EXPECT_EQ(fits.substr(0, fits.find('\n')), "model,layout,points,slope_s_per_token,intercept_s,r2,p_value") << fits;
  EXPECT_NE(fits.find("tiny,T1P1D1,3,"), std::string::npos) << fits;
  EXPECT_EQ(std::count(fits.begin(), fits.end(), '\n'), 2) << fits;
  // Units in the headers; MFU only for GPU runs, so empty for these CPU runs.
  const std::string csv = read_text(out / "runs.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 6) << csv;  // header + 5 runs
  for (const char* col : {"seq_len,", "step_time_s,", "tokens_per_s,", "tflops_per_device,", "mfu_percent,",
                          "peak_mean_gib,", "peak_max_gib,", "planned_peak_gib,"})
    EXPECT_NE(csv.substr(0, csv.find('\n')).find(col), std::string::npos) << col;
  EXPECT_NE(csv.find("tiny,T1P1D1,32,cpu,"), std::string::npos) << csv;
  const std::string ranks = read_text(out / "memory_per_rank.csv");
  EXPECT_NE(ranks.find("tiny,T2P1D1,64,0,"), std::string::npos) << ranks;
  EXPECT_NE(ranks.find("tiny,T2P1D1,64,1,"), std::string::npos) << ranks;
  const std::string feas = read_text(out / "feasibility.csv");
  EXPECT_NE(feas.find("model,layout,seq_len_32,seq_len_64,seq_len_128,seq_len_256\n"), std::string::npos) << feas;
  EXPECT_NE(feas.find("tiny,T1P1D1,ok,ok,ok,error"), std::string::npos) << feas;
  // The plots: step time on linear axes with the failed cell marked with why; memory with each rank's peak and
  // nothing in the legend that is not drawn (no plan, no device capacity on a CPU);
  // no MFU for CPU runs.
  const std::string time = png_description(out / "time_vs_length.png");
  EXPECT_NE(time.find("panel 'tiny': x linear ''"), std::string::npos) << time;
  EXPECT_NE(time.find("y linear 'step time (s)'"), std::string::npos) << time;
  EXPECT_NE(time.find("panel 'cells without a step time' (rows: T1P1D1): x linear 'sequence length (tokens)'"),
            std::string::npos) << time;
  EXPECT_NE(time.find("legend: T1P1D1 | T2P1D1 | linear fit (three lengths or more) | ✖ error"), std::string::npos) << time;
  const std::string memory = png_description(out / "memory.png");
  EXPECT_NE(memory.find("legend: T1P1D1 | T2P1D1 | each rank's peak"), std::string::npos) << memory;
  EXPECT_NE(memory.find("marks: T1P1D1 ✖ error"), std::string::npos) << memory;
  for (const char* absent : {"planned", "what CUDA gives a process"})
    EXPECT_EQ(memory.find(absent), std::string::npos) << absent << "\n" << memory;
  const std::string throughput = png_description(out / "throughput.png");
  EXPECT_NE(throughput.find("panel 'tiny: tokens/s, all ranks'"), std::string::npos) << throughput;
  EXPECT_EQ(throughput.find("MFU"), std::string::npos) << throughput;
  // Speed figures name where their numbers come from, in a short title: the CPU (or card) and the commit; report.md
  // says that the baseline is not in them.
  for (const std::string* d : {&time, &throughput}) {
    const std::string title = d->substr(0, d->find("\nlegend:"));
    EXPECT_NE(title.find("CPU:"), std::string::npos) << *d;
    EXPECT_NE(title.find("commit"), std::string::npos) << *d;
  }
  EXPECT_NE(md.find("Results files hold no Hugging Face baseline"), std::string::npos) << md;
  // The study's own figures: run time in minutes and the peak of the mean memory over ranks against length on a log
  // axis, a panel per layout; run time fitted linearly (three lengths) — a quadratic term needs a fourth.
  const std::string runtime = png_description(out / "study_runtime.png");
  EXPECT_NE(runtime.find("panel 'T1P1D1': x log 'sequence length (tokens)' (ticks: 32 | 64 | 128 | 256), "
                         "y linear 'run time (seconds)'"), std::string::npos) << runtime;
  EXPECT_NE(runtime.find("commit "), std::string::npos) << runtime;
  const std::string study_memory = png_description(out / "study_memory.png");
  EXPECT_NE(study_memory.find("y linear 'peak mean memory per rank (GiB)'"), std::string::npos) << study_memory;
  EXPECT_NE(study_memory.find("memory read as: resident memory, CPU runs"), std::string::npos) << study_memory;
  EXPECT_EQ(study_memory.find("out of memory (at capacity)"), std::string::npos) << "no cell ran out of memory\n"
                                                                                << study_memory;
  const std::string study_fits = read_text(out / "study_fits.csv");
  EXPECT_EQ(study_fits.substr(0, study_fits.find('\n')),
            "model,layout,points,linear_slope_min_per_token,linear_intercept_min,linear_p,quad_c_min_per_token2,"
            "quad_b_min_per_token,quad_a_min,quad_p,supported") << study_fits;
  EXPECT_NE(study_fits.find("tiny,T1P1D1,3,"), std::string::npos) << study_fits;
  EXPECT_NE(study_fits.find(",linear\n"), std::string::npos) << study_fits;
  EXPECT_NE(md.find("## The study's figures"), std::string::npos) << md;
  EXPECT_NE(md.find("| linear (too few for a quadratic) |"), std::string::npos) << md;
}

TEST(ReportMpirun, NewestResultOfACellDecidesFilesMayNameTheirLayoutGpuRunsGetMfu) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = runs_folder();
  const fs::path dir = test::fresh_dir("qwen3_report_newest");
  fs::create_directories(dir / "in");
  // Two results of the cell tiny T1P1D1 32 on the CPU: the one that ended last decides, whatever the files' mtimes.
  fs::copy_file(runs / "t1-32.h5", dir / "in" / "newer.h5");
  set_vlen_string(dir / "in" / "newer.h5", "", "end_time_utc", "2031-01-01T00:00:00Z");
  set_vlen_string(dir / "in" / "newer.h5", "", "status", "oom");
  fs::copy_file(runs / "t1-32.h5", dir / "in" / "older.h5");
  set_vlen_string(dir / "in" / "older.h5", "", "end_time_utc", "2030-01-01T00:00:00Z");
  // A file that names its layout.
  fs::copy_file(runs / "t1-64.h5", dir / "in" / "named.h5");
  set_vlen_string(dir / "in" / "named.h5", "", "layout", "T1P1D1-named");
  // The same run as if on an H200: MFU, the planned peak and the device's memory.
  fs::copy_file(runs / "t1-128.h5", dir / "in" / "gpu.h5");
  set_vlen_string(dir / "in" / "gpu.h5", "config", "device", "cuda");
  {
    const h5::Handle f = h5::open_rw((dir / "in" / "gpu.h5").string());
    h5::write_attr(f.get(), "device_names", std::vector<std::string>{"NVIDIA H200"});
    h5::write_attr(f.get(), "plan_peak_bytes", std::int64_t{3} << 29);  // 1.5 GiB
    h5::write_attr(f.get(), "device_total_bytes", std::int64_t{143150} << 20);  // what a CUDA run records
  }
  // A GPU cell that ran out of memory: the study's memory figure draws it at the device's capacity.
  fs::copy_file(runs / "t1-64.h5", dir / "in" / "gpu-oom.h5");
  set_vlen_string(dir / "in" / "gpu-oom.h5", "config", "device", "cuda");
  set_vlen_string(dir / "in" / "gpu-oom.h5", "", "status", "oom");
  {
    const h5::Handle f = h5::open_rw((dir / "in" / "gpu-oom.h5").string());
    h5::write_attr(f.get(), "device_total_bytes", std::int64_t{143150} << 20);
  }
  const std::string printed = report(dir, "'" + (dir / "in").string() + "'");
  EXPECT_NE(printed.find("4 runs (1 older set aside)"), std::string::npos) << printed;
  const fs::path out = dir / "report";
  const std::string md = read_text(out / "report.md");
  EXPECT_NE(md.find("1 older result of a cell that has a newer one set aside (the newest decides): " +
                    (dir / "in" / "older.h5").string()), std::string::npos) << md;
  const std::string feas = read_text(out / "feasibility.csv");
  EXPECT_NE(feas.find("tiny (cpu),T1P1D1,oom,,\n"), std::string::npos) << feas;  // the newer file's status
  EXPECT_NE(feas.find("tiny (cpu),T1P1D1-named,,ok,\n"), std::string::npos) << feas;
  EXPECT_NE(feas.find("tiny (cuda),T1P1D1,,oom,ok\n"), std::string::npos) << feas;
  const std::string csv = read_text(out / "runs.csv");
  const std::string gpu = "tiny (cuda),T1P1D1,128,cuda,NVIDIA H200,ok,", cpu = "tiny (cpu),T1P1D1-named,64,cpu,";
  EXPECT_NE(csv_field(csv, gpu, "mfu_percent"), "") << csv;  // MFU for the GPU run only
  EXPECT_EQ(csv_field(csv, cpu, "mfu_percent"), "") << csv;
  EXPECT_EQ(csv_field(csv, gpu, "planned_peak_gib"), "1.5") << csv;
  EXPECT_EQ(csv_field(csv, gpu, "capacity_gib").substr(0, 6), "139.79") << csv;  // the file's device_total_bytes
  EXPECT_EQ(csv_field(csv, cpu, "capacity_gib"), "") << csv;
  const std::string memory = png_description(out / "memory.png");
  for (const char* drawn : {"planned peak (the rank that needs most)", "NVIDIA H200: 139.8 GiB (what CUDA gives a process)"})
    EXPECT_NE(memory.find(drawn), std::string::npos) << drawn << "\n" << memory;
  const std::string study_memory = png_description(out / "study_memory.png");
  EXPECT_NE(study_memory.find("out of memory (at capacity)"), std::string::npos) << study_memory;
  EXPECT_NE(study_memory.find("memory read as: allocator's bytes, GPU runs and resident memory, CPU runs"),
            std::string::npos) << study_memory;
  const std::string throughput = png_description(out / "throughput.png");
  EXPECT_NE(throughput.find("panel 'tiny (cuda): MFU (%)'"), std::string::npos) << throughput;
  EXPECT_EQ(throughput.find("panel 'tiny (cpu): MFU"), std::string::npos) << throughput;
}

TEST(ReportMpirun, SweepManifestShowsRefusedAndNotRunCells) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = runs_folder();
  const fs::path dir = test::fresh_dir("qwen3_report_sweep");
  fs::create_directories(dir / "sweep" / "results");
  fs::copy_file(runs / "t1-32.h5", dir / "sweep" / "results" / "tiny-L32-T1P1D1.h5");
  fs::copy_file(runs / "t1-64.h5", dir / "sweep" / "results" / "tiny-L64-T1P1D1.h5");
  // plan: the sweep's plan of a cell ("" none; else `"planned_peak_bytes": N, "plan_fits": false`).
  auto cell = [](int seq, int cp, const std::string& refused, const std::string& plan = "") {
    const std::string layout = cp > 1 ? "T1P1C2D1" : "T1P1D1";
    const std::string name = "tiny-L" + std::to_string(seq) + "-" + layout;
    return "{\"name\": \"" + name + "\", \"model\": \"tiny\", \"seq\": " + std::to_string(seq) + ", \"layout\": \"" + layout +
           "\", \"tp\": 1, \"pp\": 1, \"cp\": " + std::to_string(cp) + ", \"dp\": 1, \"results\": \"results/" + name +
           ".h5\", \"refused\": " + (refused.empty() ? "null" : "\"" + refused + "\"") + (plan.empty() ? "" : ", " + plan) +
           "}";
  };
  std::ofstream(dir / "sweep" / "cells.json")
      << "{\"format\": \"qwen3-sweep-cells\", \"version\": 1, \"sweep\": \"tiny-test\", \"cells\": [" << cell(32, 1, "")
      << ", " << cell(64, 1, "") << ", " << cell(128, 1, "") << ", "
      << cell(30, 2, "--cp 2: --seq-len 30 must divide by 2 × cp") << ", "
      << cell(256, 1, "", "\"planned_peak_bytes\": 96636764160, \"plan_fits\": false") << "]}\n";
  // The sweep's folder, or its results folder (cells.json in the parent): the same report.
  for (const fs::path& in : {dir / "sweep", dir / "sweep" / "results"}) {
    EXPECT_NE(report(dir, "'" + in.string() + "'").find("2 runs, 3 cells without results"), std::string::npos) << in;
    const fs::path out = dir / "report";
    const std::string md = read_text(out / "report.md");
    EXPECT_NE(md.find("Sweep manifest: 'tiny-test' (" + (dir / "sweep" / "cells.json").string() +
                      ", 5 cells); 1 cell refused by the sweep, 2 not run yet."), std::string::npos) << md;
    EXPECT_NE(md.find("### T1P1C2D1\n\n| model | 30 | 32 | 64 | 128 | 256 |\n|---|---|---|---|---|---|\n| tiny | ✖ refused |  |  |  |  |"),
              std::string::npos) << md;
    EXPECT_NE(md.find("| tiny |  | ✔ ("), std::string::npos) << md;
    EXPECT_NE(md.find(" GiB) | not run | not run (plan 90.0 GiB with the runtime reserve: does not fit) |"), std::string::npos) << md;
    EXPECT_NE(md.find("- tiny T1P1C2D1 30: refused — --cp 2: --seq-len 30 must divide by 2 × cp"), std::string::npos) << md;
    // Two finished lengths: no regression table, a sentence.
    EXPECT_NE(md.find("No fit (three are needed): tiny T1P1D1 (2 finished)."), std::string::npos) << md;
    EXPECT_EQ(md.find("| slope (s per token) |"), std::string::npos) << md;
    const std::string feas = read_text(out / "feasibility.csv");
    EXPECT_NE(feas.find("tiny,T1P1C2D1,refused,,,,\n"), std::string::npos) << feas;
    EXPECT_NE(feas.find("tiny,T1P1D1,,ok,ok,not run,not run\n"), std::string::npos) << feas;
    const std::string time = png_description(out / "time_vs_length.png");
    EXPECT_NE(time.find("panel 'cells without a step time' (rows: T1P1C2D1 | T1P1D1)"), std::string::npos) << time;
    EXPECT_NE(time.find("not run (no results file) | ✖ refused"), std::string::npos) << time;
    const std::string memory = png_description(out / "memory.png");
    EXPECT_NE(memory.find("marks: T1P1D1 not run | T1P1C2D1 ✖ refused | T1P1D1 not run: plan does not fit"),
              std::string::npos) << memory;
    EXPECT_NE(memory.find("planned peak beyond the axis"), std::string::npos) << memory;  // the unrun cell's 90 GiB
  }
}

TEST(Report, BadInputEndsWithOneClearMessage) {
  REQUIRE_PLOTTING_STACK();
  const fs::path dir = test::fresh_dir("qwen3_report_bad");
  fs::create_directories(dir / "empty");
  fs::create_directories(dir / "manifest");
  std::ofstream(dir / "junk.h5") << "not hdf5";
  std::ofstream(dir / "manifest" / "cells.json") << "{\"format\": \"qwen3-sweep-cells\", \"version\": 9, \"cells\": []}";
  struct Case { std::string args; int code; std::string message; };
  for (const Case& c : {Case{"'" + (dir / "missing").string() + "' --out x", 2, "does not exist"},
                        Case{"'" + (dir / "empty").string() + "' --out '" + (dir / "o").string() + "'", 3,
                             "no qwen3-pretrain results files under"},
                        Case{"'" + (dir / "junk.h5").string() + "' --out '" + (dir / "o").string() + "'", 3,
                             "is not a readable HDF5 file"},
                        Case{"'" + (dir / "manifest").string() + "' --out '" + (dir / "o").string() + "'", 3,
                             "cells.json' is not a qwen3-sweep-cells version 1 manifest"},
                        Case{"'" + (dir / "empty").string() + "'", 2, "--out"}}) {
    const auto r = test::run_program("qwen3-report", c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

namespace {
// Two finished single-rank runs (tiny at 32 and 64 tokens, one CPU rank, no mpirun) and a third at 128, made once
// per test process: the inputs the issue-30 tests below damage, rename and edit.
const fs::path& small_runs() {
  static const fs::path dir = [] {
    const fs::path d = test::fresh_dir("qwen3_report_small_" + std::to_string(::getpid()));
    const std::string data = (d / "data.h5").string();
    write_synthetic_dataset(data, 512, {32, 64, 128}, 8, 21, false);
    for (int L : {32, 64, 128}) {
      const auto r = test::run_program("qwen3-pretrain", "--model tiny --data '" + data + "' --global-batch 2 --steps 2 "
                                                         "--seq-len " + std::to_string(L) + " --out '" +
                                                         (d / ("t1-" + std::to_string(L) + ".h5")).string() + "'");
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
    return d;
  }();
  return dir;
}

// A copy of a results file without its /config group, failed as a run that stopped before recording it
// (--device cuda on a host without a GPU) leaves it.
void copy_without_config(const fs::path& from, const fs::path& to, const std::string& message) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  const h5::Handle f = h5::open_rw(to.string());
  ASSERT_GE(H5Ldelete(f.get(), "config", H5P_DEFAULT), 0);
  h5::write_attr(f.get(), "status", std::string("error"));
  h5::write_attr(f.get(), "error_message", message);
}

// The first `bytes` bytes of a file: what a reader sees of a file cut short (a full disk, a copy interrupted).
void truncated_copy(const fs::path& from, const fs::path& to, std::size_t bytes) {
  const std::string all = read_text(from);
  std::ofstream(to, std::ios::binary) << all.substr(0, std::min(bytes, all.size()));
}

// The width in pixels of a PNG (its IHDR chunk).
std::uint32_t png_width(const fs::path& png) {
  const std::string b = read_text(png);
  std::uint32_t w = 0;
  for (int i = 16; i < 20; ++i) w = (w << 8) | static_cast<unsigned char>(b[i]);
  return w;
}

// One line of a PNG's Description that starts with `prefix` ("" when none does).
std::string description_line(const std::string& description, const std::string& prefix) {
  const auto at = description.find("\n" + prefix);
  if (at == std::string::npos) return description.rfind(prefix, 0) == 0 ? description.substr(0, description.find('\n')) : "";
  return description.substr(at + 1, description.find('\n', at + 1) - at - 1);
}
}  // namespace

// Issue 30, item 2: one damaged file — garbage, truncated, another format version, no /config and no sweep cell to
// name it — is listed as unreadable with why (stdout's count, stderr, report.md); every other file is reported, exit 0.
// Only when nothing can be read is it exit 3, naming each file and why.
TEST(Report, DamagedFilesAreListedAsUnreadableAndEveryOtherFileIsReported) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = small_runs();
  const fs::path dir = test::fresh_dir("qwen3_report_damaged");
  const fs::path in = dir / "in";
  fs::create_directories(in);
  fs::copy_file(runs / "t1-32.h5", in / "good-32.h5");
  fs::copy_file(runs / "t1-64.h5", in / "good-64.h5");
  std::ofstream(in / "garbage.h5", std::ios::binary) << std::string(4096, '\x5a') << "not hdf5 at all";
  truncated_copy(runs / "t1-128.h5", in / "truncated.h5", fs::file_size(runs / "t1-128.h5") / 2);
  copy_without_config(runs / "t1-128.h5", in / "noconfig.h5", "--device cuda: no usable GPU on this host");
  fs::copy_file(runs / "t1-128.h5", in / "version2.h5");
  {
    const h5::Handle f = h5::open_rw((in / "version2.h5").string());
    H5Adelete(f.get(), "format_version");
    h5::write_attr(f.get(), "format_version", std::int64_t{2});
  }
  // A sweep cell's .partial cut short, as a run killed mid-write leaves it: that cell, incomplete.
  truncated_copy(runs / "t1-128.h5", in / "tiny-L128-T2P1D1.h5.partial", 2000);
  const auto r = test::run_program("qwen3-report", "'" + in.string() + "' --out '" + (dir / "report").string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("Traceback"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3 runs, 4 unreadable files (listed in report.md)"), std::string::npos) << r.output;
  struct Bad { std::string file, why; };
  const std::vector<Bad> bad = {{"garbage.h5", "not a readable HDF5 file"},
                                {"truncated.h5", "not a readable HDF5 file"},
                                {"noconfig.h5", "no /config group, so its model, length and layout are unknown"},
                                {"version2.h5", "results format_version 2; this report reads version 1"}};
  const std::string md = read_text(dir / "report" / "report.md");
  EXPECT_NE(md.find("## Unreadable files (4)"), std::string::npos) << md;
  for (const Bad& b : bad) {
    EXPECT_NE(r.output.find("qwen3-report: unreadable: " + (in / b.file).string() + ": " + b.why), std::string::npos)
        << b.file << "\n" << r.output;
    EXPECT_NE(md.find("- `" + (in / b.file).string() + "`: " + b.why), std::string::npos) << b.file << "\n" << md;
  }
  EXPECT_NE(md.find("it says status error: --device cuda: no usable GPU on this host"), std::string::npos) << md;
  const std::string feas = read_text(dir / "report" / "feasibility.csv");
  EXPECT_NE(feas.find("tiny,T1P1D1,ok,ok,\n"), std::string::npos) << feas;
  EXPECT_NE(feas.find("tiny,T2P1D1,,,incomplete\n"), std::string::npos) << feas;
  EXPECT_NE(md.find("tiny T2P1D1 128: incomplete — only a .partial file, which cannot be read now"), std::string::npos) << md;

  // Nothing readable: exit 3, every file named with why.
  fs::remove(in / "good-32.h5");
  fs::remove(in / "good-64.h5");
  fs::remove(in / "tiny-L128-T2P1D1.h5.partial");
  const auto none = test::run_program("qwen3-report", "'" + in.string() + "' --out '" + (dir / "none").string() + "'");
  EXPECT_EQ(none.exit_code, 3) << none.output;
  EXPECT_EQ(none.output.find("Traceback"), std::string::npos) << none.output;
  EXPECT_NE(none.output.find("qwen3-report: error: no qwen3-pretrain results files under"), std::string::npos) << none.output;
  for (const Bad& b : bad) EXPECT_NE(none.output.find((in / b.file).string()), std::string::npos) << b.file << none.output;
}

// Issue 30, item 2: the .partial file of a run still running (written by it as the report reads it) is reported as
// that run, incomplete, or listed as unreadable — never a traceback; the other files are reported.
TEST(Report, APartialFileOfARunStillRunningNeverStopsTheReport) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = small_runs();
  const fs::path dir = test::fresh_dir("qwen3_report_running");
  fs::create_directories(dir / "in");
  fs::copy_file(runs / "t1-32.h5", dir / "in" / "done.h5");
  const fs::path pid_file = dir / "pid", partial = dir / "in" / "running.h5.partial";
  auto r = test::run_command("'" + test::bin_dir() + "/qwen3-pretrain' --model tiny --data '" + (runs / "data.h5").string() +
                             "' --seq-len 64 --global-batch 2 --steps 1000000 --memory-interval-ms 5 --out '" +
                             (dir / "in" / "running.h5").string() + "' > '" + (dir / "log").string() +
                             "' 2>&1 & echo $! > '" + pid_file.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string pid = read_text(pid_file).substr(0, read_text(pid_file).find('\n'));
  struct Kill {  // the run this test started ends with it
    std::string pid;
    ~Kill() { test::run_command("kill " + pid + " 2>/dev/null; true"); }
  } kill{pid};
  for (int i = 0; i < 1200 && !(fs::exists(partial) && read_text(dir / "log").find("step 2/") != std::string::npos); ++i)
    ::usleep(100000);  // until it has written steps (at most 2 minutes on a loaded machine)
  ASSERT_TRUE(fs::exists(partial)) << read_text(dir / "log");
  for (int round = 0; round < 2; ++round) {
    r = test::run_program("qwen3-report", "'" + (dir / "in").string() + "' --out '" + (dir / "report").string() + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("Traceback"), std::string::npos) << r.output;
    const std::string feas = read_text(dir / "report" / "feasibility.csv");
    EXPECT_NE(feas.find("tiny,T1P1D1,ok"), std::string::npos) << feas;
    // Read (incomplete: only a .partial file) or listed with why: either way said.
    EXPECT_TRUE(feas.find("incomplete") != std::string::npos ||
                r.output.find("unreadable: " + partial.string()) != std::string::npos) << feas << r.output;
  }
}

// Issue 30, item 6: in a sweep whose cells failed before recording /config (a `device = cuda` sweep on a host with no
// GPU) every cell is its own row, named by the sweep's manifest (or its file name), with its reason; a cell that ended
// without any results file is named with its exit code and the log's error. No phantom cell (model ?, length 0).
TEST(Report, FailedSweepCellsWithoutConfigOrResultsAreEachTheirOwnCell) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = small_runs();
  const fs::path dir = test::fresh_dir("qwen3_report_no_config");
  const fs::path sweep = dir / "sweep";
  fs::create_directories(sweep / "results");
  fs::create_directories(sweep / "logs");
  const std::string why = "--device cuda: no usable GPU on this host";
  copy_without_config(runs / "t1-32.h5", sweep / "results" / "tiny-L32-T1P1D1.h5", why);
  copy_without_config(runs / "t1-64.h5", sweep / "results" / "tiny-L64-T1P1D1.h5", why);
  // Not in the manifest, but named as the sweep names a cell's file.
  copy_without_config(runs / "t1-64.h5", sweep / "results" / "tiny-L64-T1P2D1.h5", why);
  std::ofstream(sweep / "logs" / "tiny-L128-T1P1D1.log")
      << "qwen3-pretrain: error: --device cuda: no usable GPU\nqwen3-sweep: cell ended with exit code 2\n";
  std::string cells;
  for (int seq : {32, 64, 128, 256}) {
    const std::string name = "tiny-L" + std::to_string(seq) + "-T1P1D1";
    cells += std::string(cells.empty() ? "" : ", ") + "{\"name\": \"" + name + "\", \"model\": \"tiny\", \"seq\": " +
             std::to_string(seq) + ", \"layout\": \"T1P1D1\", \"tp\": 1, \"pp\": 1, \"cp\": 1, \"dp\": 1, "
             "\"device\": \"cuda\", \"results\": \"results/" + name + ".h5\", \"refused\": null}";
  }
  std::ofstream(sweep / "cells.json") << "{\"format\": \"qwen3-sweep-cells\", \"version\": 1, \"sweep\": \"gpu\", "
                                         "\"cells\": [" << cells << "]}\n";
  const std::string printed = report(dir, "'" + sweep.string() + "'");
  EXPECT_NE(printed.find("3 runs, 2 cells without results"), std::string::npos) << printed;
  const std::string feas = read_text(dir / "report" / "feasibility.csv");
  EXPECT_EQ(feas, "model,layout,seq_len_32,seq_len_64,seq_len_128,seq_len_256\n"
                  "tiny,T1P1D1,error,error,error,not run\ntiny,T1P2D1,,error,,\n") << feas;
  const std::string md = read_text(dir / "report" / "report.md");
  for (const std::string cell : {"tiny T1P1D1 32", "tiny T1P1D1 64", "tiny T1P2D1 64"})
    EXPECT_NE(md.find("- " + cell + ": error — " + why + " [no /config in the file: the cell is named by the sweep]"),
              std::string::npos) << cell << "\n" << md;
  EXPECT_NE(md.find("- tiny T1P1D1 128: error — no results file; exit code 2; logs/tiny-L128-T1P1D1.log: "
                    "qwen3-pretrain: error: --device cuda: no usable GPU"), std::string::npos) << md;
  const std::string csv = read_text(dir / "report" / "runs.csv");
  EXPECT_NE(csv.find("tiny,T1P1D1,32,cuda,"), std::string::npos) << "the manifest's device\n" << csv;
  for (const std::string& text : {feas, md, csv}) EXPECT_EQ(text.find("?,"), std::string::npos) << text;
  EXPECT_EQ(md.find("| ? |"), std::string::npos) << md;
}

// Issue 30, item 7: a run that diverged is its own status in every table — "diverged at step N", with the run's
// message — and in every figure (neither ok nor failed).
TEST(Report, ADivergedRunIsShownAsDivergedWithItsStep) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = small_runs();
  const fs::path dir = test::fresh_dir("qwen3_report_diverged");
  fs::create_directories(dir / "in");
  fs::copy_file(runs / "t1-32.h5", dir / "in" / "a.h5");
  fs::copy_file(runs / "t1-64.h5", dir / "in" / "b.h5");
  {
    const h5::Handle f = h5::open_rw((dir / "in" / "b.h5").string());
    h5::write_attr(f.get(), "status", std::string("diverged"));
    h5::write_attr(f.get(), "diverged_at_step", std::int64_t{2});
    h5::write_attr(f.get(), "error_message", std::string("the loss is not finite (nan) at step 2"));
  }
  report(dir, "'" + (dir / "in").string() + "'");
  const fs::path out = dir / "report";
  const std::string md = read_text(out / "report.md");
  EXPECT_NE(md.find("| tiny | ✔ (0.2 GiB) | ✖ diverged at step 2 ("), std::string::npos) << md;
  EXPECT_NE(md.find("- tiny T1P1D1 64: diverged at step 2 — the loss is not finite (nan) at step 2"), std::string::npos) << md;
  EXPECT_NE(read_text(out / "feasibility.csv").find("tiny,T1P1D1,ok,diverged\n"), std::string::npos);
  EXPECT_NE(png_description(out / "time_vs_length.png").find("✖ diverged"), std::string::npos);
  EXPECT_NE(png_description(out / "study_runtime.png").find("✖ diverged (at the foot)"), std::string::npos);
  EXPECT_NE(png_description(out / "study_memory.png").find("✖ diverged (at the foot)"), std::string::npos);
}

// Issue 30, item 11: the study's figures label every length, share one y scale across their panels, give run time in
// a unit that suits it (seconds for these short runs), and mark the cells that did not finish (failed, refused);
// the step-time and throughput figures have a title that does not widen the canvas beyond their panels, and layouts
// whose points coincide are told apart by their markers.
TEST(Report, FiguresLabelEveryLengthShareAScaleMarkUnfinishedCellsAndKeepTheirWidth) {
  REQUIRE_PLOTTING_STACK();
  const fs::path runs = small_runs();
  const fs::path dir = test::fresh_dir("qwen3_report_figures");
  const fs::path sweep = dir / "sweep";
  fs::create_directories(sweep / "results");
  // Two layouts with the same runs (so their points coincide), one length failed, one refused.
  for (const std::string layout : {"T1P1D1", "T2P1D1"})
    for (int L : {32, 64, 128}) {
      const fs::path to = sweep / "results" / ("tiny-L" + std::to_string(L) + "-" + layout + ".h5");
      fs::copy_file(runs / ("t1-" + std::to_string(L) + ".h5"), to);
      set_vlen_string(to, "", "layout", layout);
    }
  copy_without_config(runs / "t1-32.h5", sweep / "results" / "tiny-L256-T1P1D1.h5", "it broke");
  std::ofstream(sweep / "cells.json")
      << "{\"format\": \"qwen3-sweep-cells\", \"version\": 1, \"sweep\": \"f\", \"cells\": [{\"name\": "
         "\"tiny-L256-T2P1D1\", \"model\": \"tiny\", \"seq\": 256, \"layout\": \"T2P1D1\", \"tp\": 2, \"pp\": 1, "
         "\"cp\": 1, \"dp\": 1, \"results\": \"results/tiny-L256-T2P1D1.h5\", \"refused\": \"too long\"}]}\n";
  report(dir, "'" + sweep.string() + "'");
  const fs::path out = dir / "report";
  for (const char* png : {"study_runtime.png", "study_memory.png"}) {
    const std::string d = png_description(out / png);
    const std::string a = description_line(d, "panel 'T1P1D1'"), b = description_line(d, "panel 'T2P1D1'");
    for (const std::string* p : {&a, &b}) EXPECT_NE(p->find("(ticks: 32 | 64 | 128 | 256)"), std::string::npos) << png << "\n" << d;
    // One y scale: the same range in both panels.
    EXPECT_EQ(a.substr(a.rfind("' (") + 3, a.find(");", a.rfind("' (")) - a.rfind("' (") - 3),
              b.substr(b.rfind("' (") + 3, b.find(");", b.rfind("' (")) - b.rfind("' (") - 3)) << png << "\n" << d;
    for (const char* mark : {"✖ error (at the foot)", "✖ refused (at the foot)"})
      EXPECT_NE(d.find(mark), std::string::npos) << png << " " << mark << "\n" << d;
  }
  EXPECT_NE(png_description(out / "study_runtime.png").find("y linear 'run time (seconds)'"), std::string::npos)
      << png_description(out / "study_runtime.png");
  for (const char* png : {"time_vs_length.png", "throughput.png"}) {
    // One panel of 5 inches at 120 dpi: 600 pixels and the legend, not a canvas widened by its title.
    EXPECT_LT(png_width(out / png), 700u) << png;
    const std::string d = png_description(out / png);
    EXPECT_NE(d.find("markers: T1P1D1 o | T2P1D1 s"), std::string::npos) << png << "\n" << d;
  }
}
