// The results file whatever ends the run (docs/results.md): a rank killed mid-run leaves every rank's memory trace and
// the timings up to its last step; a host out-of-memory run records what failed; strings read back as str in h5py
// and integer quantities as integers, while older files (fixed-length strings, float ranks) still read.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "config/model_config.h"
#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "io/results.h"
#include "killed_rank.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

// Each rank's trace has at least `min_rows` samples [time_s, bytes] with time increasing and bytes > 0, and
// peak_bytes[r] is its largest.
void expect_traces(hid_t f, int ranks, std::int64_t min_rows) {
  const auto peaks = h5::read_f64(f, "memory/peak_bytes");
  ASSERT_EQ(static_cast<int>(peaks.size()), ranks);
  for (int r = 0; r < ranks; ++r) {
    std::vector<std::int64_t> shape;
    const auto trace = h5::read_f64(f, "memory/trace/rank_" + std::to_string(r), &shape);
    ASSERT_EQ(shape.size(), 2u);
    EXPECT_GE(shape[0], min_rows) << "rank " << r;
    double peak = 0;
    for (std::int64_t i = 0; i < shape[0]; ++i) {
      EXPECT_GT(trace[2 * i + 1], 0) << "rank " << r << " sample " << i;
      if (i > 0) EXPECT_GE(trace[2 * i], trace[2 * i - 2]) << "rank " << r << " sample " << i;
      peak = std::max(peak, trace[2 * i + 1]);
    }
    EXPECT_EQ(peaks[r], peak) << "rank " << r;
  }
}

// A tiny model's config with another vocabulary size: its embedding (and output projection, logits) scale with it.
std::string model_config(std::int64_t vocab_size) {
  return "name = vocab-" + std::to_string(vocab_size) + "\nvocab_size = " + std::to_string(vocab_size) +
         "\nhidden_size = 64\nintermediate_size = 192\nnum_hidden_layers = 4\nnum_attention_heads = 8\n"
         "num_key_value_heads = 4\nhead_dim = 16\nrope_theta = 1000000\nrms_norm_eps = 1e-6\ntie_word_embeddings = true\n";
}

// Far above what a process of ours needs to start (Open MPI, CUDA's libraries mapped: up to ~2.5 GB on a GPU host),
// far below what the out-of-memory tests ask for in one allocation.
constexpr long kVirtualLimitKib = 6'000'000;

// A fixture with a small dataset of length-64 and length-512 documents in its own folder.
class ResultsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_dir("qwen3_results_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    data_ = (dir_ / "data.h5").string();
    write_synthetic_dataset(data_, 512, {64, 512}, 64, 5, false);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // qwen3-pretrain in a shell whose virtual memory is limited to `kib` (ulimit -v), one OpenMP thread.
  test::CliResult pretrain_limited(long kib, const std::string& args) {
    return test::run_command("ulimit -v " + std::to_string(kib) + " && OMP_NUM_THREADS=1 '" + test::bin_dir() +
                             "/qwen3-pretrain' --data '" + data_ + "' " + args);
  }
  fs::path dir_;
  std::string data_;
};

}  // namespace

// kill -9 of rank 1 during a tp 2 run: rank 0 finishes the file (status error), and it holds both ranks' memory
// traces and the timings, flushed as the steps went.
TEST(ResultsKilledRunMpirun, KeepsEveryRanksMemoryTraceAndTheTimings) {
  const auto k = test::kill_rank_during_run("cpu", 2, "qwen3_results_killed_rank");
  ASSERT_TRUE(k.mpirun_ended) << k.output;
  ASSERT_EQ(k.status, "error") << k.log;
  h5::Handle f = h5::open_read((fs::path(::testing::TempDir()) / "qwen3_results_killed_rank" / "run.h5").string(), "results");
  const auto steps = h5::read_attr_int(f.get(), "steps_completed");
  EXPECT_GE(steps, 1);
  EXPECT_EQ(static_cast<std::int64_t>(h5::read_f64(f.get(), "steps/loss").size()), steps);
  expect_traces(f.get(), 2, 2);
  h5::Handle t = h5::open_group(f.get(), "timings");
  const double init_s = h5::read_attr_double(t.get(), "init_s"), first = h5::read_attr_double(t.get(), "first_step_s");
  const double total = h5::read_attr_double(t.get(), "total_s");
  EXPECT_GT(init_s, 0);
  EXPECT_GT(first, 0);
  EXPECT_GT(total, init_s + first);
  EXPECT_EQ(h5::read_attr_strings(f.get(), "device_names").size(), 2u);
}

