// A GPU kind's measured costs, and the step-time prediction built on them. qwen3-calibrate measures on a node, one
// operation at a time (never a training run): each kernel of the step's inventory (train/step_model.h) at the token
// counts it runs at, host↔device copies, the CPU's AdamW, a host round trip, the memory the CUDA runtime and
// libraries hold outside the engine's allocator, and NCCL collectives by size and group where several GPUs are there.
// The committed calibrations live in calibration/<kind>.json (kind as --device-memory names it: h200, h100-80gb).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "train/memory_plan.h"
#include "train/step_model.h"

namespace qwen3 {

inline constexpr int kCalibrationFormatVersion = 1;

struct Calibration {
  std::string kind;    // "h200"
  std::string device;  // "NVIDIA H200" as CUDA names it
  std::string measured;  // where and when: date, commit, host, driver (free text for people)
  // Each kernel's seconds per call by tokens (attention: sequence length; adamw, sum_squares: elements), sorted.
  std::map<std::string, std::vector<std::pair<double, double>>> ops;
  // Collectives as nccl-tests reports them: per kind and group size, bus bandwidth (bytes/s) by whole-buffer bytes,
  // sorted; `collectives_source` says whether measured here or taken from published figures (and which).
  std::map<std::string, std::map<int, std::vector<std::pair<double, double>>>> collectives;
  std::string collectives_source;
  double collective_latency_s = 0;  // added to every collective
  double d2h_bytes_per_s = 0, h2d_bytes_per_s = 0;  // pinned memory, one direction at a time
  double cpu_adamw_elements_per_s = 0;              // cpu::adamw_step_f32 on cpu_threads threads
  int cpu_threads = 0;
  double sync_s = 0;  // a host round trip: a read-back of a device scalar behind an idle stream
  // The share of AdamW's device time hidden beside a layer's forward of so many tokens on another stream
  // (OpBench::optimizer_hidden_share; calibrations before 2026-12-06's third session: beside gate|up GEMMs only),
  // sorted by tokens; empty: not measured (older calibrations), then assumed wholly hidden. A file of the first
  // measurement holds one share, beside 4,096 tokens.
  std::vector<std::pair<double, double>> optimizer_hidden;
  // A GEMM's time with so many SMs held by another stream's kernel over its time alone, by the SMs held
  // (OpBench::gemm_slowdown_with_sms_held); empty: not measured, then no slowdown is assumed.
  std::vector<std::pair<double, double>> gemm_slowdown_sms_held;
  // How much slower each group of kernels runs inside a training step than alone (the engine's op timer in steps of
  // some lengths against these curves: tools/bench/op_times_vs_calibration.py --write), by group — "attention_fwd",
  // "attention_bwd", "gemm", "other" — as a curve over the sequence's tokens (interpolated in log(tokens), held
  // beyond); a group absent is priced as measured alone. `in_step_source` says which steps and where.
  std::map<std::string, std::vector<std::pair<double, double>>> in_step;
  std::string in_step_source;
  // Device memory outside the engine's allocator on one GPU, measured: the CUDA context, the cuBLASLt and cuDNN
  // handles, and what running every kernel adds (lazily loaded modules, cuDNN's plans).
  // library_bytes also holds the engine's streams and events.
  std::int64_t context_bytes = 0, library_bytes = 0, kernel_bytes = 0;
  double pinned_map_bytes_per_byte = 0;  // device bytes (page tables) per byte of pinned host memory
  std::string path;  // the file it was read from (load_calibration; not written to the file)
};

// The SMs a collective's NCCL kernel holds while it runs beside a GEMM: one block per channel, and 16 channels is what
// NCCL sets up on an 8-GPU NVSwitch node with NVLink SHARP off ("16 coll channels, 0 nvls channels" in the log of
// github.com/NVIDIA/nccl/issues/892, 8 x H800). Assumed for every group size: not measured (no multi-GPU host lent).
inline constexpr double kNcclSmsHeld = 16;
// Whether `group` names a group of Calibration::in_step.
bool in_step_group_known(const std::string& group);
// Reads calibration JSON (qwen3-calibrate's output). Throws UsageError naming the file and the problem.
Calibration load_calibration(const std::string& path);
std::string calibration_json(const Calibration& c);
// calibration/<kind>.json beside the executables (build/bin/calibration, copied from the source tree), or nothing.
std::optional<std::string> find_calibration(const std::string& kind);
// y at x on a sorted curve: log-log between points; below the first point its value (a kernel's floor); beyond the
// last, x^power scaling from it.
double interpolate_curve(const std::vector<std::pair<double, double>>& c, double x, double power);

// One kernel shape at one token count as a prediction priced it: its time alone (the calibration's curve there, as
// qwen3-calibrate measured it), its in-step group and that group's factor at those tokens (1 without one); priced:
// alone_s × in_step_factor per call.
struct OpPrice {
  std::string key;  // OpShape::key(): "gemm_fwd 1024x4096"
  std::int64_t tokens = 0;
  double alone_s = 0;
  std::string in_step_group;  // attention_fwd, attention_bwd, gemm, other
  double in_step_factor = 1;
  // Calls the walk priced: one micro-batch's on each pipeline stage (recomputation included), the optimizer's once.
  int calls = 0;
};

// Prices operations from a calibration: interpolates each kernel between its measured token counts (log-log;
// beyond the last: linear in tokens, quadratic for attention; below the first: its value; an FP8 kernel outside its
// points as its bf16 counterpart's curve runs, where that was measured further), collectives by bus bandwidth, host
// work by rate.
// Operations the calibration lacks are priced 0 and listed in missing().
class CalibrationPricer : public OpPricer {
 public:
  // cores_per_rank: the threads the host optimizer gets in the run (the CPU's AdamW rate scales with it).
  // reference (--estimate-from): another card's calibration that prices the FP8 kernels c lacks by estimate —
  // c's bf16 counterpart × the reference's FP8-over-bf16 ratio (fp8_estimate_counterpart); null: none.
  CalibrationPricer(const Calibration& c, int cores_per_rank, const Calibration* reference = nullptr);
  double compute(const OpShape& op) override;
  double collective(const CollOp& op) override;
  double host(HostKind kind, double amount) override;
  double sync() override { return c_.sync_s; }
  double optimizer_hidden_share(std::int64_t forward_tokens) override;
  double gemm_slowdown_beside_collectives() override;
  const std::set<std::string>& missing() const { return missing_; }
  // Every kernel shape and token count priced so far, by key and tokens.
  std::vector<OpPrice> priced() const;
  // The kinds of term the walk priced ("kernels", "host AdamW", …: prediction_sources lists every one and says what
  // it rests on).
  const std::set<std::string>& used() const { return used_; }
  // The kernel keys priced by estimate from the reference calibration.
  const std::set<std::string>& estimated() const { return estimated_; }

