// qwen3-results: reads a results file back and prints its summary (status, model, throughput, memory, losses), as
// text for people or as one JSON object for tools (--format json; qwen3-sweep reads a cell's status from it).
#include <boost/program_options.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/help.h"
#include "common/main_wrapper.h"
#include "common/options_util.h"
#include "core/error.h"
#include "io/h5.h"
#include "io/results.h"
#include "train/progress.h"

namespace po = boost::program_options;
using namespace qwen3;

namespace {
std::string attr_or(hid_t obj, const char* name, const std::string& fallback = "-") {
  return h5::has_attr(obj, name) ? h5::read_attr_string(obj, name) : fallback;
}
double mean_after_first(const std::vector<double>& v) {
  if (v.size() < 2) return v.empty() ? 0 : v[0];
  return std::accumulate(v.begin() + 1, v.end(), 0.0) / static_cast<double>(v.size() - 1);
}
// The run's number format, as /config records it (files from before FP8 hold none: bf16); for people, an fp8 run's
// also says how its FP8 weight copies were made (the run's choice, root fp8_weights: kept or per-layer) and, when
// delayed, how it scaled (/config fp8_scaling; files before it scaled as current).
std::string precision_key(hid_t cfg) { return attr_or(cfg, "precision", "bf16"); }
std::string precision_of(hid_t root, hid_t cfg) {
  const std::string p = precision_key(cfg);
  if (p != "fp8") return p;
  std::string how = h5::has_attr(root, "fp8_weights") ? "weights " + h5::read_attr_string(root, "fp8_weights") : "";
  if (attr_or(cfg, "fp8_scaling", "current") == "delayed") how += (how.empty() ? "" : ", ") + std::string("delayed scaling");
  return how.empty() ? p : p + " (" + how + ")";
}
std::string bytes_or_unknown(std::int64_t bytes) { return bytes < 0 ? "unknown" : format_bytes(bytes); }

// An out-of-memory run: what was being allocated, its size and the memory in use then (-1: unknown).
void print_oom_details(hid_t root) {
  if (!h5::has_attr(root, "oom_category")) return;
  std::printf("  out of memory allocating %s (%s requested, %s in use)\n",
              h5::read_attr_string(root, "oom_category").c_str(),
              bytes_or_unknown(h5::read_attr_int(root, "oom_requested_bytes")).c_str(),
              bytes_or_unknown(h5::read_attr_int(root, "oom_in_use_bytes")).c_str());
}

using nlohmann::json;

// A /config setting (every one is stored as a string, docs/results.md) for JSON: an integer as a number, other text
// as a string, an absent setting as null.
json config_value(hid_t cfg, const char* name) {
  if (!h5::has_attr(cfg, name)) return nullptr;
  const std::string s = h5::read_attr_string(cfg, name);
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (!s.empty() && ec == std::errc() && end == s.data() + s.size()) return v;
  return s;
}
json attr_or_null(hid_t obj, const char* name) { return h5::has_attr(obj, name) ? json(h5::read_attr_string(obj, name)) : json(nullptr); }
json int_attr_or_null(hid_t obj, const char* name) {
  if (!h5::has_attr(obj, name)) return nullptr;
  const std::int64_t v = h5::read_attr_int(obj, name);
  return v < 0 ? json(nullptr) : json(v);  // -1: unknown
}

// --format json: what the text summary says, as one JSON object on one line (field list in --help, docs/cli.md).
std::string summary_json(const std::string& path, hid_t root) {
  const std::string status = attr_or(root, "status");
  json out{{"file", path}, {"format_version", h5::read_attr_int(root, "format_version")}, {"status", status},
           {"error_message", status == "ok" ? json(nullptr) : attr_or_null(root, "error_message")}, {"oom", nullptr},
           {"exit_code", h5::has_attr(root, "exit_code") ? json(h5::read_attr_int(root, "exit_code")) : json(nullptr)},
           {"diverged_at_step", int_attr_or_null(root, "diverged_at_step")}};
  if (h5::has_attr(root, "oom_category"))
    out["oom"] = {{"category", h5::read_attr_string(root, "oom_category")},
                  {"requested_bytes", int_attr_or_null(root, "oom_requested_bytes")},
                  {"in_use_bytes", int_attr_or_null(root, "oom_in_use_bytes")}};
  h5::Handle cfg = h5::open_group(root, "config");
  json config = json::object();
  for (const auto& [key, name] : {std::pair{"model", "model"}, {"parameters", "model.parameters"}, {"seq_len", "seq_len"},
                                  {"global_batch", "global_batch"}, {"micro_batch", "micro_batch"}, {"tp", "tp"},
                                  {"pp", "pp"}, {"cp", "cp"}, {"device", "device"}, {"steps", "steps"}})
    config[key] = config_value(cfg.get(), name);
  config["precision"] = precision_key(cfg.get());
  config["fp8_weights"] = attr_or_null(root, "fp8_weights");  // the run's choice (fp8 only)
  config["fp8_scaling"] = config["precision"] == "fp8" ? json(attr_or(cfg.get(), "fp8_scaling", "current")) : json(nullptr);
  out["config"] = config;
  out["git_commit"] = attr_or_null(root, "git_commit");
  out["start_time_utc"] = attr_or_null(root, "start_time_utc");
  out["end_time_utc"] = attr_or_null(root, "end_time_utc");
  const auto loss = h5::read_f64(root, "steps/loss");
  out["steps_completed"] = loss.size();
  out["loss_first"] = loss.empty() ? json(nullptr) : json(loss.front());
  out["loss_last"] = loss.empty() ? json(nullptr) : json(loss.back());
  // Means of the steps after the first (the first holds warm-up), as the text says.
  const double tflops = mean_after_first(h5::read_f64(root, "steps/tflops_per_device"));
  out["tokens_per_s"] = loss.empty() ? json(nullptr) : json(mean_after_first(h5::read_f64(root, "steps/tokens_per_s")));
  out["tflops_per_device"] = loss.empty() ? json(nullptr) : json(tflops);
  out["mfu_percent"] = loss.empty() ? json(nullptr) : json(100 * tflops / kPeakTflopsPerDevice);
  out["timings"] = nullptr;
  if (h5::exists(root, "timings")) {
    h5::Handle t = h5::open_group(root, "timings");
    out["timings"] = {{"init_s", h5::read_attr_double(t.get(), "init_s")},
                      {"first_step_s", h5::read_attr_double(t.get(), "first_step_s")},
                      {"total_s", h5::read_attr_double(t.get(), "total_s")}};
  }
  out["peak_bytes"] = nullptr;  // per rank
  if (h5::exists(root, "memory/peak_bytes")) {
    json peaks = json::array();
    for (const double b : h5::read_f64(root, "memory/peak_bytes")) peaks.push_back(static_cast<std::int64_t>(b));
    out["peak_bytes"] = peaks;
  }
  out["plan_peak_bytes"] = h5::has_attr(root, "plan_peak_bytes") ? json(h5::read_attr_int(root, "plan_peak_bytes")) : json(nullptr);
  out["stages"] = nullptr;  // pipeline stages: [first_layer, end_layer) each
  out["bubble_formula"] = nullptr;
  if (h5::exists(root, "stages/first_layer") && h5::read_f64(root, "stages/first_layer").size() > 1) {
    const auto first = h5::read_f64(root, "stages/first_layer"), end = h5::read_f64(root, "stages/end_layer");
    json stages = json::array();
    for (std::size_t i = 0; i < first.size() && i < end.size(); ++i)
      stages.push_back({{"first_layer", static_cast<std::int64_t>(first[i])}, {"end_layer", static_cast<std::int64_t>(end[i])}});
    out["stages"] = stages;
    out["bubble_formula"] = h5::read_f64(root, "stages/bubble_formula").at(0);
  }
  out["ranks"] = nullptr;  // where each rank's time went (seconds, steps after the first)
  if (h5::exists(root, "ranks/compute_s")) {
    const auto compute = h5::read_f64(root, "ranks/compute_s"), wait = h5::read_f64(root, "ranks/pipeline_wait_s");
    const auto reduce = h5::read_f64(root, "ranks/dp_reduce_s"), step = h5::read_f64(root, "ranks/step_s");
    const bool host = h5::exists(root, "ranks/host_optimizer_cpu_s");  // files since 2026-12-06
    const auto host_s = host ? h5::read_f64(root, "ranks/host_optimizer_cpu_s") : std::vector<double>{};
    const auto host_n = host ? h5::read_f64(root, "ranks/host_optimizer_elements") : std::vector<double>{};
    json ranks = json::array();
    for (std::size_t r = 0; r < compute.size() && r < step.size(); ++r) {
      ranks.push_back({{"compute_s", compute[r]}, {"pipeline_wait_s", wait.at(r)}, {"dp_reduce_s", reduce.at(r)}, {"step_s", step[r]},
                       {"host_optimizer_cpu_s", host ? json(host_s.at(r)) : json(nullptr)},
                       {"host_optimizer_elements", host ? json(static_cast<std::int64_t>(host_n.at(r))) : json(nullptr)}});
    }
    out["ranks"] = ranks;
  }
  return out.dump();
}
// InputError unless the file is a qwen3-pretrain results file of the format version this build reads.
void check_results_file(const std::string& path, hid_t root) {
  if (attr_or(root, "format", "") != kResultsFormat)
    throw InputError("'" + path + "' is not a qwen3-pretrain results file (format '" + attr_or(root, "format", "") + "')");
  if (const auto version = h5::read_attr_int(root, "format_version"); version != kResultsVersion)
    throw InputError("'" + path + "' has results format_version " + std::to_string(version) + "; this qwen3-results reads " +
                     std::to_string(kResultsVersion));
}

// The text summary's first part: the run's status, its settings and code, its steps and throughput, its timings.
void print_run_text(const std::string& path, hid_t root, const std::string& status) {
  h5::Handle cfg = h5::open_group(root, "config");
  auto c = [&](const char* k) { return attr_or(cfg.get(), k); };
  std::printf("results %s\n", path.c_str());
  std::printf("  status        %s%s%s\n", status.c_str(), status == "ok" ? "" : ": ", status == "ok" ? "" : attr_or(root, "error_message").c_str());
  print_oom_details(root);
  if (h5::has_attr(root, "exit_code") && h5::read_attr_int(root, "exit_code") != 0)
    std::printf("  exit code     %lld (the run's own; mpirun reports 1 when it is signalled)\n",
                static_cast<long long>(h5::read_attr_int(root, "exit_code")));
  const std::string precision = precision_of(root, cfg.get());
  std::printf("  model         %s (%s parameters), seq %s, global batch %s, micro-batch %s, tp %s pp %s cp %s, device %s, "
              "%s\n", c("model").c_str(), c("model.parameters").c_str(), c("seq_len").c_str(), c("global_batch").c_str(),
              c("micro_batch").c_str(), c("tp").c_str(), c("pp").c_str(), c("cp").c_str(), c("device").c_str(),
              precision.c_str());
  std::printf("  code          commit %s, started %s, ended %s\n", attr_or(root, "git_commit").c_str(),
              attr_or(root, "start_time_utc").c_str(), attr_or(root, "end_time_utc").c_str());
  const auto loss = h5::read_f64(root, "steps/loss");
  const auto tps = h5::read_f64(root, "steps/tokens_per_s");
  const auto tflops = h5::read_f64(root, "steps/tflops_per_device");
  if (!loss.empty()) {
    std::printf("  steps         %zu of %s; loss %.4f -> %.4f\n", loss.size(), c("steps").c_str(), loss.front(), loss.back());
    std::printf("  throughput    %.0f tokens/s, %s TFLOP/s per device, MFU %s%%%s (mean of steps after the first)\n",
                mean_after_first(tps), format_significant(mean_after_first(tflops)).c_str(),
                format_significant(100 * mean_after_first(tflops) / kPeakTflopsPerDevice).c_str(),
                mfu_basis(precision != "bf16"));
  }
  if (h5::exists(root, "timings")) {
    h5::Handle t = h5::open_group(root, "timings");
    std::printf("  timings       init %.2f s, first step %.2f s, total %.2f s\n", h5::read_attr_double(t.get(), "init_s"),
                h5::read_attr_double(t.get(), "first_step_s"), h5::read_attr_double(t.get(), "total_s"));
  }
}

// The text summary's memory part: each rank's peak, the planner's figure, and the pipeline's stages.
void print_memory_text(hid_t root) {
  if (h5::exists(root, "memory/peak_bytes")) {
    const auto peaks = h5::read_f64(root, "memory/peak_bytes");
    std::string line;
    for (std::size_t r = 0; r < peaks.size(); ++r)
      line += (r ? ", " : "") + std::string("rank ") + std::to_string(r) + " " + format_bytes(static_cast<std::int64_t>(peaks[r]));
    std::printf("  peak memory   %s\n", line.c_str());
  }
  if (h5::has_attr(root, "plan_peak_bytes"))  // CUDA runs: the memory planner's figure (train/memory_plan.h)
    std::printf("  memory plan   %s per rank (without the runtime reserve)\n",
                format_bytes(h5::read_attr_int(root, "plan_peak_bytes")).c_str());
  if (h5::exists(root, "stages/first_layer") && h5::read_f64(root, "stages/first_layer").size() > 1) {
    const auto first = h5::read_f64(root, "stages/first_layer"), end = h5::read_f64(root, "stages/end_layer");
    std::string line;
    for (std::size_t s = 0; s < first.size(); ++s)
      line += (s ? ", " : "") + std::to_string(static_cast<long>(first[s])) + "-" + std::to_string(static_cast<long>(end[s]) - 1);
    std::printf("  stages        layers %s; 1F1B bubble formula %.1f%%\n", line.c_str(),
                100 * h5::read_f64(root, "stages/bubble_formula").at(0));
  }
}

// The text summary's last part: where each rank's time went, and the optimizer's host part.
void print_rank_times_text(hid_t root) {
  if (h5::exists(root, "ranks/compute_s")) {  // where each rank's time went (steps after the first)
    const auto compute = h5::read_f64(root, "ranks/compute_s"), wait = h5::read_f64(root, "ranks/pipeline_wait_s");
    const auto reduce = h5::read_f64(root, "ranks/dp_reduce_s"), step = h5::read_f64(root, "ranks/step_s");
    std::string line;
    for (std::size_t r = 0; r < compute.size() && r < step.size(); ++r) {
      const double total = step[r] > 0 ? step[r] : 1;
      char item[96];
      std::snprintf(item, sizeof item, "%srank %zu %.0f/%.0f/%.0f", r ? ", " : "", r, 100 * compute[r] / total,
                    100 * wait[r] / total, 100 * reduce[r] / total);
      line += item;
    }
    std::printf("  time split    %% compute/pipeline wait/dp reduce: %s\n", line.c_str());
  }
  if (h5::exists(root, "ranks/host_optimizer_cpu_s")) {  // the optimizer's host part, as the CPU timed it
    const auto seconds = h5::read_f64(root, "ranks/host_optimizer_cpu_s");
    const auto elements = h5::read_f64(root, "ranks/host_optimizer_elements");
    std::string line;
    for (std::size_t r = 0; r < seconds.size() && r < elements.size(); ++r) {
      if (elements[r] <= 0 || seconds[r] <= 0) continue;
      char item[128];
      std::snprintf(item, sizeof item, "%srank %zu %.3f s per step (%.2f G elements/s)", line.empty() ? "" : ", ", r,
                    seconds[r], elements[r] / seconds[r] / 1e9);
      line += item;
    }
    if (!line.empty()) std::printf("  host AdamW    on the CPU: %s\n", line.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("qwen3-results", [&] {
    std::string path, format = "text";
    po::options_description desc(
        "qwen3-results: summary of a qwen3-pretrain results file\nUsage: qwen3-results FILE [--format text|json]\nOptions");
    desc.add_options()("help,h", "show this help")("file", po::value(&path)->required(), "results file")(
        "format", po::value(&format)->default_value(format),
        "text (for people) or json: one JSON object on one line, for tools such as qwen3-sweep: file, format_version, "
        "status, error_message, oom {category, requested_bytes, in_use_bytes}, exit_code (the code the run ended with, "
        "whatever its launcher reported), diverged_at_step, config {model, parameters, seq_len, "
        "global_batch, micro_batch, tp, pp, cp, device, steps, precision, fp8_weights}, git_commit, start_time_utc, end_time_utc, "
        "steps_completed, loss_first, loss_last, tokens_per_s, tflops_per_device, mfu_percent (means of the steps after "
        "the first), timings {init_s, first_step_s, total_s}, peak_bytes [per rank], plan_peak_bytes, stages "
        "[{first_layer, end_layer}], bubble_formula, ranks [{compute_s, pipeline_wait_s, dp_reduce_s, step_s, "
        "host_optimizer_cpu_s, host_optimizer_elements}]; "
        "null where the file has no such record. Exit codes as for text");
    po::positional_options_description pos;
    pos.add("file", 1);
    po::variables_map vm;
    const std::string exit_codes = exit_codes_help(
        {{ExitCode::ok, "the run's status is ok"},
         {ExitCode::internal, "also when the run's status is not ok (running, oom, oom_predicted, error, preempted, diverged)"},
         {ExitCode::usage},
         {ExitCode::input, "not a qwen3-pretrain results file, or one of another format version"}});
    if (!parse_command_line(argc, argv, desc, vm, &pos, exit_codes)) return 0;
    require_choice("--format", format, {"text", "json"});
    h5::Handle f = h5::open_read(path, "results file");
    const hid_t root = f.get();
    check_results_file(path, root);
    const std::string status = attr_or(root, "status");
    if (format == "json") {
      std::printf("%s\n", summary_json(path, root).c_str());
      return status == "ok" ? 0 : 1;
    }
    print_run_text(path, root, status);
    print_memory_text(root);
    print_rank_times_text(root);
    return status == "ok" ? 0 : 1;
  });
}
