// The step's operation inventory (train/step_model.h) and the prediction from a calibration (train/calibration.h):
// the walk counts the engine's kernels, recomputation and pipelining as the engine runs them; interpolation, the
// throughput arithmetic, the runtime reserve and the calibration file's checks. On the GPU: every kernel of a step is
// measured through the engine's own code (CudaOpBench).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "model/cpu_qwen3.h"
#include "model/init.h"
#include "core/error.h"
#include "train/calibration.h"
#include "train/fp8_estimate.h"
#include "train/step_model.h"
#include "model/tensor_parallel.h"
#include "train/buffer_table.h"
#include "cli_runner.h"
#ifdef QWEN3_HAVE_CUDA
#include "cuda_test_util.h"
#include "io/dataset.h"
#include "train/cuda_engine/op_bench.h"
#endif

using namespace qwen3;

namespace {

// Prices every kernel call 1 and counts calls per kind; collectives, host work and syncs cost nothing unless asked.
struct CountingPricer : OpPricer {
  std::map<OpKind, int> calls;
  std::map<CollKind, int> colls;
  int amax_reductions = 0;  // all-reduces of at most 16 bytes: --precision fp8's amaxes
  double coll_cost = 0;
  double compute(const OpShape& op) override {
    ++calls[op.kind];
    return 1;
  }
  double collective(const CollOp& op) override {
    ++colls[op.kind];
    amax_reductions += op.kind == CollKind::all_reduce && op.bytes <= 16;
    return coll_cost;
  }
  double host(HostKind, double) override { return 0; }
  double sync() override { return 0; }
};

PlannedRun input(const std::string& model, std::int64_t len, int tp = 1, int pp = 1) {
  PlannedRun in;
  in.model = model_preset(model);
  in.seq_len = len;
  in.tp = tp, in.pp = pp;
  in.micro_batches = 4;
  return in;
}

// One layer's kernels in the engine (train/cuda/qwen3_blocks.cpp): forward 2 norms, 4 GEMMs, q and k norm+RoPE,
// attention, SwiGLU; backward 4 data and 4 weight GEMMs, SwiGLU, attention, q and k norm+RoPE, 2 norms.
constexpr int kLayerForward = 10, kLayerBackward = 14;

}  // namespace

TEST(StepModel, CountsTheEnginesKernelsPerLayerAndHead) {
  PlannedRun in = input("0.6B", 4096);
  CountingPricer p;
  const StepTime t = walk_step(in, p);
  const int L = static_cast<int>(in.model.num_layers);
  // Head at 4096 tokens (one logit chunk): final norm, GEMM forward, loss, data and weight GEMMs, norm backward;
  // embedding forward and backward. Per micro-batch, then the gradient norm and AdamW once.
  const int head = 6, embed = 2;
  EXPECT_DOUBLE_EQ(t.forward + t.backward, L * (kLayerForward + kLayerBackward) + head + embed);
  // The walk prices the first micro-batch (it writes the weight gradients) and one of the other three (they add to
  // them), then weighs them 1 : 3.
  EXPECT_EQ(p.calls[OpKind::attention_fwd], 2 * L);
  EXPECT_EQ(p.calls[OpKind::gemm_wgrad_set], 4 * L + 1);
  EXPECT_EQ(p.calls[OpKind::gemm_wgrad], 4 * L + 1);
  EXPECT_EQ(p.calls[OpKind::adamw], 1);
  EXPECT_EQ(p.calls[OpKind::sum_squares], 1);
  EXPECT_TRUE(p.colls.empty());  // one GPU: no collective
  EXPECT_DOUBLE_EQ(t.step, 4 * (t.forward + t.backward) + t.optimizer);
}

// --precision fp8 (train/cuda_engine/linears.cpp): each of a layer's four forward GEMMs is FP8 after a cast of its
// input; each backward has 4 output-gradient casts (both copies), 4 FP8 data GEMMs, 3 transposed input casts (the
// SwiGLU backward writes down's, swiglu_bwd_fp8t) and 4 FP8 weight GEMMs; the head stays bf16; once per step each
// layer's four weights are cast (amax and both copies; one layer's priced, times the layers). Amax passes of their own:
// the o input (cuDNN's output) and the q|k|v gradient in every layer, and the down gradient of the stage's top layer
// (from the head); the other tensors' amaxes come with the kernels that write them. At tp 2 the amaxes of split tensors
// and of those taken by their producers (this rank's tokens under sequence parallelism) are max-reduced (4 bytes): all
// 4 inputs and 4 gradients per layer and micro-batch but the top layer's down gradient, and once per step each layer's
// four weights together.
TEST(StepModel, Fp8PricesTheCastsAndTheFp8GemmsOfEveryLinearLayerAndKeepsTheHeadBf16) {
  for (int tp : {1, 2}) {
    PlannedRun in = input("0.6B", 4096, tp);
    in.fp8 = true;
    CountingPricer p;
    walk_step(in, p);
    const int L = static_cast<int>(in.model.num_layers), walks = 2;  // the first micro-batch and one of the others
    EXPECT_EQ(p.calls[OpKind::gemm8_fwd], walks * 4 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::gemm_fwd], walks) << tp;  // the output projection
    EXPECT_EQ(p.calls[OpKind::gemm8_dgrad_f32] + p.calls[OpKind::gemm8_dgrad_bf16], walks * 4 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::gemm8_wgrad_set], 4 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::gemm8_wgrad], 4 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::gemm_wgrad_set] + p.calls[OpKind::gemm_wgrad], walks) << tp;  // the output projection's
    EXPECT_EQ(p.calls[OpKind::fp8_cast], walks * 4 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::fp8_cast_t], walks * 3 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::swiglu_bwd_fp8t], walks * L) << tp;
    EXPECT_EQ(p.calls[OpKind::swiglu_bwd], 0) << tp;
    // Gradients, and the weights: each layer's four, once per step.
    EXPECT_EQ(p.calls[OpKind::fp8_cast_both], walks * 4 * L + 4 * L) << tp;
    EXPECT_EQ(p.calls[OpKind::fp8_amax], walks * (2 * L + 1) + 4 * L) << tp;
    EXPECT_EQ(p.amax_reductions, tp == 1 ? 0 : walks * (8 * L - 1) + L) << tp;
    // Cast per layer: each layer's row-major copies before its forward and transposed ones before its backward, in
    // every micro-batch; none once per step.
    in.recompute.fp8_weights_per_layer = true;
    CountingPricer q;
    walk_step(in, q);
    EXPECT_EQ(q.calls[OpKind::fp8_cast], walks * 4 * L + walks * 4 * L) << tp;      // inputs, and the weights
    EXPECT_EQ(q.calls[OpKind::fp8_cast_t], walks * 3 * L + walks * 4 * L) << tp;    // inputs again, and the weights
    EXPECT_EQ(q.calls[OpKind::fp8_cast_both], walks * 4 * L) << tp;                 // gradients only
  }
}

