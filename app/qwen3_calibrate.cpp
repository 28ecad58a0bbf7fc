// qwen3-calibrate: measures this GPU kind's costs for the step-time predictor (train/calibration.h), one operation
// at a time, never a training run: every kernel a training step of the given models, lengths and tensor-parallel sizes
// runs (train/step_model.h's inventory, at the token counts it runs them), pinned host↔device copies, the CPU's AdamW,
// a host round trip, and the device memory outside the engine's allocator (CUDA context, libraries, loaded kernels).
// Writes the calibration JSON that qwen3-pretrain --plan --calibration (or calibration/<kind>.json) reads.
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/help.h"
#include "common/main_wrapper.h"
#include "common/options_util.h"
#include "config/model_config.h"
#include "core/error.h"
#include "io/system_info.h"
#include "train/calibration.h"
#include "train/memory_plan.h"
#include "train/step_model.h"
#ifdef QWEN3_HAVE_CUDA
#include <cuda_runtime.h>

#include "gpu/check.h"
#include "train/cuda_engine/op_bench.h"
#endif

namespace po = boost::program_options;
using namespace qwen3;

namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::size_t b = 0;
  while (b <= text.size()) {
    const std::size_t e = std::min(text.find(',', b), text.size());
    if (e > b) out.push_back(text.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

// Every kernel (key → shape, token counts) of one step of each case (model × tensor-parallel size × length) on any
// rank (record_case: one stage and a pipeline's; recomputation adds no other kernel), in the cases' order.
std::vector<std::pair<std::string, RecordingPricer>> inventory(const std::vector<CalibrationCase>& cases) {
  std::vector<std::pair<std::string, RecordingPricer>> out;
  for (const auto& k : cases) {
    RecordingPricer r;
    try {
      r = record_case(k);
    } catch (const UsageError& e) {  // tp does not divide this model, or the length
      std::fprintf(stderr, "qwen3-calibrate: skipping %s at tp %d, %lld tokens: %s\n", k.model.c_str(), k.tp,
                   static_cast<long long>(k.seq_len), e.what());
      continue;
    }
    out.emplace_back(k.model + " tp" + std::to_string(k.tp) + " " + std::to_string(k.seq_len), std::move(r));
  }
  return out;
}

// Given --models, --lengths or --tp: every combination of the lists, an absent one taking the full default list
// (every preset; kCalibrationLengths; kCalibrationTensorParallel), measured whether or not the card holds it.
std::vector<CalibrationCase> requested_cases(const std::vector<std::string>& models,
                                             const std::vector<std::int64_t>& lengths,
                                             const std::vector<std::int64_t>& tps) {
  std::vector<CalibrationCase> out;
  for (const auto& m : models.empty() ? preset_names() : models)
    for (std::int64_t tp : tps.empty() ? std::vector<std::int64_t>(kCalibrationTensorParallel.begin(),
                                                                    kCalibrationTensorParallel.end())
                                       : tps)
      for (std::int64_t len : lengths.empty() ? kCalibrationLengths : lengths)
        out.push_back({m, static_cast<int>(tp), len});
  return out;
}

std::string joined(const auto& items) {
  std::string out;
  for (const auto& i : items) {
    std::ostringstream s;
    s << i;
    out += (out.empty() ? "" : ",") + s.str();
  }
  return out;
}

// The calibration file must be new (or --overwrite) in a folder that exists and can be written: checked before any
// measurement, so a bad --out costs no GPU time (exit 4, as for every tool's output).
void check_output(const std::string& path, bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(path, ec) && !overwrite) throw OutputError("--out: '" + path + "' already exists (pass --overwrite to replace it)");
  const std::string probe = path + ".partial";
  if (!std::ofstream(probe)) throw OutputError("--out: cannot create '" + probe + "' (is the folder there and writable?)");
  fs::remove(probe, ec);
}

// Written as <path>.partial, then renamed: a calibration file is whole or absent.
void write_output(const std::string& path, const std::string& text) {
  const std::string partial = path + ".partial";
  {
    std::ofstream f(partial);
    f << text;
    if (!f.flush()) throw OutputError("--out: cannot write '" + partial + "'");
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) throw OutputError("--out: cannot rename '" + partial + "' to '" + path + "': " + ec.message());
}

// The command line: the texts as given, then the lists parsed from them.
struct Options {
  std::string out_path, kind, models_text, lengths_text, tp_text, base_path;
  int threads = 0;
  bool overwrite = false;
  std::vector<std::string> models;
  std::vector<std::int64_t> lengths, tps;
  bool defaults = true;  // none of --models, --lengths and --tp given
};

// qwen3-calibrate's options, bound to o's fields.
void add_options(po::options_description& desc, Options& o) {
  desc.add_options()("help,h", "show this help")("out", po::value(&o.out_path), "calibration JSON to write (required)")(
      "overwrite", po::bool_switch(&o.overwrite), "replace --out if it exists")(
      "kind", po::value(&o.kind), ("GPU kind, as --device-memory names it (" + known_gpu_names() +
                                   "); default: the one whose memory this device has").c_str())(
      "models", po::value(&o.models_text),
      ("model presets whose kernels to measure (default: every preset, " + joined(preset_names()) + ")").c_str())(
      "lengths", po::value(&o.lengths_text),
      ("sequence lengths in tokens (default: " + joined(kCalibrationLengths) + ")").c_str())(
      "tp", po::value(&o.tp_text),
      ("tensor-parallel sizes, each rank's shapes (default: " + joined(kCalibrationTensorParallel) +
       "). Without --models, --lengths and --tp: every preset at each default length and size that the engine "
       "accepts and the memory planner fits on this kind's memory at some memory policy (micro-batch 1), as one GPU "
       "or as a pipeline's worst stage of up to 8, so that qwen3-pretrain --plan prices every preset the card holds: "
       "214 s on an H200 (168 cases). Given any of them: every combination, an absent list taking its default, "
       "measured whether or not the card holds it").c_str())(
      "threads", po::value(&o.threads), "CPU threads of the host optimizer's AdamW (default: this host's cores)")(
      "base", po::value(&o.base_path), "an earlier calibration of this kind to add to (its measurements are kept, "
                                       "those of the same shape and tokens measured again)");
}

// The checks that come before any measurement: --out, the presets and lists; the lists parsed into o.
void check_options(Options& o, const po::variables_map& vm) {
  if (o.out_path.empty()) throw UsageError("--out: give the calibration file to write");
  check_output(o.out_path, o.overwrite);
  o.models = split(o.models_text);
  for (const auto& m : o.models) model_preset(m);  // UsageError naming an unknown preset
  o.lengths = o.lengths_text.empty() ? std::vector<std::int64_t>{} : parse_positive_list("--lengths", o.lengths_text);
  o.tps = o.tp_text.empty() ? std::vector<std::int64_t>{} : parse_positive_list("--tp", o.tp_text);
  o.defaults = vm.count("models") + vm.count("lengths") + vm.count("tp") == 0;
  if (o.threads <= 0) o.threads = cores_per_rank(1);
}

#ifdef QWEN3_HAVE_CUDA
using Measured = std::map<std::string, std::map<std::int64_t, double>>;  // key → tokens → seconds
using Clock = std::chrono::steady_clock;

// Device 0, its context made; kind: --kind, else the known kind whose memory it has (UsageError when none).
cudaDeviceProp open_device(std::string& kind) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    throw UsageError("no CUDA device is visible on this host (calibration measures a GPU)");
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaFree(nullptr));  // the context
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (kind.empty()) kind = gpu_kind_of(static_cast<std::int64_t>(prop.totalGlobalMem));
  if (kind.empty())
    throw UsageError(std::string("--kind: this device (") + prop.name + ") is none of the known kinds (" +
                     known_gpu_names() + "): name it");
  return prop;
}