 private:
  // An FP8 kernel c_ lacks, priced from reference_ (seconds alone), or nothing when either card lacks a curve it needs.
  std::optional<double> estimate(const OpShape& op);
  const Calibration& c_;
  const Calibration* reference_;
  // The widest fp32-to-bf16 casts (fp8_estimate_counterpart): c's, the reference's, and the widest both measured.
  std::int64_t cast_width_, reference_cast_width_, common_cast_width_;
  double cpu_scale_;
  std::set<std::string> missing_, used_, estimated_;
  std::map<std::pair<std::string, std::int64_t>, OpPrice> priced_;
};

// Records the operations a layout runs (every kernel key with its token counts, every collective kind and group),
// pricing nothing: qwen3-calibrate's list of what to measure.
class RecordingPricer : public OpPricer {
 public:
  double compute(const OpShape& op) override;
  double collective(const CollOp& op) override;
  double host(HostKind, double) override { return 0; }
  double sync() override { return 0; }
  // key → (a representative shape, token counts)
  std::map<std::string, std::pair<OpShape, std::set<std::int64_t>>> ops;
  std::set<std::pair<std::string, int>> collectives;
};

// The prediction for a layout: step time, tokens per second over all GPUs, MFU, and the step's parts. A layout with
// an operation the calibration lacks (a kernel shape, a collective's kind and group) has no prediction: a step with
// an operation priced 0 is no step time (issue 28 item 6), so `time`, `tokens_per_s` and `mfu` are then all 0 and
// `missing` says what to measure.
struct StepPrediction {
  StepTime time;
  std::vector<OpPrice> operations;  // every kernel shape and token count priced, by key and tokens
  double tokens_per_s = 0, mfu = 0;
  std::vector<std::string> missing;  // operations the calibration lacks, sorted: kernel keys, "all_gather over 8 GPUs"
  // What each kind of term the prediction used rests on (issue 28 item 5), in a fixed order: {term, source}, the
  // source starting "measured on" (this card, by qwen3-calibrate), "published" or "assumed".
  std::vector<std::pair<std::string, std::string>> sources;
  std::vector<std::string> estimated;  // kernel keys priced by estimate from another card (--estimate-from), sorted
  bool priced() const { return missing.empty(); }
};
// global tokens per step = micro_batch × micro_batches × dp × seq_len; world = tp × pp × cp × dp GPUs.
// reference: as CalibrationPricer takes it.
StepPrediction predict_step(const PlannedRun& in, const Calibration& c, int cores_per_rank,
                            const Calibration* reference = nullptr);


// What to do about an unpriced prediction (p.missing not empty). command: the qwen3-calibrate line that measures this
// layout's kernels onto the calibration (--models/--lengths/--tp of the layout, --base the file it was read from), or
// "" when only collectives are missing (qwen3-calibrate does not measure collectives), the model is no preset, or the
// plan does not fit (fits false: no run of it to predict, so nothing worth a GPU's time to measure).
// adopt (with a command): how its output becomes the card's calibration ("commit it as calibration/h200.json: …").
// text: "no step-time prediction: N operations of this run are not in calibration h200 (e.g. …); measure them with
// `…`", and for collectives the calibration's section to add.
struct UnpricedAdvice {
  std::string command, adopt, text;
};
UnpricedAdvice unpriced_advice(const PlannedRun& in, const StepPrediction& p, const Calibration& c, bool fits = true);

// One model at one tensor-parallel size and length: a layout whose kernels qwen3-calibrate measures.
struct CalibrationCase {
  std::string model;
  int tp = 1;
  std::int64_t seq_len = 0;
};
// qwen3-calibrate's default measurement: every preset (config/model_config.h preset_names) at each of the lengths and
// tensor-parallel sizes below that the engine accepts (tp_dims, the sequence rules) and that the memory planner fits
// on device_bytes at some memory policy (--recompute auto with the optimizer offloaded as far as needed; micro-batch
// 1) as one GPU or as the worst stage of a pipeline of 2, 4 or 8 stages, in preset, tp, length order. The kernels'
// keys depend on the model and tp only, so every preset and tp the card can hold is covered; the lengths give the
// token counts the curves interpolate.
inline const std::vector<std::int64_t> kCalibrationLengths = {1024, 4096, 8192, 16384, 32768, 131072};
inline const std::vector<int> kCalibrationTensorParallel = {1, 2, 4, 8};
std::vector<CalibrationCase> default_calibration_cases(std::int64_t device_bytes);
// Every kernel a step of the case runs on any rank, in bf16 and in fp8 (--precision): one stage (pp 1) and, where the
// model splits, the stages of a pipeline (a stage before the last casts the gradient it receives). Throws UsageError for a case the engine refuses.
RecordingPricer record_case(const CalibrationCase& k);

// Device bytes a rank needs beyond the engine's allocator: the calibration's measured context, libraries and
// kernels, plus NCCL's buffers for each communicator the layout creates (estimated from NCCL's default sizes:
// nccl_communicator_bytes). Without a calibration: empty (the planner's flat kRuntimeReserveBytes).
std::vector<MemoryItem> runtime_reserve(const PlannedRun& in, const Calibration* c);
// Sets in.reserve (runtime_reserve) and in.pinned_map_rate from the calibration (nothing without one).
void apply_calibration(PlannedRun& in, const Calibration* c);
// The GPU kind of known_gpus() whose memory is exactly device_bytes (what CUDA reports), or "".
std::string gpu_kind_of(std::int64_t device_bytes);

}  // namespace qwen3
