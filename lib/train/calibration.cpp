// A GPU kind's measured costs and the step-time prediction (see calibration.h).
#include "train/calibration.h"


#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "train/fp8_estimate.h"
#include "train/progress.h"

namespace qwen3 {
namespace {

using json = nlohmann::json;
using Curve = std::vector<std::pair<double, double>>;

Curve read_curve(const json& j, const std::string& where) {
  Curve c;
  for (const auto& p : j) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number() || p[0].get<double>() <= 0 ||
        p[1].get<double>() <= 0)
      throw UsageError(where + ": each point must be [x > 0, y > 0]");
    c.emplace_back(p[0].get<double>(), p[1].get<double>());
  }
  std::sort(c.begin(), c.end());
  return c;
}

json curve_json(const Curve& c) {
  json a = json::array();
  for (const auto& [x, y] : c) a.push_back({x, y});
  return a;
}

// The term of a prediction's sources for the FP8 kernels priced by estimate from another card (--estimate-from).
constexpr const char* kEstimatedTerm = "FP8 kernels estimated from another card";
// … and for FP8 kernels priced outside their measured token counts along their bf16 counterpart's curve.
constexpr const char* kAlongTerm = "FP8 kernels outside their measured tokens";

// How a collective the calibration lacks is listed: "all_gather over 8 GPUs".
constexpr const char* kOverGroup = " over ";
std::string collective_key(const CollOp& op) {
  return std::string(coll_kind_name(op.kind)) + kOverGroup + std::to_string(op.group) + " GPUs";
}
bool is_collective_key(const std::string& key) { return key.find(kOverGroup) != std::string::npos; }

// A path as a shell word: quoted when it holds anything but [A-Za-z0-9_./+-].
std::string shell_word(const std::string& s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || std::strchr("_./+-", ch) != nullptr;
  });
  if (plain) return s;
  std::string q = "'";
  for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

// The executable's folder (/proc/self/exe), where build/bin keeps its calibration/ copy.
std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

// NCCL's device buffers for one communicator, from its default sizes (src/include/device.h: SIMPLE NCCL_BUFFSIZE
// 4 MiB, LL128 4.7 MiB, LL 0.5 MiB per connection) for a receive connection on each of the ring's and the tree's
// channels: 2 × 16 channels (NCCL_BUFFSIZE honoured). An estimate until a multi-GPU calibration measures it.
std::int64_t nccl_communicator_bytes() {
  std::int64_t simple = 4ll << 20;
  if (const char* b = std::getenv("NCCL_BUFFSIZE")) simple = std::max(1ll << 16, std::atoll(b));
  const std::int64_t per_connection = simple + 4915200 + 524288;
  return 2 * 16 * per_connection;
}

}  // namespace

double interpolate_curve(const std::vector<std::pair<double, double>>& c, double x, double power) {
  if (c.empty() || x <= 0) return 0;
  if (x <= c.front().first) return c.front().second;
  if (x >= c.back().first) return c.back().second * std::pow(x / c.back().first, power);
  const auto hi = std::lower_bound(c.begin(), c.end(), std::make_pair(x, -1.0));
  const auto lo = hi - 1;
  const double f = std::log(x / lo->first) / std::log(hi->first / lo->first);
  return std::exp(std::log(lo->second) + f * (std::log(hi->second) - std::log(lo->second)));
}