TEST(StepModel, RecomputationAddsTheForwardItRepeats) {
  PlannedRun in = input("1.7B", 2048);
  CountingPricer none, full, selective, first4;
  const StepTime base = walk_step(in, none);
  in.recompute.mode = Recompute::full;
  const StepTime f = walk_step(in, full);
  EXPECT_DOUBLE_EQ(f.recompute, in.model.num_layers * kLayerForward);
  EXPECT_DOUBLE_EQ(f.backward - base.backward, f.recompute);
  in.recompute.num_layers = 4;
  EXPECT_DOUBLE_EQ(walk_step(in, first4).recompute, 4 * kLayerForward);
  in.recompute = {Recompute::selective};
  EXPECT_DOUBLE_EQ(walk_step(in, selective).recompute, in.model.num_layers * 4);  // 2 norms, q and k norm+RoPE
}

TEST(StepModel, LongSequencesSplitTheHeadIntoLogitChunks) {
  CountingPricer p;
  PlannedRun in = input("0.6B", 131072);
  in.micro_batches = 1;
  walk_step(in, p);
  const int chunks = p.calls[OpKind::cross_entropy];
  EXPECT_GT(chunks, 1);
  // The one micro-batch writes the layers' weight gradients and the head's with its first chunk; the later chunks add.
  EXPECT_EQ(p.calls[OpKind::gemm_wgrad_set], 4 * 28 + 1);
  EXPECT_EQ(p.calls[OpKind::gemm_wgrad], chunks - 1);
}

// Without pipeline stages a step's first micro-batch writes the GEMM-written weight gradients (β = 0, no read of the
// fp32 gradient: param_state.cpp), the others add to them; a pipeline stage zeroes its gradients and always adds. With
// a written weight gradient priced 0.5 and every other kernel 1, the step is shorter by 0.5 per written GEMM (4 a
// layer, the head's 1), once per step whatever the micro-batches, and not at all with two stages.
TEST(StepModel, TheStepsFirstMicroBatchWritesTheWeightGradients) {
  struct WritePricer : CountingPricer {
    double compute(const OpShape& op) override { return CountingPricer::compute(op) * (op.kind == OpKind::gemm_wgrad_set ? 0.5 : 1.0); }
  };
  for (std::int64_t m : {1, 4}) {
    PlannedRun in = input("0.6B", 4096);
    in.micro_batches = m;
    CountingPricer adds;
    WritePricer writes;
    const double saved = walk_step(in, adds).step - walk_step(in, writes).step;
    EXPECT_NEAR(saved, 0.5 * (4 * 28 + 1), 1e-9) << m << " micro-batches";
  }
  PlannedRun pipeline = input("0.6B", 4096, 1, 2);
  WritePricer stages;
  walk_step(pipeline, stages);
  EXPECT_EQ(stages.calls[OpKind::gemm_wgrad_set], 0);
  EXPECT_GT(stages.calls[OpKind::gemm_wgrad], 0);
}

TEST(StepModel, TensorParallelForwardCollectivesAreExposedAndTheBackwardsHidden) {
  PlannedRun in = input("1.7B", 4096, 2);
  CountingPricer p;
  p.coll_cost = 0.5;  // shorter than one layer's two weight GEMMs (priced 1 each): hidden behind them
  const StepTime t = walk_step(in, p);
  const int L = static_cast<int>(in.model.num_layers);
  // Forward per layer: two all-gathers, two reduce-scatters (+ the residual adds); head: the norm's gather and 3
  // loss all-reduces, its backward's reduce-scatter; embedding: a reduce-scatter forward, an all-gather backward; the
  // backward's first gather.
  EXPECT_DOUBLE_EQ(t.exposed_comm, 0.5 * (4 * L + 1 + 3 + 1 + 1 + 1 + 1));
  EXPECT_EQ(p.calls[OpKind::add_bf16], 2 * 2 * L);  // two walked micro-batches (the first and one of the rest)
}

TEST(StepModel, PipelineAddsTheOtherStagesOncePerStep) {
  PlannedRun in = input("1.7B", 4096, 1, 2);
  in.stage_layers = {14, 14};
  CountingPricer p;
  const StepTime t = walk_step(in, p);
  const double per_layer = kLayerForward + kLayerBackward;
  const double first = 14 * per_layer + 3, last = 14 * per_layer + 6;  // embedding and the received cast / head
  EXPECT_DOUBLE_EQ(t.forward + t.backward, last);
  // 1F1B with free transfers: the slowest stage's m passes and, around them, one forward and one backward of the other
  // stage (the first micro-batch's forward before the last stage can start, the last one's backward after it ends).
  EXPECT_DOUBLE_EQ(t.pipeline, first);
  EXPECT_DOUBLE_EQ(t.step, 4 * last + first + t.optimizer);
}

// The engine's 1F1B (pipeline_run.cpp) simulated: blocking exchanges, a round trip after every operation.
TEST(StepModel, PipelineMakespanFollowsTheEnginesSchedule) {
  // Equal stages, free transfers: (m + p − 1)(f + b), 1F1B's textbook length.
  EXPECT_DOUBLE_EQ(pipeline_makespan({1, 1, 1, 1}, {2, 2, 2, 2}, 8, 0, 0, 0), (8 + 4 - 1) * 3.0);
  // Two stages, one micro-batch: F on stage 0, its activation across (a), F and B on stage 1, the gradient back (g),
  // B on stage 0 — every step of it on the critical path; and a round trip (r) after each operation on that path
  // (6 of the 8: stage 0's F, its receive of the gradient and B; stage 1's receive, F and B).
  const double f = 1, b = 2, a = 0.25, g = 0.5, r = 0.125;
  EXPECT_DOUBLE_EQ(pipeline_makespan({f, f}, {b, b}, 1, a, g, 0), 2 * f + 2 * b + a + g);
  EXPECT_DOUBLE_EQ(pipeline_makespan({f, f}, {b, b}, 1, a, g, r), 2 * f + 2 * b + a + g + 6 * r);
  // Slower middle stages pace the others: their m passes, plus at least the first stage's forward before and its
  // backward after them; the transfers between them cost no more than once per micro-batch each way.
  const double slow = pipeline_makespan({1, 1.5, 1.5, 1}, {2, 3, 3, 2}, 32, 0.01, 0.02, 0);
  EXPECT_GE(slow, 32 * 4.5 + 3);
  EXPECT_LE(slow, 32 * 4.5 + 3 + 4.5 + 3 + (32 + 3) * 2 * (0.01 + 0.02));
}