// The calibration to add to: --base's, its kernel times moved into measured; an empty one without --base.
Calibration load_base(const std::string& base_path, const std::string& kind, Measured& measured) {
  Calibration c;
  if (base_path.empty()) return c;
  try {
    c = load_calibration(base_path);
  } catch (const UsageError& e) {  // a file to read: input data
    throw InputError(std::string("--base: ") + e.what());
  }
  if (c.kind != kind) throw UsageError("--base: '" + base_path + "' calibrates " + c.kind + ", this device is " + kind);
  for (const auto& [key, curve] : c.ops)
    for (const auto& [tokens, seconds] : curve) measured[key][static_cast<std::int64_t>(tokens)] = seconds;
  c.ops.clear();
  return c;
}

// The cases to measure: --models × --lengths × --tp, or without them every one the kind's memory holds.
std::vector<CalibrationCase> cases_to_measure(const Options& o, const cudaDeviceProp& prop) {
  std::int64_t kind_bytes = static_cast<std::int64_t>(prop.totalGlobalMem);
  for (const auto& g : known_gpus())
    if (o.kind == g.name) kind_bytes = g.bytes;
  return o.defaults ? default_calibration_cases(kind_bytes) : requested_cases(o.models, o.lengths, o.tps);
}

// Times each kernel shape and token count of the layouts once (the first layout that has it), into measured.
void measure_kernels(cuda::OpBench& bench, const std::vector<std::pair<std::string, RecordingPricer>>& layouts,
                     Measured& measured, Clock::time_point t0) {
  std::set<std::pair<std::string, std::int64_t>> fresh;  // measured in this run
  for (const auto& [what, rec] : layouts) {
    int n = 0;
    for (const auto& [key, entry] : rec.ops) {
      OpShape op = entry.first;
      for (std::int64_t tokens : entry.second) {
        op.tokens = (op.kind == OpKind::adamw || op.kind == OpKind::sum_squares) ? cuda::kCalibrationOptimizerElements : tokens;
        if (!fresh.insert({key, op.tokens}).second) continue;
        measured[key][op.tokens] = bench.time(op);
        ++n;
      }
    }
    std::fprintf(stderr, "qwen3-calibrate: %s: %d new measurements (%.0f s so far)\n", what.c_str(), n,
                 std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

// What kernels on two streams cost each other: a GEMM beside SMs held, AdamW hidden beside a layer's forward.
void measure_overlaps(cuda::OpBench& bench, Calibration& c) {
  c.gemm_slowdown_sms_held.clear();
  for (int sms : {8, 16, 32}) {
    c.gemm_slowdown_sms_held.emplace_back(sms, bench.gemm_slowdown_with_sms_held(sms));
    std::fprintf(stderr, "qwen3-calibrate: a forward GEMM with %d SMs held by another kernel: %.3f of its time alone\n",
                 sms, c.gemm_slowdown_sms_held.back().second);
  }
  c.optimizer_hidden.clear();
  for (std::int64_t tokens : {1024, 4096, 16384}) {
    c.optimizer_hidden.emplace_back(static_cast<double>(tokens), bench.optimizer_hidden_share(tokens));
    std::fprintf(stderr, "qwen3-calibrate: AdamW beside a layer's forward of %lld tokens on another stream: %.0f%% of it hidden\n",
                 static_cast<long long>(tokens), 100 * c.optimizer_hidden.back().second);
  }
}

// One line on stderr: the device memory outside our buffers, and the host's measurements.
void print_outside_costs(const Calibration& c, int threads) {
  std::fprintf(stderr,
               "qwen3-calibrate: device memory outside our buffers: context %.0f MiB, libraries, streams and "
               "events %.0f MiB, kernels %.0f MiB, pinned host memory's page tables %.2f MiB per GiB; pinned copies "
               "%.1f / %.1f GB/s (to / from the device); CPU AdamW %.2f G elements/s on %d threads; host round trip "
               "%.1f us\n",
               c.context_bytes / 1048576.0, c.library_bytes / 1048576.0, c.kernel_bytes / 1048576.0,
               c.pinned_map_bytes_per_byte * 1024, c.h2d_bytes_per_s / 1e9, c.d2h_bytes_per_s / 1e9, c.cpu_adamw_elements_per_s / 1e9, threads,
               c.sync_s * 1e6);
}

// Measures device 0 as the options ask and writes the calibration to --out.
int calibrate(Options& o) {
  const cudaDeviceProp prop = open_device(o.kind);
  const std::string& kind = o.kind;
  int driver = 0;
  cudaDriverGetVersion(&driver);
  Measured measured;
  Calibration c = load_base(o.base_path, kind, measured);
  c.kind = kind;
  c.device = prop.name;
  c.measured = (c.measured.empty() ? "" : c.measured + "; added ") + utc_now() + ", " + prop.name + ", CUDA driver " + std::to_string(driver / 1000) + "." +
               std::to_string(driver % 1000 / 10) + ", commit " + git_commit() + ", " + std::to_string(o.threads) +
               " CPU threads";
  const std::int64_t context = cuda::device_used_bytes();
  const auto t0 = Clock::now();
  cuda::OpBench bench;  // cuBLASLt, cuDNN, and buffers of its own
  c.context_bytes = context;
  const std::int64_t handles = cuda::device_used_bytes() - context - bench.own_bytes();
  // The engine's streams and events (main, side, comm, offload, host optimizer; an event per optimizer segment).
  c.library_bytes = handles + cuda::stream_bytes(8, 160);
  measure_kernels(bench, inventory(cases_to_measure(o, prop)), measured, t0);
  measure_overlaps(bench, c);
  // What running the kernels added (lazily loaded modules, cuBLASLt's and cuDNN's plans); the buffers are freed.
  // With --base, the larger of the two: a run of a few models loads fewer kernels than the base's list did.
  c.kernel_bytes = std::max(o.base_path.empty() ? std::int64_t{0} : c.kernel_bytes,
                            cuda::device_used_bytes() - context - handles - bench.own_bytes());
  for (const auto& [key, points] : measured)
    for (const auto& [tokens, seconds] : points) c.ops[key].emplace_back(static_cast<double>(tokens), seconds);
  cuda::measure_host(c, o.threads);
  print_outside_costs(c, o.threads);
  write_output(o.out_path, calibration_json(c));
  std::size_t points = 0;
  for (const auto& [key, curve] : c.ops) points += curve.size();
  std::printf("qwen3-calibrate: %s (%s): %zu kernel shapes at %zu token counts measured in %.0f s → %s\n",
              kind.c_str(), prop.name, c.ops.size(), points,
              std::chrono::duration<double>(Clock::now() - t0).count(), o.out_path.c_str());
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  return run_main("qwen3-calibrate", [&] {
    Options o;
    po::options_description desc(
        "qwen3-calibrate: measure this GPU kind's operations for qwen3-pretrain --plan's step-time prediction\n"
        "Usage: qwen3-calibrate --out FILE [--overwrite] [--kind NAME] [--models LIST] [--lengths LIST] [--tp LIST]\nOptions");
    add_options(desc, o);
    po::variables_map vm;
    const std::string exit_codes = exit_codes_help(
        {{ExitCode::ok, "the calibration was written"}, {ExitCode::internal},
         {ExitCode::usage, "also: no CUDA device, or a build without CUDA"},
         {ExitCode::input, "--base cannot be read or is not a calibration"},
         {ExitCode::output, "checked before anything is measured"}, {ExitCode::out_of_memory}});
    if (!parse_command_line(argc, argv, desc, vm, nullptr, exit_codes)) return 0;
    check_options(o, vm);
#ifndef QWEN3_HAVE_CUDA
    throw UsageError("this build has no CUDA, and calibration measures a GPU");
#else
    return calibrate(o);
#endif
  });
}