Calibration load_calibration(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw UsageError("cannot read the calibration '" + path + "'");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    throw UsageError("calibration '" + path + "' is not JSON: " + e.what());
  }
  const auto where = "calibration '" + path + "'";
  try {
    if (j.value("format", "") != "qwen3-calibration" || j.value("version", 0) != kCalibrationFormatVersion)
      throw UsageError(where + " is not a qwen3-calibrate file of version " + std::to_string(kCalibrationFormatVersion));
    Calibration c;
    c.kind = j.at("kind").get<std::string>();
    c.device = j.value("device", "");
    c.measured = j.value("measured", "");
    for (const auto& [key, pts] : j.at("ops").items()) c.ops[key] = read_curve(pts, where + " ops." + key);
    if (j.contains("collectives")) {
      const auto& cj = j["collectives"];
      c.collectives_source = cj.value("source", "");
      c.collective_latency_s = cj.value("latency_s", 0.0);
      for (const auto& [kind, groups] : cj.at("busbw").items())
        for (const auto& [n, pts] : groups.items()) {
          const int group = std::atoi(n.c_str());
          if (group < 2 || std::to_string(group) != n)
            throw UsageError(where + ": collectives." + kind + " has a group size '" + n + "' (a count of GPUs, 2 or more)");
          c.collectives[kind][group] = read_curve(pts, where + " collectives." + kind + "." + n);
        }
    }
    const auto& h = j.at("host");
    c.d2h_bytes_per_s = h.at("d2h_bytes_per_s").get<double>();
    c.h2d_bytes_per_s = h.at("h2d_bytes_per_s").get<double>();
    c.cpu_adamw_elements_per_s = h.at("cpu_adamw_elements_per_s").get<double>();
    c.cpu_threads = h.at("cpu_threads").get<int>();
    c.sync_s = h.at("sync_s").get<double>();
    if (j.contains("in_step")) {
      c.in_step_source = j["in_step"].value("source", "");
      for (const auto& [group, factor] : j["in_step"].at("factors").items()) {
        if (!in_step_group_known(group))
          throw UsageError(where + ": in_step.factors." + group + " is not a known group (attention_fwd, "
                           "attention_bwd, gemm, other)");
        // A number (the first files: one step's factor, at every length) or [[tokens, factor], ...].
        auto curve = factor.is_number() ? Curve{{4096.0, factor.get<double>()}}
                                        : read_curve(factor, where + " in_step.factors." + group);
        for (const auto& [tokens, f] : curve)
          if (f <= 0) throw UsageError(where + ": in_step.factors." + group + " has a factor that is not positive");
        c.in_step[group] = std::move(curve);
      }
    }
    if (j.contains("overlap")) {  // the optimizer's share (the first files: one, beside 4,096 tokens); GEMMs' slowdown
      const auto& o = j["overlap"];
      if (o.contains("gemm_slowdown_by_sms_held"))
        c.gemm_slowdown_sms_held = read_curve(o["gemm_slowdown_by_sms_held"], where + " overlap.gemm_slowdown_by_sms_held");
      if (o.contains("optimizer_hidden_share_by_tokens"))
        c.optimizer_hidden = read_curve(o["optimizer_hidden_share_by_tokens"], where + " overlap.optimizer_hidden_share_by_tokens");
      else if (o.contains("optimizer_hidden_share"))
        c.optimizer_hidden = {{4096.0, o["optimizer_hidden_share"].get<double>()}};
    }
    const auto& m = j.at("memory");
    c.context_bytes = m.at("context_bytes").get<std::int64_t>();
    c.library_bytes = m.at("library_bytes").get<std::int64_t>();
    c.kernel_bytes = m.at("kernel_bytes").get<std::int64_t>();
    c.pinned_map_bytes_per_byte = m.at("pinned_map_bytes_per_byte").get<double>();
    c.path = path;
    return c;
  } catch (const json::exception& e) {
    throw UsageError(where + ": " + e.what());
  }
}

std::string calibration_json(const Calibration& c) {
  json ops = json::object();
  for (const auto& [k, curve] : c.ops) ops[k] = curve_json(curve);
  json j = {{"format", "qwen3-calibration"}, {"version", kCalibrationFormatVersion}, {"kind", c.kind},
            {"device", c.device}, {"measured", c.measured}, {"ops", ops},
            {"host", {{"d2h_bytes_per_s", c.d2h_bytes_per_s}, {"h2d_bytes_per_s", c.h2d_bytes_per_s},
                      {"cpu_adamw_elements_per_s", c.cpu_adamw_elements_per_s}, {"cpu_threads", c.cpu_threads},
                      {"sync_s", c.sync_s}}},
            {"memory", {{"context_bytes", c.context_bytes}, {"library_bytes", c.library_bytes},
                        {"kernel_bytes", c.kernel_bytes}, {"pinned_map_bytes_per_byte", c.pinned_map_bytes_per_byte}}}};
  if (!c.in_step.empty()) {
    json factors = json::object();
    for (const auto& [group, curve] : c.in_step) factors[group] = curve_json(curve);
    j["in_step"] = {{"source", c.in_step_source}, {"factors", factors}};
  }
  if (!c.optimizer_hidden.empty()) j["overlap"]["optimizer_hidden_share_by_tokens"] = curve_json(c.optimizer_hidden);
  if (!c.gemm_slowdown_sms_held.empty()) j["overlap"]["gemm_slowdown_by_sms_held"] = curve_json(c.gemm_slowdown_sms_held);
  if (!c.collectives.empty()) {
    json busbw = json::object();
    for (const auto& [kind, groups] : c.collectives)
      for (const auto& [n, curve] : groups) busbw[kind][std::to_string(n)] = curve_json(curve);
    j["collectives"] = {{"source", c.collectives_source}, {"latency_s", c.collective_latency_s}, {"busbw", busbw}};
  }
  return j.dump(1) + "\n";
}