TEST(Calibration, InterpolatesLogLogAndExtrapolatesLinearlyOrQuadratically) {
  Calibration c;
  c.kind = "test";
  c.ops["gemm_fwd 1024x4096"] = {{1024, 1e-4}, {4096, 4e-4}};
  c.ops["attention_fwd 16/8/128"] = {{1024, 1e-4}, {4096, 1.6e-3}};
  CalibrationPricer p(c, 1);
  EXPECT_NEAR(p.compute({OpKind::gemm_fwd, 2048, {1024, 4096, 0}}), 2e-4, 1e-12);
  EXPECT_NEAR(p.compute({OpKind::gemm_fwd, 8192, {1024, 4096, 0}}), 8e-4, 1e-12);
  EXPECT_NEAR(p.compute({OpKind::gemm_fwd, 512, {1024, 4096, 0}}), 1e-4, 1e-12);  // below: the smallest's time
  EXPECT_NEAR(p.compute({OpKind::attention_fwd, 2048, {16, 8, 128}}), 4e-4, 1e-12);
  EXPECT_NEAR(p.compute({OpKind::attention_fwd, 8192, {16, 8, 128}}), 6.4e-3, 1e-12);
  EXPECT_EQ(p.compute({OpKind::gemm_fwd, 2048, {1024, 1024, 0}}), 0);
  ASSERT_EQ(p.missing().size(), 1u);
  EXPECT_EQ(*p.missing().begin(), "gemm_fwd 1024x1024");
  // Collectives by nccl-tests' bus bandwidth: all-gather moves (n−1)/n of the buffer, all-reduce twice that.
  c.collectives["all_gather"][4] = {{1e6, 1e11}};
  c.collectives["all_reduce"][4] = {{1e6, 1e11}};
  EXPECT_NEAR(p.collective({CollKind::all_gather, 4'000'000'000, 4}), 0.03, 1e-12);
  EXPECT_NEAR(p.collective({CollKind::all_reduce, 4'000'000'000, 4}), 0.06, 1e-12);
  p.collective({CollKind::all_gather, 1000, 8});
  EXPECT_TRUE(p.missing().count("all_gather over 8 GPUs"));
}

TEST(Calibration, PredictionsThroughputAndMfuFollowFromTheStepTime) {
  Calibration c;
  c.kind = "test";
  RecordingPricer r;
  PlannedRun in = input("0.6B", 4096);
  walk_step(in, r);
  for (const auto& [key, entry] : r.ops) c.ops[key] = {{1.0, 1e-4}};  // every kernel 0.1 ms at any size
  const StepPrediction p = predict_step(in, c, 1);
  EXPECT_TRUE(p.missing.empty());
  EXPECT_NEAR(p.tokens_per_s * p.time.step, 4 * 4096, 1e-6);
  EXPECT_NEAR(p.mfu, 4 * in.model.training_flops_per_sequence(4096) / p.time.step / 989e12, 1e-12);
}

// Issue 28 item 5: a prediction says what each kind of term rests on, only the kinds it used: the kernels measured on
// this card; the host's AdamW measured on the calibrating host's CPU, with its rate and the line that measures another
// host's; an overlap the calibration never measured, assumed.
TEST(Calibration, APredictionSaysWhatEachTermRestsOn) {
  Calibration c;
  c.kind = "test", c.device = "Test GPU";
  c.cpu_adamw_elements_per_s = 3.21e9, c.cpu_threads = 16;
  c.d2h_bytes_per_s = c.h2d_bytes_per_s = 50e9;
  RecordingPricer r;
  PlannedRun in = input("0.6B", 4096);
  walk_step(in, r);
  for (const auto& [key, entry] : r.ops) c.ops[key] = {{1.0, 1e-4}};
  const auto sources = [&](const PlannedRun& i) {
    std::map<std::string, std::string> m;
    for (const auto& [term, source] : predict_step(i, c, 16).sources) m[term] = source;
    return m;
  };
  auto device = sources(in);
  EXPECT_EQ(device["kernels"], "measured on test (Test GPU) by qwen3-calibrate");
  EXPECT_EQ(device.count("host AdamW"), 0u);
  EXPECT_EQ(device.count("collectives"), 0u);
  in.recompute.offload_optimizer = 0.5;
  auto host = sources(in);
  EXPECT_EQ(host["host AdamW"],
            "measured on test (Test GPU) by qwen3-calibrate: 3.21 G elements/s on 16 CPU threads; the calibrating "
            "host's CPU, not the card's: other hosts differ by several times (`qwen3-calibrate --base <this file> "
            "--models tiny` measures this host's in 20 s)");
  EXPECT_EQ(host["host copies"], "measured on test (Test GPU) by qwen3-calibrate");
  EXPECT_EQ(host["optimizer overlap"].rfind("assumed:", 0), 0u) << host["optimizer overlap"];
  EXPECT_EQ(device.count("written weight gradients"), 0u);
  // A calibration from before the written weight gradients were measured: priced as the accumulating GEMM of their
  // shape, and said to be assumed; the step is the same as with the two measured equal.
  const double measured = predict_step(in, c, 16).time.step;
  for (auto it = c.ops.begin(); it != c.ops.end();)
    it = it->first.rfind("gemm_wgrad_set ", 0) == 0 ? c.ops.erase(it) : std::next(it);
  const StepPrediction old = predict_step(in, c, 16);
  EXPECT_TRUE(old.missing.empty());
  EXPECT_DOUBLE_EQ(old.time.step, measured);
  EXPECT_EQ(sources(in)["written weight gradients"].rfind("assumed:", 0), 0u);
  // FP8 with a calibration from before the SwiGLU backward's FP8 kernel was measured: priced as the bf16 one of its
  // shape, and said to be assumed.
  in.fp8 = true;
  RecordingPricer r8;
  walk_step(in, r8);
  for (const auto& [key, entry] : r8.ops)
    if (key.rfind("swiglu_bwd_fp8t ", 0) != 0) c.ops[key] = {{1.0, 1e-4}};
  const StepPrediction fp8 = predict_step(in, c, 16);
  EXPECT_TRUE(fp8.missing.empty());
  EXPECT_EQ(sources(in)["FP8 SwiGLU backward"].rfind("assumed:", 0), 0u);
}

// --estimate-from: the FP8 kernels a card's calibration lacks are priced as its bf16 counterpart (the GEMM of the same
// shape; the fp32-to-bf16 cast of as many elements) times the other card's FP8-over-bf16 ratio, and the prediction
// says so. Estimated from its own card the calibration predicts what its measurements do; on a card whose bf16 GEMMs
// and casts take twice as long, each estimated FP8 kernel does too.
TEST(Calibration, AnFp8KernelACardLacksIsEstimatedFromAnotherCardsRatioToItsBf16Counterpart) {
  const Calibration full = load_calibration(test::bin_dir() + "/calibration/h100-80gb.json");
  Calibration lacking = full;
  lacking.kind = "lacking";
  const auto fp8_kernel = [](const std::string& key) {
    return key.rfind("gemm8_", 0) == 0 || key.rfind("fp8_", 0) == 0;
  };
  for (auto it = lacking.ops.begin(); it != lacking.ops.end();)
    it = fp8_kernel(it->first) ? lacking.ops.erase(it) : std::next(it);
  PlannedRun in = input("1.7B", 4096);
  in.fp8 = true;
  EXPECT_FALSE(predict_step(in, lacking, 16).priced());
  const StepPrediction measured = predict_step(in, full, 16), same = predict_step(in, lacking, 16, &full);
  ASSERT_TRUE(same.priced()) << same.missing.front();
  EXPECT_TRUE(measured.estimated.empty());
  EXPECT_NEAR(same.time.step, measured.time.step, 1e-9 * measured.time.step);
  ASSERT_FALSE(same.estimated.empty());
  for (const auto& key : same.estimated) EXPECT_TRUE(fp8_kernel(key)) << key;
  std::map<std::string, std::string> sources(same.sources.begin(), same.sources.end());
  const std::string& said = sources["FP8 kernels estimated from another card"];
  EXPECT_EQ(said.rfind("assumed: ", 0), 0u) << said;
  EXPECT_NE(said.find("measured on h100-80gb (NVIDIA H100 80GB HBM3"), std::string::npos) << said;
  const std::string count = std::to_string(same.estimated.size()) + " kernel shapes, e.g. " + same.estimated.front();
  EXPECT_NE(said.find(count), std::string::npos) << said;
  Calibration slow = lacking;
  for (auto& [key, curve] : slow.ops)
    if (key.rfind("gemm_", 0) == 0 || key.rfind("cast_f32_bf16 ", 0) == 0)
      for (auto& point : curve) point.second *= 2;
  const StepPrediction twice = predict_step(in, slow, 16, &full);
  ASSERT_TRUE(twice.priced());
  std::map<std::pair<std::string, std::int64_t>, double> alone;
  for (const OpPrice& o : same.operations) alone[{o.key, o.tokens}] = o.alone_s;
  int compared = 0;
  for (const OpPrice& o : twice.operations)
    if (fp8_kernel(o.key)) {
      EXPECT_NEAR(o.alone_s, 2 * alone.at({o.key, o.tokens}), 1e-9 * o.alone_s) << o.key << " at " << o.tokens;
      ++compared;
    }
  EXPECT_GE(compared, static_cast<int>(twice.estimated.size()));  // each estimated shape, at each of its token counts
  // Nothing but FP8 kernels is estimated: a bf16 kernel the card lacks stays missing.
  slow.ops.erase("rmsnorm_fwd 2048");
  EXPECT_EQ(predict_step(in, slow, 16, &full).missing, std::vector<std::string>{"rmsnorm_fwd 2048"});
}

// The counterpart of each FP8 kernel: a GEMM's bf16 GEMM of its own kind, shape and tokens; a memory-bound one's the
// fp32-to-bf16 cast of as many elements at the width given; no counterpart for a bf16 kernel or without a cast.
TEST(Calibration, EachFp8KernelHasItsBf16Counterpart) {
  const std::pair<OpKind, const char*> gemms[] = {{OpKind::gemm8_fwd, "gemm_fwd"},
                                                  {OpKind::gemm8_dgrad_f32, "gemm_dgrad_f32"},
                                                  {OpKind::gemm8_dgrad_bf16, "gemm_dgrad_bf16"},
                                                  {OpKind::gemm8_wgrad, "gemm_wgrad"},
                                                  {OpKind::gemm8_wgrad_set, "gemm_wgrad_set"}};
  for (const auto& [fp8, bf16] : gemms) {
    const auto c = fp8_estimate_counterpart({fp8, 4096, {2048, 6144}}, 4096);
    ASSERT_TRUE(c) << op_kind_name(fp8);
    EXPECT_EQ(c->key, std::string(bf16) + " 2048x6144");
    EXPECT_EQ(c->tokens, 4096.0);
  }
  for (OpKind k : {OpKind::fp8_amax, OpKind::fp8_cast, OpKind::fp8_cast_t, OpKind::fp8_cast_both,
                   OpKind::swiglu_bwd_fp8t, OpKind::swiglu_bwd_fp8g, OpKind::swiglu_fwd_fp8}) {
    const auto c = fp8_estimate_counterpart({k, 24576, {4096}}, 2048);  // a weight's cast: out rows of in columns
    ASSERT_TRUE(c) << op_kind_name(k);
    EXPECT_EQ(c->key, "cast_f32_bf16 2048");
    EXPECT_EQ(c->tokens, 24576.0 * 4096 / 2048);
    EXPECT_FALSE(fp8_estimate_counterpart({k, 24576, {4096}}, 0)) << op_kind_name(k);
  }
  EXPECT_FALSE(fp8_estimate_counterpart({OpKind::gemm_fwd, 4096, {2048, 6144}}, 4096));
  EXPECT_FALSE(fp8_estimate_counterpart({OpKind::swiglu_bwd, 4096, {6144}}, 4096));
}

// With --estimate-from, an FP8 kernel this card lacks is the other card's measurement of it, before the fallbacks that
// price it as another kernel of this card (an FP8 SwiGLU as the bf16 one), and the other card's curve is read past
// its last point along its own counterpart: both rules at once.
TEST(Calibration, AnEstimateComesBeforeTheFallbacksAndReadsTheOtherCardsCurveAlongItsCounterpart) {
  Calibration here, there;
  here.kind = "here", there.kind = "there";
  here.ops["swiglu_bwd 6144"] = {{4096.0, 1e-4}};  // what the fallback would price swiglu_bwd_fp8g as
  here.ops["cast_f32_bf16 2048"] = {{4096.0, 1e-5}, {65536.0, 1.2e-4}};
  there.ops["cast_f32_bf16 2048"] = {{4096.0, 2e-5}, {65536.0, 2e-4}};
  there.ops["swiglu_bwd_fp8g 6144"] = {{4096.0, 3e-4}};
  CalibrationPricer alone(here, 1);
  EXPECT_NEAR(alone.compute({OpKind::swiglu_bwd_fp8g, 4096, {6144}}), 1e-4, 1e-15);
  EXPECT_TRUE(alone.used().count("FP8 SwiGLU backward"));
  CalibrationPricer p(here, 1, &there);
  // 4,096 tokens of 6,144: 12,288 rows of the 2,048-wide cast, between both cards' points (log-log)
  const auto cast = [](const Calibration& c, double rows) {
    const auto& k = c.ops.at("cast_f32_bf16 2048");
    const double f = std::log(rows / k[0].first) / std::log(k[1].first / k[0].first);
    return std::exp(std::log(k[0].second) + f * (std::log(k[1].second) - std::log(k[0].second)));
  };
  EXPECT_NEAR(p.compute({OpKind::swiglu_bwd_fp8g, 4096, {6144}}), 3e-4 * cast(here, 12288) / cast(there, 12288), 1e-15);
  // 8,192 tokens, past the other card's last point: its 4,096-token time × its cast's growth from 12,288 to 24,576 rows
  EXPECT_NEAR(p.compute({OpKind::swiglu_bwd_fp8g, 8192, {6144}}),
              3e-4 * cast(there, 24576) / cast(there, 12288) * cast(here, 24576) / cast(there, 24576), 1e-15);
  EXPECT_TRUE(p.used().count("FP8 kernels estimated from another card"));
  EXPECT_TRUE(p.used().count("FP8 kernels outside their measured tokens"));
  EXPECT_FALSE(p.used().count("FP8 SwiGLU backward"));
  EXPECT_EQ(p.estimated(), std::set<std::string>{"swiglu_bwd_fp8g 6144"});
}

// Outside an FP8 kernel's measured token counts its time runs as its bf16 counterpart's measured curve does from the
// nearest point (a GEMM filling the GPU takes less than 4 times as long for 4 times the tokens, and more than a
// quarter for a quarter); in proportion to the tokens above, its floor below, where the counterpart was measured no
// further; the prediction names the assumption only when it used it.
TEST(Calibration, AnFp8KernelOutsideItsMeasuredTokensFollowsItsBf16Counterpart) {
  Calibration c;
  c.kind = "test";
  c.ops["gemm8_fwd 2048x4096"] = {{1024.0, 1e-5}, {4096.0, 3e-5}};
  c.ops["gemm_fwd 2048x4096"] = {{256.0, 4e-6}, {1024.0, 1e-5}, {4096.0, 5e-5}, {16384.0, 1.5e-4}};
  c.ops["fp8_cast 8192"] = {{4096.0, 2e-5}};
  c.ops["cast_f32_bf16 4096"] = {{8192.0, 1e-5}, {32768.0, 3.5e-5}};  // as many elements as 4,096 and 16,384 rows
  CalibrationPricer p(c, 1);
  EXPECT_NEAR(p.compute({OpKind::gemm8_fwd, 16384, {2048, 4096}}), 9e-5, 1e-15);
  EXPECT_NEAR(p.compute({OpKind::gemm8_fwd, 2048, {2048, 4096}}), 1e-5 * std::pow(3.0, 0.5), 1e-15);  // within: log-log
  EXPECT_NEAR(p.compute({OpKind::fp8_cast, 16384, {8192}}), 2e-5 * 3.5, 1e-15);
  EXPECT_NEAR(p.compute({OpKind::gemm8_fwd, 256, {2048, 4096}}), 1e-5 * 0.4, 1e-15);  // 256 tokens: 0.4 of 1,024's
  EXPECT_TRUE(p.used().count("FP8 kernels outside their measured tokens"));
  c.ops["gemm_fwd 2048x4096"] = {{1024.0, 1e-5}, {4096.0, 5e-5}};  // measured no further: in proportion, the floor
  CalibrationPricer q(c, 1);
  EXPECT_NEAR(q.compute({OpKind::gemm8_fwd, 16384, {2048, 4096}}), 1.2e-4, 1e-15);
  EXPECT_NEAR(q.compute({OpKind::gemm8_fwd, 256, {2048, 4096}}), 1e-5, 1e-15);
  EXPECT_FALSE(q.used().count("FP8 kernels outside their measured tokens"));
}

// Every kernel shape and token count a prediction priced is listed with its time alone, its in-step factor and its
// calls, so that a step can be read operation by operation (--plan's predicted.operations) and set beside the engine's
// op timer: with every kernel 0.1 ms per token alone and attention's forward 1.2 in the step, the list covers what the
// walk records, a GEMM is 0.1 ms × 4,096 with factor 1, attention 1.2, a layer's kernels once per layer.
TEST(Calibration, APredictionListsEveryOperationItPricedWithItsFactorAndCalls) {
  Calibration c;
  c.kind = "test";
  RecordingPricer r;
  PlannedRun in = input("0.6B", 4096);
  in.micro_batches = 1;
  walk_step(in, r);
  for (const auto& [key, entry] : r.ops) c.ops[key] = {{1.0, 1e-4}, {2.0, 2e-4}};  // linear in tokens
  c.in_step["attention_fwd"] = {{4096.0, 1.2}};
  const StepPrediction p = predict_step(in, c, 1);
  std::set<std::string> keys;
  double priced = 0;
  for (const OpPrice& o : p.operations) {
    keys.insert(o.key);
    priced += o.alone_s * o.in_step_factor * o.calls;
    if (o.key.rfind("gemm_fwd", 0) == 0 && o.tokens == 4096) {
      EXPECT_NEAR(o.alone_s, 1e-4 * 4096, 1e-12) << o.key;
      EXPECT_EQ(o.in_step_group, "gemm");
      EXPECT_EQ(o.in_step_factor, 1.0);
    }
    if (o.key.rfind("attention_fwd", 0) == 0) {
      EXPECT_EQ(o.in_step_factor, 1.2);
      EXPECT_EQ(o.calls, in.model.num_layers) << "one per layer";
    }
  }
  std::set<std::string> recorded;
  for (const auto& [key, entry] : r.ops) recorded.insert(key);
  EXPECT_EQ(keys, recorded);
  EXPECT_GT(priced, 0);
}

// Issue 28 item 7: at global batch 1 the optimizer's device step overlaps the next forward on a side stream; only the
// calibration's measured share of that overlap is hidden (1: the forward hides it, 0: they take turns).
TEST(StepModel, TheOptimizerOverlapHidesOnlyTheMeasuredShare) {
  struct SharePricer : CountingPricer {
    double share = 1.0;
    double optimizer_hidden_share(std::int64_t) override { return share; }
  };
  PlannedRun in = input("0.6B", 4096);
  in.micro_batches = 1;
  SharePricer whole, none, quarter;
  none.share = 0.0, quarter.share = 0.25;
  const StepTime a = walk_step(in, whole), b = walk_step(in, none), q = walk_step(in, quarter);
  // Every kernel costs 1: AdamW and the norm's sum of squares cost 1 each, the forward far more. AdamW's first
  // segment, the embedding's (151,936 × 1,024 of 0.6B's 596,049,920 parameters), has no forward beside it.
  const double first = 151936.0 * 1024.0 / 596049920.0;
  EXPECT_DOUBLE_EQ(a.optimizer, 1.0 + first);  // the sum of squares and the embedding's AdamW; the rest hidden
  EXPECT_DOUBLE_EQ(b.optimizer, 2.0);  // both exposed
  EXPECT_DOUBLE_EQ(q.optimizer, 2.0 - 0.25 * (1.0 - first));
  EXPECT_NEAR(b.step - a.step, 1.0 - first, 1e-12);  // a difference of two sums
  // A sharded optimizer: the next forward waits for all of it, gathered — nothing hidden, whatever the share.
  PlannedRun sharded = in;
  sharded.dp = 2;
  sharded.shard_optimizer = true;
  EXPECT_DOUBLE_EQ(walk_step(sharded, whole).optimizer, walk_step(sharded, none).optimizer);
}

// Issue 28 item 3: with tensor parallelism the backward's collectives run beside the weight-gradient GEMMs and hold SMs
// they would use; the calibration's measured slowdown lengthens the overlapped part of the GEMMs, and only with tp > 1.
TEST(StepModel, CollectivesBesideTheWeightGradientsSlowThem) {
  struct SlowPricer : CountingPricer {
    double slowdown = 1.0;
    double gemm_slowdown_beside_collectives() override { return slowdown; }
  };
  SlowPricer fast, slow;
  slow.slowdown = 1.5;
  fast.coll_cost = slow.coll_cost = 0.25;
  // Every kernel costs 1, a collective 0.25: the two weight-gradient GEMMs of a block (2) outlast the side stream's
  // reduce-scatter, norm and all-gather (1.5), so the GEMMs are what the block waits for, 1.5 of them slowed.
  const PlannedRun t2 = input("0.6B", 4096, 2);
  const StepTime a = walk_step(t2, fast), b = walk_step(t2, slow);
  EXPECT_GT(b.backward, a.backward);
  EXPECT_DOUBLE_EQ(b.forward, a.forward);  // the forward's collectives are exposed, not beside GEMMs
  const PlannedRun t1 = input("0.6B", 4096, 1);
  EXPECT_DOUBLE_EQ(walk_step(t1, fast).step, walk_step(t1, slow).step);
}

// Issue 28 item 6: an operation the calibration lacks — a kernel shape, or a collective's kind and group — makes no
// prediction (no step time, tokens/s or MFU), and the advice names how many, the first, and the qwen3-calibrate line
// that measures the layout's kernels onto the file the calibration came from.
TEST(Calibration, AnUnpricedOperationMakesNoPredictionAndSaysHowToMeasureIt) {
  Calibration c;
  c.kind = "h200";
  c.device = "NVIDIA H200";
  c.path = "/cal/h200.json";
  PlannedRun in = input("0.6B", 4096);
  RecordingPricer r;
  walk_step(in, r);
  for (const auto& [key, entry] : r.ops) c.ops[key] = {{1.0, 1e-4}};
  ASSERT_TRUE(predict_step(in, c, 1).priced());
  c.ops.erase("gemm_fwd 1024x6144");
  StepPrediction p = predict_step(in, c, 1);
  EXPECT_FALSE(p.priced());
  EXPECT_EQ(p.missing, std::vector<std::string>{"gemm_fwd 1024x6144"});
  EXPECT_EQ(p.time.step, 0);
  EXPECT_EQ(p.tokens_per_s, 0);
  EXPECT_EQ(p.mfu, 0);
  UnpricedAdvice a = unpriced_advice(in, p, c);
  EXPECT_EQ(a.command, "qwen3-calibrate --models 0.6B --lengths 4096 --tp 1 --base /cal/h200.json --out h200-0.6B.json");
  EXPECT_EQ(a.text.rfind("no step-time prediction: 1 operation of this run is not in calibration h200 (/cal/h200.json) "
                         "(e.g. gemm_fwd 1024x6144); measure them with `" + a.command + "`", 0), 0u) << a.text;
  // A plan that does not fit has no run to predict: no command, and the text says why.
  a = unpriced_advice(in, p, c, false);
  EXPECT_EQ(a.command, "");
  EXPECT_NE(a.text.find("(e.g. gemm_fwd 1024x6144); the plan does not fit, so there is no run to predict"),
            std::string::npos) << a.text;
  EXPECT_EQ(a.text.find("qwen3-calibrate"), std::string::npos) << a.text;

  // Tensor-parallel: every kernel priced, the collectives of two GPUs not: no prediction either, and no command
  // (qwen3-calibrate does not measure collectives), the section to add instead.
  in.tp = 2;
  in.dp = 1;
  RecordingPricer r2;
  walk_step(in, r2);
  for (const auto& [key, entry] : r2.ops) c.ops[key] = {{1.0, 1e-4}};
  p = predict_step(in, c, 1);
  EXPECT_FALSE(p.priced());
  for (const auto& m : p.missing) EXPECT_NE(m.find(" over 2 GPUs"), std::string::npos) << m;
  a = unpriced_advice(in, p, c);
  EXPECT_EQ(a.command, "");
  EXPECT_NE(a.text.find("the calibration's `collectives` section lacks all_gather over 2 GPUs"), std::string::npos) << a.text;
  for (const char* k : {"all_gather", "reduce_scatter", "all_reduce"}) c.collectives[k][2] = {{1e6, 1e11}};
  EXPECT_TRUE(predict_step(in, c, 1).priced());
  EXPECT_GT(predict_step(in, c, 1).mfu, 0);
}

// Issue 28 item 6: qwen3-calibrate's default list is every preset (the preset table's, not a copy) at each default
// length and tensor-parallel size the planner fits on the card, and nothing it does not fit.
TEST(Calibration, DefaultListIsEveryPresetAtEveryLengthAndTpTheCardHolds) {
  const std::int64_t h200 = parse_memory_size("--kind", "h200"), h100 = parse_memory_size("--kind", "h100-80gb");
  const auto cases = default_calibration_cases(h200);
  std::set<std::string> models;
  for (const auto& k : cases) models.insert(k.model);
  EXPECT_EQ(models, std::set<std::string>(preset_names().begin(), preset_names().end()));
  const auto has = [&](const std::vector<CalibrationCase>& list, const std::string& m, int tp, std::int64_t len) {
    return std::any_of(list.begin(), list.end(), [&](const auto& k) { return k.model == m && k.tp == tp && k.seq_len == len; });
  };
  EXPECT_TRUE(has(cases, "4B", 1, 4096));
  EXPECT_TRUE(has(cases, "1.7B", 1, 4096));
  EXPECT_TRUE(has(cases, "32B", 8, 4096));
  // The H200 holds every one of the 7 presets × 4 sizes × 6 lengths at some policy, as one GPU or as the worst stage
  // of a pipeline: 32B at tp 1 runs as 8 stages, as the study's T2P4-like layouts need its tp-1 and tp-2 kernels.
  EXPECT_EQ(cases.size(), 168u);
  for (std::int64_t len : kCalibrationLengths) EXPECT_TRUE(has(cases, "32B", 1, len)) << len;
  // The 80 GB H100 all but 14B and 32B on one GPU's worth of tp-1 kernels at 131,072 tokens (not even as 8 stages).
  const auto on_h100 = default_calibration_cases(h100);
  EXPECT_EQ(on_h100.size(), 166u);
  EXPECT_FALSE(has(on_h100, "32B", 1, 131072));
  EXPECT_FALSE(has(on_h100, "14B", 1, 131072));
  EXPECT_TRUE(has(on_h100, "14B", 1, 1024));  // 14B T1P4 on four H100s: the study-4xh100 spec's cells
  // What qwen3-calibrate measures for a case holds every kernel of a pipeline's stages too (the cast of the gradient
  // a stage before the last receives), at any pipeline depth.
  const RecordingPricer measured = record_case({"0.6B", 2, 4096});
  for (int pp : {1, 2, 4}) {
    RecordingPricer layout;
    walk_step(input("0.6B", 4096, 2, pp), layout);
    for (const auto& [key, entry] : layout.ops) EXPECT_TRUE(measured.ops.count(key)) << key << " at pp " << pp;
  }
  for (const auto& k : on_h100) EXPECT_TRUE(has(cases, k.model, k.tp, k.seq_len)) << k.model;
}

TEST(Calibration, FileRoundTripsAndBadFilesAreRefusedByName) {
  Calibration c;
  c.kind = "h200";
  c.device = "NVIDIA H200";
  c.measured = "test";
  c.ops["rmsnorm_fwd 1024"] = {{1024, 2e-6}, {4096, 5e-6}};
  c.collectives["all_gather"][8] = {{1e6, 1e11}, {1e9, 3.6e11}};
  c.collectives_source = "published";
  c.d2h_bytes_per_s = c.h2d_bytes_per_s = 5e10;
  c.cpu_adamw_elements_per_s = 1e9, c.cpu_threads = 16, c.sync_s = 1e-5;
  c.context_bytes = 500 << 20, c.library_bytes = 40 << 20, c.kernel_bytes = 20 << 20;
  const std::string path = ::testing::TempDir() + "/cal.json";
  std::ofstream(path) << calibration_json(c);
  EXPECT_TRUE(load_calibration(path).optimizer_hidden.empty());  // not measured: none in the file
  c.optimizer_hidden = {{1024, 0.5}, {4096, 0.25}};
  c.gemm_slowdown_sms_held = {{8, 1.05}, {16, 1.1}, {32, 1.3}};
  std::ofstream(path) << calibration_json(c);
  const Calibration back = load_calibration(path);
  EXPECT_EQ(back.optimizer_hidden, c.optimizer_hidden);
  EXPECT_EQ(back.gemm_slowdown_sms_held, c.gemm_slowdown_sms_held);
  // Between two sizes, linear in log(tokens); beyond them, the nearest; a first-version file's one share is at 4,096.
  CalibrationPricer pricer(back, 1);
  EXPECT_DOUBLE_EQ(pricer.optimizer_hidden_share(2048), 0.375);
  EXPECT_DOUBLE_EQ(pricer.optimizer_hidden_share(512), 0.5);
  EXPECT_DOUBLE_EQ(pricer.optimizer_hidden_share(65536), 0.25);
  EXPECT_DOUBLE_EQ(pricer.gemm_slowdown_beside_collectives(), 1.1);  // at NCCL's 16 SMs (kNcclSmsHeld)
  std::ofstream(path) << R"({"format": "qwen3-calibration", "version": 1, "kind": "h200", "ops": {},
    "host": {"d2h_bytes_per_s": 1, "h2d_bytes_per_s": 1, "cpu_adamw_elements_per_s": 1, "cpu_threads": 1, "sync_s": 0},
    "memory": {"context_bytes": 0, "library_bytes": 0, "kernel_bytes": 0, "pinned_map_bytes_per_byte": 0},
    "overlap": {"optimizer_hidden_share": 0.09}})";
  EXPECT_EQ(load_calibration(path).optimizer_hidden, (std::vector<std::pair<double, double>>{{4096, 0.09}}));
  // In-step factors: a curve over the sequence's tokens per group, priced by interpolation; a first-version file's
  // single number holds at every length; a factor that is not positive, or an unknown group, is refused.
  Calibration f = back;
  f.ops["attention_fwd 16/8/128"] = {{1024, 1e-3}, {4096, 2e-3}};
  f.in_step["attention_fwd"] = {{1024, 1.0}, {4096, 1.2}};
  std::ofstream(path) << calibration_json(f);
  const Calibration loaded = load_calibration(path);
  CalibrationPricer with_factors(loaded, 1);
  EXPECT_NEAR(with_factors.compute({OpKind::attention_fwd, 2048, {16, 8, 128}}), std::sqrt(1e-3 * 2e-3) * 1.1, 1e-12);
  EXPECT_NEAR(with_factors.compute({OpKind::attention_fwd, 8192, {16, 8, 128}}), 2e-3 * 4 * 1.2, 1e-12);
  auto with_in_step = [&](const std::string& in_step) {
    std::string text = calibration_json(back);
    text.insert(text.rfind('}'), ", \"in_step\": " + in_step);
    std::ofstream(path) << text;
    return load_calibration(path);
  };
  EXPECT_EQ(with_in_step(R"({"source": "", "factors": {"attention_bwd": 1.15}})").in_step.at("attention_bwd"),
            (std::vector<std::pair<double, double>>{{4096, 1.15}}));
  EXPECT_THROW(with_in_step(R"({"source": "", "factors": {"attention_bwd": [[1024, 0]]}})"), UsageError);
  EXPECT_THROW(with_in_step(R"({"source": "", "factors": {"softmax": 1.1}})"), UsageError);
  EXPECT_EQ(calibration_json(back), calibration_json(c));
  std::ofstream(path) << "{\"format\": \"something else\"}";
  try {
    load_calibration(path);
    FAIL() << "a foreign file was read";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_calibration(path + ".missing"), UsageError);
}

TEST(Calibration, RuntimeReserveIsMeasuredPlusNcclCommunicators) {
  Calibration c;
  c.context_bytes = 500 << 20, c.library_bytes = 40 << 20, c.kernel_bytes = 20 << 20;
  PlannedRun one = input("1.7B", 4096), tp2 = input("1.7B", 4096, 2);
  EXPECT_TRUE(runtime_reserve(one, nullptr).empty());  // the planner's flat reserve then
  one.reserve = runtime_reserve(one, &c);
  ASSERT_EQ(one.reserve.size(), 3u);  // one GPU: no communicator
  const MemoryPlan plan = plan_cuda_rank_memory(one);  // + each large buffer rounded up to cudaMalloc's 2 MiB pages
  ASSERT_EQ(plan.reserve_items.size(), 4u);
  EXPECT_NE(plan.reserve_items.back().what.find("cudaMalloc"), std::string::npos);
  EXPECT_EQ(plan.reserve(), (560 << 20) + plan.reserve_items.back().bytes);
  EXPECT_LT(plan.reserve_items.back().bytes, static_cast<std::int64_t>(plan.items.size()) * (2 << 20));
  EXPECT_EQ(plan_cuda_rank_memory(input("1.7B", 4096)).reserve(), kRuntimeReserveBytes);
  tp2.reserve = runtime_reserve(tp2, &c);
  ASSERT_EQ(tp2.reserve.size(), 4u);
  EXPECT_GT(tp2.reserve.back().bytes, 0);
  EXPECT_EQ(gpu_kind_of(143150ll << 20), "h200");
  EXPECT_EQ(gpu_kind_of((143150ll << 20) + (6ll << 20)), "h200");
  EXPECT_EQ(gpu_kind_of(85017493504ll), "h100-80gb");  // an H100 80GB HBM3's totalGlobalMem, driver 580.159.04
  EXPECT_EQ(gpu_kind_of(24ll << 30), "");
}

#ifdef QWEN3_HAVE_CUDA
// Every kernel of a small model's step, at two lengths, measured through the engine's code: each a positive time,
// and the GEMMs and attention take longer for more tokens.
TEST(CudaOpBench, MeasuresEveryKernelOfAStep) {
  QWEN3_REQUIRE_GPU();
  cuda::OpBench bench;
  for (std::int64_t len : {1024, 4096}) {
    RecordingPricer r;
    walk_step(input("0.6B", len), r);
    for (const auto& [key, entry] : r.ops)
      for (std::int64_t tokens : entry.second) {
        OpShape op = entry.first;
        op.tokens = (op.kind == OpKind::adamw || op.kind == OpKind::sum_squares) ? cuda::kCalibrationOptimizerElements : tokens;
        const double t = bench.time(op);
        EXPECT_TRUE(t > 0 && t < 1.0) << key << " at " << op.tokens << ": " << t;
      }
  }
  // Writing a weight gradient reads no fp32 gradient: never much slower than adding to one.
  const double writes = bench.time({OpKind::gemm_wgrad_set, 1024, {2048, 6144, 0}});
  const double adds = bench.time({OpKind::gemm_wgrad, 1024, {2048, 6144, 0}});
  EXPECT_LT(writes, 1.1 * adds) << writes << " s written, " << adds << " s added";
  const double short_gemm = bench.time({OpKind::gemm_fwd, 1024, {1024, 6144, 0}});
  const double long_gemm = bench.time({OpKind::gemm_fwd, 16384, {1024, 6144, 0}});
  EXPECT_GT(long_gemm, 4 * short_gemm);
  const double hidden = bench.optimizer_hidden_share(1024);
  EXPECT_TRUE(hidden >= 0 && hidden <= 1) << hidden;
  // Holding every SM but a few leaves a GEMM far slower than holding a few; never faster than alone.
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const double few = bench.gemm_slowdown_with_sms_held(8), most = bench.gemm_slowdown_with_sms_held(sms - 8);
  EXPECT_GE(few, 1.0);
  EXPECT_GT(most, 2 * few) << few << " with 8 SMs held, " << most << " with " << sms - 8;
  const double short_attn = bench.time({OpKind::attention_fwd, 2048, {16, 8, 128}});
  const double long_attn = bench.time({OpKind::attention_fwd, 16384, {16, 8, 128}});
  EXPECT_GT(long_attn, 16 * short_attn);
}
#endif

// The walk against the CPU reference (issue 29: the CPU backend's equivalent of StepModelGpu's check, run in CI): one
// micro-batch of the tiny model through CpuQwen3, which counts its linear layers' multiply-adds by role and its
// attention calls, against the walk of the same micro-batch. The GPU fuses q|k|v and gate|up where the reference runs
// them apart: the multiply-adds are the same, so a GEMM the walk leaves out, or prices twice, fails here.
TEST(StepModel, TheWalkPricesTheReferencesLinearLayersAndAttention) {
  const ModelConfig c = model_preset("tiny");
  CpuQwen3 model(c);
  const ParamTable& t = model.params();
  const auto n = static_cast<std::size_t>(t.total_elements());
  std::vector<float> w(n, 0.0f), g(n, 0.0f);
  init_weights(t, 1, 0.02, w.data());
  constexpr std::int64_t S = 64;
  std::vector<std::int32_t> ids;  // S + 1 tokens: the inputs and, one later, their labels
  for (std::int64_t i = 0; i <= S; ++i) ids.push_back(static_cast<std::int32_t>(i * 7 % c.vocab_size));
  OpTally ran;
  model.set_tally(&ran);
  MicroBatch mb;
  mb.tokens = ids.data(), mb.labels = ids.data() + 1, mb.batch = 1, mb.seq = S;
  model.forward_backward(w.data(), g.data(), mb, 1.0 / S);
  struct MaddPricer : CountingPricer {
    std::map<OpKind, std::int64_t> madds;
    double compute(const OpShape& op) override {
      madds[op.kind] += op.tokens * op.dims[0] * op.dims[1];
      return CountingPricer::compute(op);
    }
  } walk;
  PlannedRun in = input("tiny", S);
  in.micro_batches = 1;
  walk_step(in, walk);
  EXPECT_EQ(ran.gemm_fwd, walk.madds[OpKind::gemm_fwd]);
  EXPECT_EQ(ran.gemm_dgrad, walk.madds[OpKind::gemm_dgrad_bf16] + walk.madds[OpKind::gemm_dgrad_f32]);
  EXPECT_EQ(ran.gemm_wgrad, walk.madds[OpKind::gemm_wgrad] + walk.madds[OpKind::gemm_wgrad_set]);
  EXPECT_EQ(ran.attention_fwd, walk.calls[OpKind::attention_fwd]);
  EXPECT_EQ(ran.attention_bwd, walk.calls[OpKind::attention_bwd]);
  EXPECT_GT(ran.gemm_fwd, 0);
}

#ifdef QWEN3_HAVE_CUDA
// The walk against the engine itself (issue 29): a real CUDA step of 0.6B (tp 1, one micro-batch per step) under
// --op-times, whose op timer marks every kernel the engine runs with its label and calls, and the step model's walk of
// the same run, kind by kind: a kernel the engine runs that the walk does not price (or prices a different number of
// times) fails here. AdamW is left out: the engine runs it segment by segment (one mark each), the walk prices the
// rank's window in one call; labels that are not kernels of the inventory (the loss's sum, zeroing, copies) too.
TEST(StepModelGpu, TheWalkPricesEveryKernelTheEngineRunsInAStep) {
  QWEN3_REQUIRE_GPU();
  const std::filesystem::path dir = test::fresh_dir("qwen3_walk_vs_op_timer");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 151936, {256}, 4, 5, false);
  constexpr int kSteps = 3;  // the op timer counts the steps after the first (which pays for autotuning and loading)
  const auto r = test::run_program("qwen3-pretrain", "--device cuda --model 0.6B --data '" + data + "' --seq-len 256 "
                                   "--global-batch 1 --steps " + std::to_string(kSteps) + " --op-times --out '" +
                                   (dir / "run.h5").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The op timer's lines: "  12.34 ms  5.6%  56 calls  gemm qkv fwd".
  auto family = [](const std::string& label) -> std::string {
    auto ends = [&](const char* s) { return label.size() >= std::strlen(s) && label.compare(label.size() - std::strlen(s), std::string::npos, s) == 0; };
    if (label.rfind("gemm ", 0) == 0) return ends("bwd data") ? "gemm_dgrad" : ends("bwd weight") ? "gemm_wgrad" : "gemm_fwd";
    for (const char* k : {"attention fwd", "attention bwd", "rmsnorm fwd", "rmsnorm bwd", "qk norm+rope fwd",
                          "qk norm+rope bwd", "swiglu fwd", "swiglu bwd", "embedding fwd", "embedding bwd", "cross-entropy"})
      if (label == k) return k;
    return "";
  };
  std::map<std::string, long> engine;
  std::istringstream lines(r.output.substr(r.output.find("CUDA op times")));
  for (std::string line; std::getline(lines, line);) {
    double ms = 0, share = 0;
    long calls = 0;
    char label[256] = {0};
    if (std::sscanf(line.c_str(), " %lf ms %lf%% %ld calls %255[^\n]", &ms, &share, &calls, label) == 4 && !family(label).empty())
      engine[family(label)] += calls;
  }
  ASSERT_FALSE(engine.empty()) << r.output;
  PlannedRun in = input("0.6B", 256);
  in.micro_batches = 1;
  CountingPricer walk;
  walk_step(in, walk);
  const std::map<std::string, std::vector<OpKind>> kinds = {
      {"gemm_fwd", {OpKind::gemm_fwd}}, {"gemm_dgrad", {OpKind::gemm_dgrad_bf16, OpKind::gemm_dgrad_f32}},
      {"gemm_wgrad", {OpKind::gemm_wgrad, OpKind::gemm_wgrad_set}}, {"attention fwd", {OpKind::attention_fwd}},
      {"attention bwd", {OpKind::attention_bwd}}, {"rmsnorm fwd", {OpKind::rmsnorm_fwd}},
      {"rmsnorm bwd", {OpKind::rmsnorm_bwd}}, {"qk norm+rope fwd", {OpKind::qk_norm_rope_fwd}},
      {"qk norm+rope bwd", {OpKind::qk_norm_rope_bwd}}, {"swiglu fwd", {OpKind::swiglu_fwd, OpKind::swiglu_fwd_fp8}},
      {"swiglu bwd", {OpKind::swiglu_bwd, OpKind::swiglu_bwd_fp8t, OpKind::swiglu_bwd_fp8g}}, {"embedding fwd", {OpKind::embedding_fwd}},
      {"embedding bwd", {OpKind::embedding_bwd}}, {"cross-entropy", {OpKind::cross_entropy}}};
  for (const auto& [name, ks] : kinds) {
    long priced = 0;
    for (OpKind k : ks) priced += walk.calls[k];
    EXPECT_EQ(engine[name], (kSteps - 1) * priced) << name << ": the engine's calls over steps 2-" << kSteps
                                                   << ", the walk's per step";
  }
}
#endif

// The distributed optimizer's reduce-scatter carries every parameter the rank holds, counted as the engine holds them
// (train/rank_plan.h): at tp 8 the tiny model's 4 KV heads are replicated, not split, and its
// norms are whole on every tensor-parallel rank — more than the model's parameters / tp.
TEST(StepModel, TheGradientReductionCarriesTheRanksOwnParameters) {
  struct BytesPricer : CountingPricer {
    std::int64_t scattered = 0;
    double collective(const CollOp& op) override {
      if (op.kind == CollKind::reduce_scatter && op.group == 2) scattered += op.bytes;  // not tp's (group 8)
      return 0;
    }
  };
  PlannedRun in = input("tiny", 256, 8);
  in.dp = 2;
  BytesPricer p;
  walk_step(in, p);
  const std::int64_t held = planned_rank(in).local.total_elements();
  EXPECT_EQ(p.scattered, 4 * held);
  EXPECT_GT(held, in.model.parameter_count() / 8);
}