// A host out-of-memory failure while the engine is made (a 40M-word vocabulary's embedding is 10 GB, under a 6 GB
// limit): status oom, exit 5, category host, the failed request's size, the resident bytes, the trace so far. No
// engine: no device_names.
TEST_F(ResultsFile, HostOutOfMemoryWhileInitialisingRecordsWhatFailed) {
  std::ofstream(path("huge.ini")) << model_config(40'000'000);
  const auto out = path("oom.h5");
  const auto r = pretrain_limited(kVirtualLimitKib, "--model-config '" + path("huge.ini") +
                                                        "' --seq-len 64 --global-batch 1 --steps 1 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("out of host memory"), std::string::npos) << r.output;
  ASSERT_TRUE(fs::exists(out)) << r.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "oom");
  EXPECT_EQ(h5::read_attr_string(f.get(), "oom_category"), "host");
  EXPECT_GE(h5::read_attr_int(f.get(), "oom_requested_bytes"), 40'000'000LL * 64 * 4);  // the embedding, float32
  EXPECT_GT(h5::read_attr_int(f.get(), "oom_in_use_bytes"), 1 << 20);                   // a process's resident memory
  EXPECT_FALSE(h5::has_attr(f.get(), "device_names"));
  expect_traces(f.get(), 1, 2);  // the sample at the start and the one as it failed
  EXPECT_TRUE(h5::exists(f.get(), "timings"));
  const auto summary = test::run_program("qwen3-results", "'" + out + "'");
  EXPECT_EQ(summary.exit_code, 1) << summary.output;  // not ok
  EXPECT_NE(summary.output.find("status        oom: out of host memory"), std::string::npos) << summary.output;
  EXPECT_NE(summary.output.find("out of memory allocating host ("), std::string::npos) << summary.output;
}