bool in_step_group_known(const std::string& group) {
  for (const char* g : {"attention_fwd", "attention_bwd", "gemm", "other"})
    if (group == g) return true;
  return false;
}

std::optional<std::string> find_calibration(const std::string& kind) {
  const auto p = executable_dir() / "calibration" / (kind + ".json");
  std::error_code ec;
  if (!kind.empty() && std::filesystem::is_regular_file(p, ec)) return p.string();
  return std::nullopt;
}

CalibrationPricer::CalibrationPricer(const Calibration& c, int cores_per_rank, const Calibration* reference)
    : c_(c),
      reference_(reference),
      cast_width_(widest_common_cast(c, nullptr)),
      reference_cast_width_(reference ? widest_common_cast(*reference, nullptr) : 0),
      common_cast_width_(widest_common_cast(c, reference)),
      cpu_scale_(c.cpu_threads > 0 && cores_per_rank > 0
                            ? static_cast<double>(std::min(cores_per_rank, c.cpu_threads)) / c.cpu_threads
                            : 1.0) {}

// A curve's value at x: linear in log(x) between two points, the nearest point's value beyond them.
static double held_log_interpolation(const std::vector<std::pair<double, double>>& h, double x) {
  if (x <= h.front().first) return h.front().second;
  if (x >= h.back().first) return h.back().second;
  for (std::size_t i = 1; i < h.size(); ++i)
    if (x <= h[i].first) {
      const double f = std::log(x / h[i - 1].first) / std::log(h[i].first / h[i - 1].first);
      return h[i - 1].second + f * (h[i].second - h[i - 1].second);
    }
  return h.back().second;
}

// The in-step group of a kernel (Calibration::in_step).
static const char* in_step_group(OpKind k) {
  return k == OpKind::attention_fwd ? "attention_fwd" : k == OpKind::attention_bwd ? "attention_bwd" : is_gemm(k) ? "gemm" : "other";
}

double CalibrationPricer::compute(const OpShape& op) {
  used_.insert("kernels");
  auto it = c_.ops.find(op.key());
  std::optional<double> alone;
  // With --estimate-from, an FP8 kernel this card lacks comes from the other card's measurement of it before the
  // fallbacks below price it as another kernel of this card.
  if (it == c_.ops.end() && (alone = estimate(op))) {
    used_.insert(kEstimatedTerm);
    estimated_.insert(op.key());
  }
  if (!alone && it == c_.ops.end() && op.kind == OpKind::gemm_wgrad_set) {  // a file before 2026-12-06's sixth session
    it = c_.ops.find(OpShape{OpKind::gemm_wgrad, op.tokens, op.dims}.key());
    if (it != c_.ops.end()) used_.insert("written weight gradients");
  }
  if (!alone && it == c_.ops.end() && op.kind == OpKind::swiglu_fwd_fp8) {  // a file from before 2026-12-07's sixteenth
    it = c_.ops.find(OpShape{OpKind::swiglu_fwd, op.tokens, op.dims}.key());
    if (it != c_.ops.end()) used_.insert("FP8 SwiGLU forward");
  }
  if (!alone && it == c_.ops.end() && op.kind == OpKind::swiglu_bwd_fp8g) {  // … before its sixteenth session
    it = c_.ops.find(OpShape{OpKind::swiglu_bwd_fp8t, op.tokens, op.dims}.key());
    if (it != c_.ops.end()) used_.insert("FP8 SwiGLU backward writing its gradient");
  }
  if (!alone && it == c_.ops.end() && (op.kind == OpKind::swiglu_bwd_fp8t || op.kind == OpKind::swiglu_bwd_fp8g)) {
    it = c_.ops.find(OpShape{OpKind::swiglu_bwd, op.tokens, op.dims}.key());  // … before its fifteenth
    if (it != c_.ops.end()) used_.insert("FP8 SwiGLU backward");
  }
  bool along = false;
  if (!alone && it != c_.ops.end())
    alone = fp8_estimate_counterpart(op, cast_width_)
                ? fp8_kernel_time(c_, cast_width_, op, it->second, &along)
                : interpolate_curve(it->second, static_cast<double>(op.tokens), is_attention(op.kind) ? 2.0 : 1.0);
  if (along) used_.insert(kAlongTerm);
  if (!alone) {
    missing_.insert(op.key());
    return 0;
  }
  OpPrice price{op.key(), op.tokens, *alone, in_step_group(op.kind), 1.0, 0};
  const auto factor = c_.in_step.find(price.in_step_group);
  if (factor != c_.in_step.end()) {
    used_.insert("in-step factors");
    // The factor at the sequence's length: attention's tokens are its length; the other kernels' are the
    // micro-batch's rows, which for micro-batch 1 without context parallelism are the same.
    price.in_step_factor = held_log_interpolation(factor->second, static_cast<double>(op.tokens));
  }
  const double seconds = price.alone_s * price.in_step_factor;
  ++priced_.try_emplace({price.key, price.tokens}, std::move(price)).first->second.calls;
  return seconds;
}

std::optional<double> CalibrationPricer::estimate(const OpShape& op) {
  if (!reference_) return std::nullopt;
  const auto fp8 = reference_->ops.find(op.key());
  const auto counterpart = fp8_estimate_counterpart(op, common_cast_width_);
  if (fp8 == reference_->ops.end() || !counterpart) return std::nullopt;
  const auto here = c_.ops.find(counterpart->key), there = reference_->ops.find(counterpart->key);
  if (here == c_.ops.end() || there == reference_->ops.end()) return std::nullopt;
  bool along = false;
  const double t = fp8_kernel_time(*reference_, reference_cast_width_, op, fp8->second, &along);
  if (along) used_.insert(kAlongTerm);
  return t * interpolate_curve(here->second, counterpart->tokens, 1.0) /
         interpolate_curve(there->second, counterpart->tokens, 1.0);
}

std::vector<OpPrice> CalibrationPricer::priced() const {
  std::vector<OpPrice> out;
  for (const auto& [key, price] : priced_) out.push_back(price);
  return out;
}

double CalibrationPricer::optimizer_hidden_share(std::int64_t forward_tokens) {
  used_.insert("optimizer overlap");
  return c_.optimizer_hidden.empty() ? 1.0 : held_log_interpolation(c_.optimizer_hidden, static_cast<double>(forward_tokens));
}

double CalibrationPricer::gemm_slowdown_beside_collectives() {
  used_.insert("GEMMs beside collectives");
  return c_.gemm_slowdown_sms_held.empty() ? 1.0
                                           : held_log_interpolation(c_.gemm_slowdown_sms_held, kNcclSmsHeld);
}

double CalibrationPricer::collective(const CollOp& op) {
  if (op.group <= 1 || op.bytes <= 0) return 0;
  used_.insert("collectives");
  const auto kind = c_.collectives.find(coll_kind_name(op.kind));
  const auto curve = kind == c_.collectives.end() ? nullptr : [&]() -> const Curve* {
    const auto g = kind->second.find(op.group);
    return g == kind->second.end() ? nullptr : &g->second;
  }();
  if (!curve) {
    missing_.insert(collective_key(op));
    return 0;
  }
  // nccl-tests' bus bandwidth: time = bytes · factor / busbw, factor (n−1)/n for gathers and scatters, 2(n−1)/n for
  // all-reduce, 1 for a send/receive pair.
  const double n = op.group, bytes = static_cast<double>(op.bytes);
  const double factor = op.kind == CollKind::all_reduce ? 2 * (n - 1) / n : op.kind == CollKind::send_recv ? 1.0 : (n - 1) / n;
  const double busbw = interpolate_curve(*curve, bytes, 0.0);
  return c_.collective_latency_s + bytes * factor / busbw;
}