// A host out-of-memory failure in the first step (the logits of 32 sequences of 512 tokens over 131,072 words need
// 16 GiB at once, under a 6 GB limit): the engine exists, so device_names is there, and the trace covers
// initialisation.
TEST_F(ResultsFile, HostOutOfMemoryInAStepRecordsDeviceNamesAndTheTrace) {
  std::ofstream(path("wide.ini")) << model_config(131'072);
  const auto out = path("oom.h5");
  const auto r = pretrain_limited(kVirtualLimitKib, "--model-config '" + path("wide.ini") + "' --seq-len 512 --global-batch 32 "
                                                    "--micro-batch 32 --steps 1 --memory-interval-ms 10 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  ASSERT_TRUE(fs::exists(out)) << r.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "oom");
  EXPECT_EQ(h5::read_attr_string(f.get(), "oom_category"), "host");
  EXPECT_GE(h5::read_attr_int(f.get(), "oom_requested_bytes"), 32LL * 512 * 131'072 * 4);  // the logits
  EXPECT_GT(h5::read_attr_int(f.get(), "oom_in_use_bytes"), 1 << 20);
  const auto devices = h5::read_attr_strings(f.get(), "device_names");
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].rfind("CPU", 0), 0u) << devices[0];
  expect_traces(f.get(), 1, 3);
  h5::Handle t = h5::open_group(f.get(), "timings");
  EXPECT_GT(h5::read_attr_double(t.get(), "init_s"), 0);
  EXPECT_GE(h5::read_attr_double(t.get(), "total_s"), h5::read_attr_double(t.get(), "init_s"));
}

// h5py (Debian's /usr/bin/python3) reads the string attributes as str and the rank coordinates as integers.
TEST_F(ResultsFile, H5pyReadsStringsAsStrAndRanksAsIntegers) {
  QWEN3_REQUIRE_OR_SKIP(test::run_command("/usr/bin/python3 -c 'import h5py'").exit_code == 0,
                        "/usr/bin/python3 cannot import h5py (apt-get install python3-h5py)");
  const auto out = path("run.h5");
  const auto r = test::run_program("qwen3-pretrain", "--data '" + data_ + "' --seq-len 64 --global-batch 2 --steps 2 --out '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string script = path("check.py");
  std::ofstream(script) << "import sys, h5py\n"
                           "f = h5py.File(sys.argv[1], 'r')\n"
                           "assert f.attrs['status'] == 'ok', repr(f.attrs['status'])\n"
                           "assert f.attrs['format'] == 'qwen3-pretrain-results', repr(f.attrs['format'])\n"
                           "assert f.attrs['error_message'] == '', repr(f.attrs['error_message'])\n"
                           "assert isinstance(f.attrs['hostnames'][0], str), repr(f.attrs['hostnames'])\n"
                           "assert f.attrs['device_names'][0].startswith('CPU'), repr(f.attrs['device_names'])\n"
                           "assert f['config'].attrs['seq_len'] == '64', repr(f['config'].attrs['seq_len'])\n"
                           "for k in ('ranks/tp_rank', 'ranks/dp_rank', 'ranks/pp_stage', 'stages/first_layer', "
                           "'stages/end_layer', 'memory/peak_bytes'):\n"
                           "    assert f[k].dtype.kind == 'i', (k, f[k].dtype)\n"
                           "assert list(f['stages/end_layer'][:]) == [4], f['stages/end_layer'][:]\n"
                           "print('h5py ok')\n";
  const auto py = test::run_command("/usr/bin/python3 '" + script + "' '" + out + "'");
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("h5py ok"), std::string::npos) << py.output;
}

namespace {

// Rewrites a string attribute as an older writer did: fixed-length, null-padded ASCII (one string or a 1-D array).
void make_fixed_length(hid_t obj, const std::string& name) {
  h5::Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  h5::Handle space(H5Aget_space(a.get()));
  const bool scalar = H5Sget_simple_extent_type(space.get()) == H5S_SCALAR;
  a.reset();
  const auto values = scalar ? std::vector<std::string>{h5::read_attr_string(obj, name)} : h5::read_attr_strings(obj, name);
  std::size_t width = 1;
  for (const auto& v : values) width = std::max(width, v.size());
  std::string buf(width * std::max<std::size_t>(1, values.size()), '\0');
  for (std::size_t i = 0; i < values.size(); ++i) buf.replace(i * width, values[i].size(), values[i]);
  ASSERT_GE(H5Adelete(obj, name.c_str()), 0);
  h5::Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), width);
  if (!scalar) H5Tset_strpad(type.get(), H5T_STR_NULLPAD);  // the older writer's arrays (hostnames, device_names)
  const hsize_t n = values.size();
  h5::Handle fspace(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr));
  h5::Handle created(H5Acreate2(obj, name.c_str(), type.get(), fspace.get(), H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_GE(H5Awrite(created.get(), type.get(), buf.data()), 0);
}

// Every string attribute of obj made fixed-length.
void make_all_fixed_length(hid_t obj) {
  H5O_info_t info;
  ASSERT_GE(H5Oget_info(obj, &info), 0);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    char name[256];
    H5Aget_name_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
    h5::Handle a(H5Aopen(obj, name, H5P_DEFAULT));
    h5::Handle type(H5Aget_type(a.get()));
    if (H5Tget_class(type.get()) == H5T_STRING) names.emplace_back(name);
  }
  for (const auto& n : names) make_fixed_length(obj, n);
}

}  // namespace