double CalibrationPricer::host(HostKind kind, double amount) {
  if (amount > 0) used_.insert(kind == HostKind::cpu_adamw ? "host AdamW" : "host copies");
  switch (kind) {
    case HostKind::copy_d2h: return amount / c_.d2h_bytes_per_s;
    case HostKind::copy_h2d: return amount / c_.h2d_bytes_per_s;
    case HostKind::cpu_adamw: return amount / (c_.cpu_adamw_elements_per_s * cpu_scale_);
  }
  return 0;
}

double RecordingPricer::compute(const OpShape& op) {
  auto& entry = ops.try_emplace(op.key(), op, std::set<std::int64_t>{}).first->second;
  entry.second.insert(op.tokens);
  return 0;
}

double RecordingPricer::collective(const CollOp& op) {
  if (op.group > 1) collectives.insert({coll_kind_name(op.kind), op.group});
  return 0;
}

// What each kind of term rests on: qwen3-calibrate's measurements on the card, or the published and assumed figures
// the calibration says it holds.
// reference, estimated: the card the estimated FP8 kernels come from (--estimate-from) and their keys.
std::vector<std::pair<std::string, std::string>> prediction_sources(const std::set<std::string>& used,
                                                                    const Calibration& c, const Calibration* reference,
                                                                    const std::set<std::string>& estimated) {
  const std::string here = "measured on " + c.kind + " (" + c.device + ") by qwen3-calibrate";
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* term : {"kernels", "written weight gradients", "FP8 SwiGLU forward",
                           "FP8 SwiGLU backward writing its gradient", "FP8 SwiGLU backward", kEstimatedTerm, kAlongTerm,
                           "in-step factors", "host copies", "host AdamW", "optimizer overlap",
                           "GEMMs beside collectives", "collectives"}) {
    if (!used.count(term)) continue;
    std::string source = here;
    if (std::string(term) == kEstimatedTerm)  // used only with a reference that priced at least one kernel
      source = "assumed: this card's bf16 counterpart of each (an FP8 GEMM's bf16 GEMM of the same shape; the "
               "casts', amaxes' and FP8-writing SwiGLUs' the fp32-to-bf16 cast of as many elements) × its "
               "FP8-over-bf16 ratio measured on " + reference->kind + " (" + reference->device + ", " +
               reference->path + "): " + std::to_string(estimated.size()) + " kernel shape" +
               (estimated.size() == 1 ? "" : "s") + ", e.g. " + *estimated.begin();
    if (std::string(term) == "in-step factors") source = "measured on " + c.kind + ": " + c.in_step_source;
    if (std::string(term) == "host AdamW") {  // a property of the host, not of the card (docs/studies/1xh100)
      char rate[64];
      std::snprintf(rate, sizeof rate, ": %.2f G elements/s on %d CPU threads", c.cpu_adamw_elements_per_s / 1e9,
                    c.cpu_threads);
      source += rate + std::string("; the calibrating host's CPU, not the card's: other hosts differ by several times "
                                   "(`qwen3-calibrate --base <this file> --models tiny` measures this host's in 20 s)");
    }
    if (std::string(term) == kAlongTerm)
      source = "assumed: outside the token counts measured, as its bf16 counterpart's measured curve runs from the "
               "nearest (an FP8 GEMM's bf16 GEMM of the same shape; a cast's the fp32-to-bf16 cast of as many elements)";
    if (std::string(term) == "written weight gradients")  // the first micro-batch's, β = 0 (step_model.h)
      source = "assumed: as long as the accumulating GEMM of the shape (this calibration predates their measurement; "
               "on an H100 at 1,024 tokens they take 0.6 of it)";
    if (std::string(term) == "FP8 SwiGLU forward")  // swiglu_fwd_fp8 (step_model.h)
      source = "assumed: as long as the bf16 SwiGLU forward of the shape, which writes its product in 2 bytes where the "
               "FP8 one writes 1 (this calibration predates its measurement)";
    if (std::string(term) == "FP8 SwiGLU backward writing its gradient")  // swiglu_bwd_fp8g (step_model.h)
      source = "assumed: as long as the FP8 SwiGLU backward of the shape that writes its gradient in bf16, as many bytes "
               "(this calibration predates its measurement)";
    if (std::string(term) == "FP8 SwiGLU backward")  // swiglu_bwd_fp8t (step_model.h)
      source = "assumed: as long as the bf16 SwiGLU backward of the shape, which writes its product in 2 bytes where "
               "the FP8 one writes 1 (this calibration predates its measurement)";
    if (std::string(term) == "optimizer overlap" && c.optimizer_hidden.empty())
      source = "assumed: wholly hidden behind the next forward (this calibration predates its measurement)";
    if (std::string(term) == "GEMMs beside collectives")
      source = c.gemm_slowdown_sms_held.empty()
                   ? "assumed: not slowed (this calibration predates the measurement)"
                   : here + ", with " + std::to_string(static_cast<int>(kNcclSmsHeld)) +
                         " SMs held (assumed: NCCL's 16 channels, a block each, on an NVSwitch node with NVLS off)";
    if (std::string(term) == "collectives")
      source = c.collectives_source.empty() ? "assumed (the calibration names no source)"
               : c.collectives_source.rfind("measured", 0) == 0 || c.collectives_source.rfind("published", 0) == 0
                   ? c.collectives_source
                   : "assumed: " + c.collectives_source;
    out.emplace_back(term, source);
  }
  return out;
}