// A file as older versions wrote it (fixed-length strings, float64 rank coordinates and stage layers) still reads:
// qwen3-results summarises it, and the h5 layer reads its strings.
TEST_F(ResultsFile, OlderFilesStillRead) {
  const auto out = path("old.h5");
  const auto r = test::run_program("qwen3-pretrain", "--data '" + data_ + "' --seq-len 64 --global-batch 2 --steps 2 --out '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> device_names;  // as written, to compare whole (a padding conversion drops a last character)
  {
    h5::Handle f = h5::open_read(out, "results");
    device_names = h5::read_attr_strings(f.get(), "device_names");
  }
  {
    h5::Handle f = h5::open_rw(out);
    make_all_fixed_length(f.get());
    h5::Handle cfg = h5::open_group(f.get(), "config");
    make_all_fixed_length(cfg.get());
    for (const char* k : {"ranks/tp_rank", "ranks/dp_rank", "ranks/pp_stage", "stages/first_layer", "stages/end_layer"}) {
      const auto v = h5::read_f64(f.get(), k);
      ASSERT_GE(H5Ldelete(f.get(), k, H5P_DEFAULT), 0);
      h5::write_f64(f.get(), k, v, {static_cast<std::int64_t>(v.size())});
    }
    h5::Handle a(H5Aopen(f.get(), "status", H5P_DEFAULT));
    h5::Handle type(H5Aget_type(a.get()));
    ASSERT_EQ(H5Tis_variable_str(type.get()), 0);  // the conversion took
  }
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
  EXPECT_EQ(h5::read_attr_strings(f.get(), "device_names"), device_names);
  const auto summary = test::run_program("qwen3-results", "'" + out + "'");
  EXPECT_EQ(summary.exit_code, 0) << summary.output;
  EXPECT_NE(summary.output.find("status        ok"), std::string::npos) << summary.output;
  EXPECT_NE(summary.output.find("model         tiny"), std::string::npos) << summary.output;
  EXPECT_NE(summary.output.find("peak memory   rank 0"), std::string::npos) << summary.output;
}

// The h5 layer's strings: variable-length UTF-8 written; fixed-length and variable-length read, attributes and
// scalar datasets alike.
TEST(ResultsWriter, TheDevicesOwnMemoryIsTracedOnlyWhereTheSamplesKnowIt) {
  // GPU runs sample the device's memory in use (every process, as the driver counts it) beside the allocator's bytes:
  // /memory/device_trace/rank_<r> and /memory/device_peak_bytes appear with the first sample that knows it (none on
  // the CPU, where it is -1), with the same [n, 2] layout as the allocator's trace.
  const fs::path dir = test::fresh_dir("qwen3_results_device");
  const std::string path = (dir / "run.h5").string();
  {
    ResultsWriter w(path, false);
    w.append_memory({{{0.1, 100, -1}}, {{0.1, 110, -1}}});
    w.flush();
    {
      h5::Handle f = h5::open_read(path + ".partial", "results");
      EXPECT_FALSE(h5::exists(f.get(), "memory/device_trace"));
    }
    w.append_memory({{{0.2, 200, 5000}, {0.3, 150, 7000}}, {{0.2, 210, 6000}}});
    w.finish("ok", "", 0);
  }
  h5::Handle f = h5::open_read(path, "results");
  EXPECT_EQ(h5::read_f64(f.get(), "memory/device_peak_bytes"), (std::vector<double>{7000, 6000}));
  std::vector<std::int64_t> shape;
  EXPECT_EQ(h5::read_f64(f.get(), "memory/device_trace/rank_0", &shape), (std::vector<double>{0.2, 5000, 0.3, 7000}));
  EXPECT_EQ(shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(h5::read_f64(f.get(), "memory/peak_bytes"), (std::vector<double>{200, 210}));
}

TEST(H5Strings, WrittenVariableLengthReadEitherWay) {
  const fs::path dir = test::fresh_dir("qwen3_h5_strings");
  const std::string file = (dir / "s.h5").string();
  {
    h5::Handle f = h5::create(file);
    h5::write_attr(f.get(), "one", std::string("héllo"));
    h5::write_attr(f.get(), "empty", std::string());
    h5::write_attr(f.get(), "many", std::vector<std::string>{"a", "", "ccc"});
    h5::write_string(f.get(), "fixed", "names");
    h5::Handle type(H5Tcopy(H5T_C_S1));
    H5Tset_size(type.get(), H5T_VARIABLE);
    h5::Handle space(H5Screate(H5S_SCALAR));
    h5::Handle d(H5Dcreate2(f.get(), "vlen", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    const char* text = "vlen text";
    ASSERT_GE(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &text), 0);
    h5::write_attr(f.get(), "n", std::int64_t{1});
    h5::write_attr(f.get(), "n", std::int64_t{2});  // rewritten in place
  }
  h5::Handle f = h5::open_read(file, "test");
  h5::Handle a(H5Aopen(f.get(), "one", H5P_DEFAULT));
  h5::Handle type(H5Aget_type(a.get()));
  EXPECT_GT(H5Tis_variable_str(type.get()), 0);
  EXPECT_EQ(H5Tget_cset(type.get()), H5T_CSET_UTF8);
  EXPECT_EQ(h5::read_attr_string(f.get(), "one"), "héllo");
  EXPECT_EQ(h5::read_attr_string(f.get(), "empty"), "");
  EXPECT_EQ(h5::read_attr_strings(f.get(), "many"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(h5::read_string(f.get(), "fixed"), "names");
  EXPECT_EQ(h5::read_string(f.get(), "vlen"), "vlen text");
  EXPECT_EQ(h5::read_attr_int(f.get(), "n"), 2);
  EXPECT_THROW(h5::read_attr_string(f.get(), "many"), InputError);  // an array is not one string
  EXPECT_THROW(h5::read_attr_string(f.get(), "n"), InputError);
  fs::remove_all(dir);
}

// qwen3-results --help lists the codes it ends with, from the one table (core/error.h); another format version is
// refused with exit 3.
TEST_F(ResultsFile, SummaryToolListsItsExitCodesAndRefusesOtherVersions) {
  const auto help = test::run_program("qwen3-results", "--help");
  ASSERT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("Exit codes (docs/exit-codes.md):"), std::string::npos) << help.output;
  for (const ExitCode code : {ExitCode::ok, ExitCode::internal, ExitCode::usage, ExitCode::input}) {
    const std::string row = "  " + std::to_string(static_cast<int>(code)) + "  " + exit_code_meaning(code) + "\n";
    EXPECT_NE(help.output.find(row), std::string::npos) << row << help.output;
  }
  EXPECT_EQ(help.output.find("  5  "), std::string::npos) << help.output;
  const auto out = path("run.h5");
  ASSERT_EQ(test::run_program("qwen3-pretrain", "--data '" + data_ + "' --seq-len 64 --global-batch 2 --steps 1 --out '" + out + "'").exit_code, 0);
  {
    h5::Handle f = h5::open_rw(out);
    h5::write_attr(f.get(), "format_version", std::int64_t{2});
  }
  const auto r = test::run_program("qwen3-results", "'" + out + "'");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("format_version 2"), std::string::npos) << r.output;
}

// qwen3-results --format json: the summary as one JSON object on one line for tools (qwen3-sweep reads a cell's status
// from it), typed (integers as numbers, absent records null), with the text's exit codes.
TEST_F(ResultsFile, SummaryToolPrintsOneJsonObjectForTools) {
  const auto out = path("run.h5");
  ASSERT_EQ(test::run_program("qwen3-pretrain", "--data '" + data_ + "' --seq-len 64 --global-batch 2 --steps 2 --out '" + out + "'").exit_code, 0);
  auto r = test::run_program("qwen3-results", "'" + out + "' --format json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["file"], out);
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["status"], "ok");
  EXPECT_TRUE(j["error_message"].is_null()) << r.output;
  EXPECT_TRUE(j["oom"].is_null()) << r.output;
  auto& c = j["config"];
  EXPECT_EQ(c["model"], "tiny");
  EXPECT_EQ(c["parameters"], model_preset("tiny").parameter_count());
  for (const auto& [key, value] : {std::pair{"seq_len", 64}, {"global_batch", 2}, {"micro_batch", 1}, {"tp", 1}, {"pp", 1},
                                   {"cp", 1}, {"steps", 2}})
    EXPECT_EQ(c[key], value) << key << "\n" << r.output;
  EXPECT_EQ(c["device"], "cpu");
  EXPECT_EQ(c["precision"], "bf16");
  EXPECT_TRUE(c["fp8_weights"].is_null()) << r.output;
  EXPECT_EQ(j["steps_completed"], 2);
  h5::Handle f = h5::open_read(out, "results");
  const auto loss = h5::read_f64(f.get(), "steps/loss");
  EXPECT_EQ(j["loss_first"].get<double>(), loss.front());  // 17 significant digits: the same double
  EXPECT_EQ(j["loss_last"].get<double>(), loss.back());
  EXPECT_EQ(j["tokens_per_s"].get<double>(), h5::read_f64(f.get(), "steps/tokens_per_s").back());  // mean after the first
  EXPECT_GT(j["mfu_percent"].get<double>(), 0);
  EXPECT_GT(j["timings"]["total_s"].get<double>(), 0);
  ASSERT_EQ(j["peak_bytes"].size(), 1u);
  EXPECT_GT(j["peak_bytes"][0].get<std::int64_t>(), 1 << 20);
  EXPECT_TRUE(j["stages"].is_null()) << "one stage: no pipeline record";
  for (const char* key : {"git_commit", "start_time_utc", "end_time_utc", "plan_peak_bytes", "bubble_formula", "ranks"})
    EXPECT_TRUE(j.contains(key)) << key;
  // No optimizer on the host (a CPU run): its CPU time and elements are 0, and the text says nothing of it.
  EXPECT_EQ(j["ranks"][0]["host_optimizer_cpu_s"], 0.0) << r.output;
  EXPECT_EQ(j["ranks"][0]["host_optimizer_elements"], 0) << r.output;
  f.reset();
  EXPECT_EQ(test::run_program("qwen3-results", "'" + out + "'").output.find("host AdamW"), std::string::npos);
  {  // As a CUDA run with 3e9 elements on the host, 1.5 s of CPU per step, records them: the rate is printed.
    h5::Handle w = h5::open_rw(out);
    ASSERT_GE(H5Ldelete(w.get(), "ranks/host_optimizer_cpu_s", H5P_DEFAULT), 0);
    h5::write_f64(w.get(), "ranks/host_optimizer_cpu_s", {1.5}, {1});
    h5::rewrite_i64(w.get(), "ranks/host_optimizer_elements", {3000000000});
  }
  EXPECT_NE(test::run_program("qwen3-results", "'" + out + "'").output.find(
                "host AdamW    on the CPU: rank 0 1.500 s per step (2.00 G elements/s)"), std::string::npos);
  j = nlohmann::json::parse(test::run_program("qwen3-results", "'" + out + "' --format json").output);
  EXPECT_EQ(j["ranks"][0]["host_optimizer_elements"], 3000000000ll);
  // A run that did not end ok: its status and message, exit 1 as in text.
  {
    h5::Handle w = h5::open_rw(out);
    h5::write_attr(w.get(), "status", std::string("error"));
    h5::write_attr(w.get(), "error_message", std::string("rank 1 exited"));
  }
  r = test::run_program("qwen3-results", "'" + out + "' --format json");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  auto failed = nlohmann::json::parse(r.output);
  EXPECT_EQ(failed["status"], "error");
  EXPECT_EQ(failed["error_message"], "rank 1 exited");
  EXPECT_EQ(test::run_program("qwen3-results", "'" + out + "' --format xml").exit_code, 2);
  r = test::run_program("qwen3-results", "--help");  // names the fields
  for (const char* word : {"--format", "steps_completed", "mfu_percent", "peak_bytes"})
    EXPECT_NE(r.output.find(word), std::string::npos) << word << "\n" << r.output;
  r = test::run_program("qwen3-results", "'" + data_ + "' --format json");  // a dataset, not a results file
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_EQ(r.output.find('{'), std::string::npos) << "no JSON for a file it cannot read: " << r.output;
}