StepPrediction predict_step(const PlannedRun& in, const Calibration& c, int cores_per_rank,
                            const Calibration* reference) {
  CalibrationPricer pricer(c, cores_per_rank, reference);
  StepPrediction p;
  p.time = walk_step(in, pricer);
  p.missing.assign(pricer.missing().begin(), pricer.missing().end());
  p.operations = pricer.priced();
  p.estimated.assign(pricer.estimated().begin(), pricer.estimated().end());
  p.sources = prediction_sources(pricer.used(), c, reference, pricer.estimated());
  if (!p.priced()) {  // an operation priced 0: no step time at all, rather than one that is too short
    p.time = StepTime{};
    return p;
  }
  const double sequences = static_cast<double>(in.micro_batch * p.time.micro_batches * in.dp);
  const double world = static_cast<double>(in.tp) * in.pp * std::max(1, in.cp) * in.dp;
  if (p.time.step > 0) {
    p.tokens_per_s = sequences * static_cast<double>(in.seq_len) / p.time.step;
    p.mfu = sequences * in.model.training_flops_per_sequence(in.seq_len) / p.time.step / world /
            (kPeakTflopsPerDevice * 1e12);
  }
  return p;
}

UnpricedAdvice unpriced_advice(const PlannedRun& in, const StepPrediction& p, const Calibration& c, bool fits) {
  UnpricedAdvice a;
  if (p.priced()) return a;
  std::vector<std::string> collectives;
  bool kernels = false;
  for (const auto& m : p.missing) {
    if (is_collective_key(m)) collectives.push_back(m);
    else kernels = true;
  }
  const auto& presets = preset_names();
  const bool preset = std::find(presets.begin(), presets.end(), in.model.name) != presets.end();
  if (kernels && preset && fits)
    a.command = "qwen3-calibrate --models " + in.model.name + " --lengths " + std::to_string(in.seq_len) + " --tp " +
                std::to_string(in.tp) + (c.path.empty() ? "" : " --base " + shell_word(c.path)) + " --out " +
                shell_word(c.kind + "-" + in.model.name + ".json");
  if (!a.command.empty()) a.adopt = "commit it as calibration/" + c.kind + ".json: cmake copies it beside the executables";
  a.text = "no step-time prediction: " + std::to_string(p.missing.size()) + " operation" +
           (p.missing.size() == 1 ? " " : "s ") + "of this run " + (p.missing.size() == 1 ? "is" : "are") +
           " not in calibration " + c.kind + (c.path.empty() ? "" : " (" + c.path + ")") + " (e.g. " +
           p.missing.front() + ")";
  if (!fits) {
    a.text += "; the plan does not fit, so there is no run to predict: measure them only for a layout that fits";
    return a;
  }
  if (kernels) {
    if (!a.command.empty())
      a.text += "; measure them with `" + a.command + "` on " + (c.device.empty() ? c.kind : c.device) +
                ", then pass --calibration " + shell_word(c.kind + "-" + in.model.name + ".json") + " (or " + a.adopt + ")";
    else
      a.text += "; qwen3-calibrate measures presets only (--models): this model's kernels need a preset of its shapes";
  }
  if (!collectives.empty()) {
    a.text += std::string(kernels ? "; and" : ";") + " the calibration's `collectives` section lacks";
    for (std::size_t i = 0; i < collectives.size(); ++i) a.text += (i ? ", " : " ") + collectives[i];
    a.text += " (qwen3-calibrate does not measure collectives: add nccl-tests bus bandwidths for them, docs/cli.md)";
  }
  return a;
}

RecordingPricer record_case(const CalibrationCase& k) {
  PlannedRun in;
  in.model = model_preset(k.model);
  in.seq_len = k.seq_len;
  in.tp = k.tp;
  RecordingPricer r;
  for (int precision : {0, 1, 2}) {  // bf16, fp8, fp8 with delayed scaling (GEMMs, casts and producers of their own)
    in.fp8 = precision > 0, in.fp8_delayed = precision == 2, in.pp = 1;
    walk_step(in, r);
    in.pp = 2;
    try {
      walk_step(in, r);
    } catch (const UsageError&) {  // too few layers for two stages: no pipeline, nothing more to run
    }
  }
  return r;
}

std::vector<CalibrationCase> default_calibration_cases(std::int64_t device_bytes) {
  std::vector<CalibrationCase> out;
  for (const auto& name : preset_names())
    for (int tp : kCalibrationTensorParallel)
      for (std::int64_t len : kCalibrationLengths) {
        PlannedRun in;
        in.model = model_preset(name);
        in.seq_len = len;
        in.tp = tp;
        try {
          record_case({name, tp, len});  // tp_dims and the sequence rules, as the calibration's walk applies them
        } catch (const UsageError&) {
          continue;
        }
        // Held by the card at some memory policy with the layers split over up to 8 pipeline stages (one node): a
        // model too large for one GPU at this tp still runs its kernels as a pipeline's stages do.
        bool held = false;
        for (int pp : {1, 2, 4, 8}) {
          try {
            in.pp = pp;
            in.micro_batches = pp;
            MemoryRequest auto_policy;
            auto_policy.recompute = "auto";
            in.recompute = choose_memory_policy(auto_policy, in, device_bytes, 0);
            if (plan_worst_stage(in).second.peak() <= device_bytes) held = true;
          } catch (const UsageError&) {  // the engine refuses this many stages for the model: try the next
          }
          if (held) break;
        }
        if (held) out.push_back({name, tp, len});
      }
  return out;
}

std::vector<MemoryItem> runtime_reserve(const PlannedRun& in, const Calibration* c) {
  if (!c) return {};
  std::vector<MemoryItem> r{{"runtime", "CUDA context (measured)", c->context_bytes},
                            {"runtime", "cuBLASLt and cuDNN handles, streams and events (measured)", c->library_bytes},
                            {"runtime", "kernels loaded, cuDNN plans (measured)", c->kernel_bytes}};
  const int cp = std::max(1, in.cp), shards = in.shard_optimizer ? in.dp * cp : in.dp;
  const int kv_replicas = in.tp > in.model.num_kv_heads ? static_cast<int>(in.tp / in.model.num_kv_heads) : 1;
  const int communicators = (in.tp > 1) + (cp > 1) + (shards > 1 || in.dp > 1) + (in.pp > 1 ? 2 : 0) + (kv_replicas > 1);
  if (communicators > 0)
    r.push_back({"runtime", std::to_string(communicators) + " NCCL communicators (estimated from NCCL's default sizes)",
                 communicators * nccl_communicator_bytes()});
  return r;
}

void apply_calibration(PlannedRun& in, const Calibration* c) {
  in.reserve = runtime_reserve(in, c);
  in.pinned_map_rate = c ? c->pinned_map_bytes_per_byte : 0.0;
}

std::string gpu_kind_of(std::int64_t device_bytes) {
  for (const auto& g : known_gpus())  // each entry is the lowest size seen; drivers add a few MiB
    if (device_bytes >= g.bytes && device_bytes < g.bytes + (g.bytes >> 6)) return g.name;
  return "";
}

}  // namespace qwen3
