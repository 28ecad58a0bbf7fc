// The memory planner (train/memory_plan.h) against peaks measured on GPU hosts (BENCHMARKS.md, 2026-11-27: the
// allocator's bytes in use of the CUDA engine, which takes all its memory at start-up), and `qwen3-pretrain --plan`:
// fits → exit 0, does not fit → exit 3, bad sizes and unplanned layouts → exit 2; a CUDA run whose plan does not fit
// its device stops before allocating with status oom_predicted. No GPU needed.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "calibration_fixture.h"
#include "cli_runner.h"
#include "config/model_config.h"
#include "core/error.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "model/sequence_layout.h"
#include "train/memory_plan.h"

using namespace qwen3;

TEST(MemoryPlan, WithinOnePercentOfSixMeasuredPeaks) {
  struct Run { const char* model; std::int64_t seq; int tp; double measured_gib; const char* where; };
  for (const Run& r : {Run{"0.6B", 4096, 1, 15.69, "H100, b3680e0"}, Run{"1.7B", 4096, 1, 36.87, "H100, b3680e0"},
                       Run{"1.7B", 16384, 1, 58.11, "H100, b3680e0"}, Run{"1.7B", 4096, 2, 19.03, "2 x H100, cc811d4"},
                       Run{"1.7B", 4096, 4, 10.05, "4 x H200, 8f4ce9e"}, Run{"8B", 4096, 4, 40.71, "4 x H200, 8f4ce9e"}}) {
    PlannedRun in{model_preset(r.model), 1, r.seq, r.tp};
    const double planned = static_cast<double>(plan_cuda_rank_memory(in).total()) / (1ll << 30);
    EXPECT_NEAR(planned, r.measured_gib, 0.01 * r.measured_gib) << r.model << " seq " << r.seq << " tp " << r.tp << " (" << r.where << ")";
  }
}

TEST(MemoryPlan, CategoriesAddUpAndScaleWithTheLayout) {
  PlannedRun one{model_preset("8B"), 1, 4096, 1}, four{model_preset("8B"), 1, 4096, 4};
  const MemoryPlan a = plan_cuda_rank_memory(one), b = plan_cuda_rank_memory(four);
  std::int64_t sum = 0;
  for (const auto& [c, bytes] : a.by_category()) sum += bytes;
  EXPECT_EQ(sum, a.total());
  const auto wa = a.by_category()[0].second, wb = b.by_category()[0].second;  // weights: split four ways
  EXPECT_NEAR(static_cast<double>(wb), wa / 4.0, 0.01 * wa);
  // Context parallelism: each of cp ranks holds 1/cp of every sequence's activations, plus one layer's keys and
  // values of the whole sequence, and 1/cp of the optimizer state (the distributed optimizer shards over data ×
  // context-parallel ranks); a length that does not split into 2·cp chunks is refused.
  PlannedRun cp1{model_preset("8B"), 1, 131072, 4}, cp4{model_preset("8B"), 1, 131072, 4, 1, 1, 4};
  const MemoryPlan c1 = plan_cuda_rank_memory(cp1), c4 = plan_cuda_rank_memory(cp4);
  EXPECT_NEAR(static_cast<double>(c4.by_category()[3].second), c1.by_category()[3].second / 4.0,
              0.01 * c1.by_category()[3].second);  // activations
  EXPECT_NEAR(static_cast<double>(c4.by_category()[2].second), c1.by_category()[2].second / 4.0,
              0.01 * c1.by_category()[2].second);  // optimizer state
  EXPECT_LT(c4.by_category()[0].second, c1.by_category()[0].second);  // weights: the fp32 master copy sharded too
  bool kv_item = false;
  for (const auto& i : c4.items) kv_item |= i.what.find("context-parallel keys|values") != std::string::npos;
  EXPECT_TRUE(kv_item);
  EXPECT_THROW(plan_cuda_rank_memory({model_preset("8B"), 1, 4100, 1, 1, 1, 4}), UsageError);  // 4100 / 8 chunks
  // Pipeline: stage 0 keeps pp micro-batches in flight, the last one; four stages hold about a quarter of the weights.
  PlannedRun pipe{model_preset("8B"), 1, 4096, 1, 1, 4};
  pipe.micro_batches = 32;
  const MemoryPlan s0 = plan_cuda_rank_memory(pipe);
  pipe.stage = 3;
  const MemoryPlan s3 = plan_cuda_rank_memory(pipe);
  EXPECT_GT(s0.by_category()[3].second, 2 * s3.by_category()[3].second);  // activations
  EXPECT_LT(s0.by_category()[0].second, 0.4 * wa);
  EXPECT_EQ(plan_worst_stage(pipe).first, 0);
  // The distributed optimizer: master weights and moments fall with dp, bf16 weights and gradients do not.
  PlannedRun dp1{model_preset("8B"), 1, 4096, 1, 1}, dp4{model_preset("8B"), 1, 4096, 1, 4};
  const MemoryPlan d1 = plan_cuda_rank_memory(dp1), d4 = plan_cuda_rank_memory(dp4);
  EXPECT_NEAR(static_cast<double>(d4.by_category()[2].second), d1.by_category()[2].second / 4.0, 0.01 * d1.by_category()[2].second);
  EXPECT_NEAR(static_cast<double>(d4.by_category()[1].second), d1.by_category()[1].second, 0.01 * d1.by_category()[1].second);
  EXPECT_EQ(parse_memory_size("--device-memory", "141GB"), 141000000000ll);
  EXPECT_EQ(parse_memory_size("--device-memory", "80GiB"), 80ll << 30);
  EXPECT_EQ(parse_memory_size("--device-memory", "h200"), 143150ll << 20);
  EXPECT_EQ(parse_memory_size("--device-memory", "h100-80gb"), 81079ll << 20);
  EXPECT_THROW(parse_memory_size("--device-memory", "12XB"), UsageError);
}

TEST(MemoryPlan, PlanOptionExitsZeroWhenItFitsAndThreeWhenNot) {
  // The default device, h100-80gb, has a committed calibration: the runtime reserve is its measured one.
  auto r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 16384");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("peak per rank     58.70"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(": fits"), std::string::npos) << r.output;
  // 8B on one H100 trains with most of its optimizer on the host: the text says whose CPU prices it, in full.
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 4096 --global-batch 1 --recompute auto");
  EXPECT_NE(r.output.find("        host AdamW: measured on h100-80gb (NVIDIA H100 80GB HBM3) by qwen3-calibrate: "),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("G elements/s on 16 CPU threads; the calibrating host's CPU, not the card's"), std::string::npos)
      << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 131072 --tp 8 --world-size 8 --device-memory 141GB");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("does NOT fit"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("T8 C1 D1 P1 (8 ranks)"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --device-memory lots");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--device-memory: 'lots' is neither a GPU name (h100-80gb = 79.2 GiB"), std::string::npos) << r.output;
  // A GPU name means its real size (what CUDA gives a process): an H100 80GB is 79.2 GiB, not 80e9 bytes = 74.5 GiB.
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --device-memory H100-80GB");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" of 79.18 GiB: fits"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --pp 2 --world-size 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("per pipeline stage:\n  stage 0 (layers 0-"), std::string::npos) << r.output;
  // Recomputation: 1.7B at 65,536 tokens needs about 141 GiB as it is, under 50 with each layer's input kept only;
  // --recompute auto takes the cheapest policy that fits.
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 65536");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 65536 --recompute auto");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("recomputation full"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("28 layers × 0.25 GiB: layer input (recomputation)"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --recompute auto");
  EXPECT_NE(r.output.find("recomputation none"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --recompute sometimes");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--recompute: invalid value 'sometimes' (valid: none, selective, full, auto)"), std::string::npos)
      << r.output;
  // Selective recomputation drops the norm outputs and q, k of every layer (1.7B at 65,536 tokens: 141 → 117 GiB);
  // the first N layers of each stage can be recomputed fully; offloading moves the recomputed layers' inputs to
  // pinned host memory (27 of 28 at 65,536 tokens: 6.75 GiB).
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 65536 --recompute selective");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("recomputation selective"), std::string::npos) << r.output;
  // (the activations: the peak adds the runtime reserve the committed calibration measured, which moves with it)
  EXPECT_NE(r.output.find("activations       78.66 GiB"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 65536 --recompute full --recompute-num-layers 20");
  EXPECT_NE(r.output.find("recomputation full (first 20 layers of each stage)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("20 layers × 0.25 GiB: layer input (recomputation)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("8 layers × "), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 65536 --recompute full --offload-inputs");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("host (pinned)     6.75 GiB per rank"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  layer input (recomputation)"), std::string::npos) << r.output;
  // The study's one cell that full recomputation alone does not fit: 32B at 131,072 tokens, T2 P4 on 8 × H200. Its
  // first stage holds 4 micro-batches of 16 layer inputs; auto offloads them.
  r = test::run_program("qwen3-pretrain", "--plan --model 32B --seq-len 131072 --tp 2 --pp 4 --world-size 8 "
                                          "--device-memory 141GB --recompute full");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 32B --seq-len 131072 --tp 2 --pp 4 --world-size 8 "
                                          "--device-memory 141GB --recompute auto");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("recomputation full, inputs offloaded to host"), std::string::npos) << r.output;
  for (const auto& [args, message] :
       {std::pair<std::string, std::string>{"--recompute selective --offload-inputs", "--offload-inputs needs --recompute full"},
        {"--recompute auto --offload-inputs", "auto chooses offloading itself"},
        {"--recompute selective --recompute-num-layers 3", "--recompute-num-layers applies to --recompute full"},
        {"--recompute full --recompute-num-layers -1", "--recompute-num-layers must be 0 (all layers) or positive"}}) {
    r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 " + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  }
  // 8B at 131,072 tokens on 8 × 80 GB: T4 × C2 with full recomputation plans about 52.6 GiB per rank (T4 alone: 67.2).
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 131072 --tp 4 --cp 2 --world-size 8 "
                                          "--device-memory 80GB --recompute auto");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("T4 C2 D1 P1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("context-parallel keys|values"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4098 --cp 2 --world-size 2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("must divide by 2 × cp"), std::string::npos) << r.output;
  // --plan applies every rule a CUDA run applies at start (qwen3-sweep asks it): sequence parallelism splits the
  // tokens evenly, the global batch splits over the replicas.
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4097 --tp 2 --world-size 2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--tp 2 with --device cuda: the micro-batch's 4097 tokens must divide by the tensor-parallel size"),
            std::string::npos) << r.output;
  // For tools: the same plan as one JSON object, and the presets (qwen3-sweep reads both instead of copies).
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 4096 --tp 4 --world-size 4 --format json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* field : {"\"model\":\"8B\"", "\"tp\":4", "\"fits\":true", "\"recompute\":\"none\"", "\"peak_bytes\":",
                            "\"by_category\":{\"activations\":"})
    EXPECT_NE(r.output.find(field), std::string::npos) << field << "\n" << r.output;
  r = test::run_program("qwen3-pretrain", "--list-models --format json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("{\"head_dim\":16,\"hidden_size\":64,\"intermediate_size\":192,\"name\":\"tiny\""), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("\"name\":\"32B\""), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--list-models");
  EXPECT_NE(r.output.find("tiny  vocab    512,  4 layers, hidden    64, 0.28 M parameters"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 4096 --format xml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  // The CPU reference pads a rank's tokens instead: --plan of a CPU run does not refuse what that run would take.
  r = test::run_program("qwen3-pretrain", "--plan --device cpu --model tiny --seq-len 30 --tp 4 --world-size 4 --global-batch 4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --global-batch 3 --world-size 2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--global-batch 3 is not divisible"), std::string::npos) << r.output;
  // Chunks of any length run on the GPU (each chunk's attention statistics padded to 16 bytes): 40 tokens at cp 2
  // are chunks of 10.
  r = test::run_program("qwen3-pretrain", "--plan --model tiny --seq-len 40 --cp 2 --world-size 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Issue 28 item 6: with a calibration that has none of 4B's kernels, --plan gives no step time (no tokens/s, no MFU)
// but what is missing and the qwen3-calibrate line that measures it; 1.7B at 4096, calibrated, still predicts.
TEST(MemoryPlan, PlanWithAnUnpricedOperationPrintsNoStepTimeButTheCommandThatMeasuresIt) {
  const std::string without = test::h200_calibration_without_4b(test::fresh_dir("qwen3_unpriced_plan"));
  auto r = test::run_program("qwen3-pretrain", "--plan --model 4B --seq-len 4096 --device-memory h200 --calibration " + without);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("predicted step    no step-time prediction: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" operations of this run are not in calibration h200 ("), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(e.g. embedding_bwd 2560)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gemm_fwd 2560x19456"), std::string::npos) << r.output;  // the list of what is missing
  EXPECT_NE(r.output.find("`qwen3-calibrate --models 4B --lengths 4096 --tp 1 --base "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("tokens/s"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("MFU"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("priced 0"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --device-memory h200 --calibration " + without);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("predicted step    "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" s on h200: "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("no step-time prediction"), std::string::npos) << r.output;
}

// --estimate-from: a calibration without FP8 kernels prices --precision fp8 with another card's FP8-over-bf16 ratios
// and says so (train/calibration.h CalibrationPricer); the option takes a kind or a file, never the card's own, and
// needs a calibration to estimate into.
TEST(MemoryPlan, EstimateFromPricesTheFp8KernelsACalibrationLacks) {
  Calibration c = load_calibration(test::bin_dir() + "/calibration/h200.json");
  for (auto it = c.ops.begin(); it != c.ops.end();)
    it = it->first.rfind("gemm8_", 0) == 0 || it->first.rfind("fp8_", 0) == 0 ? c.ops.erase(it) : std::next(it);
  const std::filesystem::path dir = test::fresh_dir("qwen3_estimate_from");
  const std::string path = (dir / "h200-bf16.json").string();
  std::ofstream(path) << calibration_json(c);
  const std::string args = "--plan --model 1.7B --seq-len 4096 --precision fp8 --calibration '" + path + "'";
  auto r = test::run_program("qwen3-pretrain", args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no step-time prediction"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", args + " --estimate-from h100-80gb");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" s on h200: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("FP8 kernels estimated from another card: assumed: "), std::string::npos) << r.output;
  const auto plan = test::run_program("qwen3-pretrain", args + " --estimate-from h100-80gb --format json");
  const auto j = nlohmann::json::parse(plan.output);
  EXPECT_FALSE(j["predicted"]["estimated_operations"].empty()) << j.dump();
  EXPECT_TRUE(j["predicted"]["sources"].contains("FP8 kernels estimated from another card")) << j.dump();
  r = test::run_program("qwen3-pretrain", args + " --estimate-from '" + test::bin_dir() + "/calibration/h200.json'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("is a calibration of h200, the card the prediction is for"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", args + " --estimate-from no-such-card");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--estimate-from no-such-card: not a calibration file"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain",
                        "--plan --model 1.7B --seq-len 4096 --device-memory 100GiB --estimate-from h100-80gb");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no calibration to estimate into"), std::string::npos) << r.output;
  // A run checks it at start: only a CUDA run predicts its step
  r = test::run_program("qwen3-pretrain",
                        "--model tiny --device cpu --data x.h5 --seq-len 64 --estimate-from h100-80gb");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--estimate-from prices the step prediction that --plan and CUDA runs make; this run is on "
                          "the cpu"), std::string::npos) << r.output;
}

// --attention: the plan counts the kernels the run will use (their workspace; the own kernels' separate v copy), so
// plan and engine agree by construction; the own kernels with context parallelism are refused by --plan as by a run.
TEST(MemoryPlan, PlanCountsTheChosenAttentionKernels) {
  const std::string args = "--plan --model 0.6B --seq-len 4096";
  const auto json = [&](const std::string& attention) {
    const auto r = test::run_program("qwen3-pretrain", args + " --format json" + attention);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output)["by_category"];
  };
  const auto cudnn = json(""), own = json(" --attention own");
  EXPECT_EQ(json(" --attention cudnn"), cudnn);  // the default
  EXPECT_LT(cudnn["activations"].get<std::int64_t>(), own["activations"].get<std::int64_t>());  // the own kernels' v
  EXPECT_NE(cudnn["workspace"], own["workspace"]);
  auto r = test::run_program("qwen3-pretrain", args);
  EXPECT_NE(r.output.find("  cuDNN attention workspace"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", args + " --attention own");
  EXPECT_EQ(r.output.find("cuDNN attention workspace"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  attention workspace"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model tiny --seq-len 256 --cp 2 --world-size 2 --attention own");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("needs --attention cudnn"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model tiny --seq-len 256 --attention flash");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--attention"), std::string::npos) << r.output;
  // The other settings that were environment variables are options too, checked before anything runs.
  r = test::run_program("qwen3-pretrain", "--plan --model tiny --seq-len 256 --comm-sm-margin -1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--comm-sm-margin must be 0 or more"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model tiny --seq-len 256 --comm-sm-margin 16 --no-gemm-autotune");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// --calibration alone: the plan is for the card the calibration was measured on (H200's 139.8 GiB), not the default
// H100's 79.2, so that the memory and the step time describe one card; --device-memory still decides when given.
TEST(MemoryPlan, ACalibrationAloneSetsTheCardPlannedFor) {
  const std::string h200 = test::bin_dir() + "/calibration/h200.json";
  auto r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 8192 --global-batch 32 --recompute auto --calibration " + h200);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" of 139.79 GiB: fits"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 8192 --global-batch 32 --recompute auto --device-memory h100 "
                        "--calibration " + h200);
  EXPECT_NE(r.output.find(" of 79.18 GiB"), std::string::npos) << r.output;
}

// The plan says its precision: in the header, in JSON (with the FP8 weight policy and scaling), and an fp8
// prediction's MFU is of the bf16 peak.
TEST(MemoryPlan, ThePlanNamesItsPrecision) {
  for (const std::string p : {"bf16", "fp8", "fp8 --fp8-scaling delayed"}) {
    const std::string args = "--plan --model 1.7B --seq-len 4096 --global-batch 32 --recompute auto --precision " + p;
    const bool fp8 = p != "bf16", delayed = p.find("delayed") != std::string::npos;
    const std::string named = fp8 ? delayed ? "fp8 (delayed scaling)" : "fp8" : "bf16";
    const auto text = test::run_program("qwen3-pretrain", args);
    ASSERT_EQ(text.exit_code, 0) << text.output;
    EXPECT_EQ(text.output.rfind("qwen3-pretrain --plan: 1.7B, " + named + ", seq 4096,", 0), 0u) << text.output;
    EXPECT_EQ(text.output.find("of the bf16 peak") != std::string::npos, fp8) << text.output;
    const auto j = nlohmann::json::parse(test::run_program("qwen3-pretrain", args + " --format json").output);
    EXPECT_EQ(j["precision"], fp8 ? "fp8" : "bf16");
    if (fp8) {
      EXPECT_EQ(j["fp8_weights"], "kept");
      EXPECT_EQ(j["fp8_scaling"], delayed ? "delayed" : "current");
    } else {
      EXPECT_TRUE(j["fp8_weights"].is_null());
      EXPECT_TRUE(j["fp8_scaling"].is_null());
    }
  }
}

// A calibration measured again and again (--base) describes each measurement: the plan prints its first clause and
// where the rest is (the file's `measured`), then every part of the step (a fixed buffer once cut the step's parts off
// after the fifth "added").
TEST(MemoryPlan, PlanPrintsTheStepsPartsAfterALongCalibrationDescription) {
  const auto dir = test::fresh_dir("qwen3_long_calibration");
  Calibration c = load_calibration(test::bin_dir() + "/calibration/h200.json");
  for (int i = 0; i < 12; ++i) c.measured += "; added 2026-12-06T20:14:55Z, NVIDIA H200, CUDA driver 13.0, commit 0123456789ab";
  const std::string path = (dir / "h200-long.json").string();
  std::ofstream(path) << calibration_json(c);
  const auto r = test::run_program("qwen3-pretrain", "--plan --model 1.7B --seq-len 4096 --device-memory h200 --calibration " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string first = c.measured.substr(0, c.measured.find(';'));
  EXPECT_NE(r.output.find("(calibration: " + first + " (more in the calibration's `measured`))\n      per micro-batch on "
                          "the slowest stage: forward "),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(" s; optimizer (waited for) "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" s\n      rests on:\n"), std::string::npos) << r.output;
}

TEST(MemoryPlan, AutoPutsTheSmallestShareOfTheOptimizerOnTheHostThatFits) {
  // One H200: 8B at 4,096 tokens does not fit with any recomputation (141 GiB with full recomputation and offloaded
  // inputs), nor at 131,072; with part of the optimizer state (12 bytes per parameter) in pinned host memory both do.
  // auto keeps the ladder's order — activation policies first, then the same with the optimizer on the host — and
  // takes the smallest share, in steps of 5%, that fits.
  const std::int64_t h200 = parse_memory_size("--device-memory", "h200"), GiB = 1ll << 30;
  for (std::int64_t seq : {4096, 131072}) {
    PlannedRun in{model_preset("8B"), 1, seq};
    const MemoryPolicy p = choose_memory_policy({"auto"}, in, h200, 0);
    const std::string tag = "8B at " + std::to_string(seq) + ": " + p.describe();
    EXPECT_GT(p.offload_optimizer, 0) << tag;
    in.recompute = p;
    EXPECT_LE(plan_cuda_rank_memory(in).total() + kRuntimeReserveBytes, h200) << tag;
    MemoryPolicy less = p;
    less.offload_optimizer = p.offload_optimizer - 0.05;
    in.recompute = less;
    if (less.offload_optimizer > 0) EXPECT_GT(plan_cuda_rank_memory(in).total() + kRuntimeReserveBytes, h200) << tag;
    // An activation policy earlier in the ladder with the whole optimizer on the host does not fit.
    for (MemoryPolicy earlier : {MemoryPolicy{Recompute::none}, MemoryPolicy{Recompute::selective},
                                    MemoryPolicy{Recompute::full}, MemoryPolicy{Recompute::full, 0, true}}) {
      if (earlier.mode == p.mode && earlier.offload_inputs == p.offload_inputs) break;
      earlier.offload_optimizer = 1;
      in.recompute = earlier;
      EXPECT_GT(plan_cuda_rank_memory(in).total() + kRuntimeReserveBytes, h200) << tag << " vs " << earlier.describe();
    }
    // A host that cannot pin even 5% of it: what the device alone allows (what --plan shows), which the run then
    // refuses naming the host's memory.
    const MemoryPolicy small_host = choose_memory_policy({"auto"}, PlannedRun{model_preset("8B"), 1, seq}, h200, GiB);
    EXPECT_EQ(small_host.describe(), p.describe()) << tag;
    // Given a fraction (here none), auto does not change it.
    const MemoryPolicy kept = choose_memory_policy({"auto", 0, false, 0.0}, PlannedRun{model_preset("8B"), 1, seq}, h200, 0);
    EXPECT_EQ(kept.offload_optimizer, 0) << tag;
  }
  // 8B at 131,072 tokens: full recomputation with the inputs on the device and about 80% of the optimizer on the host
  // (pinned: its 12 bytes per parameter of that share), not the inputs' 35 GiB on top.
  PlannedRun in{model_preset("8B"), 1, 131072};
  in.recompute = choose_memory_policy({"auto"}, in, h200, 0);
  EXPECT_EQ(in.recompute.mode, Recompute::full);
  EXPECT_FALSE(in.recompute.offload_inputs);
  const MemoryPlan plan = plan_cuda_rank_memory(in);
  EXPECT_GT(plan.host_pinned_bytes, 60 * GiB);
  EXPECT_LT(plan.host_pinned_bytes, 95 * GiB);
  // --plan shows it: the policy, the host's items.
  auto r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 4096 --device-memory h200 --recompute full "
                                               "--offload-optimizer");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("recomputation full, optimizer on host"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("fp32 master weights and AdamW moments on the host (--offload-optimizer)"), std::string::npos)
      << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 4096 --device-memory h200 --offload-optimizer=0.5");
  EXPECT_NE(r.output.find("recomputation none, 50% of the optimizer on host"), std::string::npos) << r.output;
  r = test::run_program("qwen3-pretrain", "--plan --model 8B --seq-len 4096 --offload-optimizer=1.5");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--offload-optimizer: the fraction of the optimizer state on the host must be between 0 and 1"),
            std::string::npos) << r.output;
}

// --host-memory: --plan checks the pinned bytes of the rank that pins most against its share of a node's memory, and
// --recompute auto chooses within that share, as a run does with its host's; without it nothing is checked.
TEST(MemoryPlan, PlanChecksPinnedHostMemoryAgainstTheNode) {
  constexpr std::int64_t GiB = 1ll << 30;
  EXPECT_EQ(pinnable_bytes_per_rank(100 * GiB, 4), static_cast<std::int64_t>(kPinnableShare * 25 * GiB));
  EXPECT_EQ(pinnable_bytes_per_rank(0, 4), 0);
  EXPECT_EQ(parse_byte_size("--host-memory", "2TB"), 2000000000000ll);
  EXPECT_THROW(parse_byte_size("--host-memory", "h200"), UsageError);  // a GPU's name is no host's size
  // With pipeline stages the first pins most (most micro-batches' inputs in flight).
  PlannedRun pipe{model_preset("1.7B"), 1, 4096, 1, 1, 4};
  pipe.micro_batches = 8;
  pipe.recompute = MemoryPolicy{Recompute::full, 0, true, 0.0};
  std::int64_t first = 0, last = 0;
  for (int s : {0, 3}) {
    pipe.stage = s;
    (s == 0 ? first : last) = plan_cuda_rank_memory(pipe).host_pinned_bytes;
  }
  EXPECT_GT(first, last);
  EXPECT_EQ(max_pinned_bytes(pipe), first);

  // 8B at 131,072 tokens on one H200 pins about 80 GiB (above): a node of 256 GiB holds it, one of 64 GiB does not
  // (no share of the optimizer both fits the device and pins less than auto's 57.6 GiB: the device's choice, which
  // pins more than the host has).
  auto plan = [](const std::string& args) {
    const auto r = test::run_program("qwen3-pretrain", "--plan --device-memory h200 --format json " + args);
    return std::pair{r.exit_code, r.exit_code == 0 || r.exit_code == 3 ? nlohmann::json::parse(r.output) : nlohmann::json()};
  };
  const std::string long8b = "--model 8B --seq-len 131072 --recompute auto";
  const auto [free_code, unchecked] = plan(long8b);
  EXPECT_EQ(free_code, 0);
  EXPECT_TRUE(unchecked["host_bytes"].is_null());
  EXPECT_TRUE(unchecked["fits_host"].get<bool>());
  const auto [big_code, big] = plan(long8b + " --host-memory 256GiB");
  EXPECT_EQ(big_code, 0) << big.dump();
  EXPECT_EQ(big["host_pinnable_bytes"].get<std::int64_t>(), pinnable_bytes_per_rank(256 * GiB, 1));
  EXPECT_EQ(big["memory_policy"], unchecked["memory_policy"]);  // the host does not bind: the same choice
  const auto [small_code, small] = plan(long8b + " --host-memory 64GiB");
  EXPECT_EQ(small_code, 3) << small.dump();
  EXPECT_TRUE(small["fits_device"].get<bool>());
  EXPECT_FALSE(small["fits_host"].get<bool>());
  EXPECT_FALSE(small["fits"].get<bool>());
  EXPECT_EQ(small["memory_policy"], unchecked["memory_policy"]);
  // The ranks on a node share it: the whole optimizer of 8B on the host, sharded over 4 ranks (about 23 GiB each),
  // fits 64 GiB as one rank per node and not as four.
  const std::string sharded = "--model 8B --seq-len 4096 --recompute full --offload-optimizer --world-size 4 --host-memory 64GiB";
  EXPECT_EQ(plan(sharded + " --ranks-per-node 1").first, 0);
  const auto [node_code, node] = plan(sharded + " --ranks-per-node 4");
  EXPECT_EQ(node_code, 3) << node.dump();
  EXPECT_EQ(node["ranks_per_node"], 4);
  EXPECT_GT(node["host_pinned_bytes"].get<std::int64_t>(), node["host_pinnable_bytes"].get<std::int64_t>());
  // The text says which limit it is, with the share's arithmetic.
  const auto text = test::run_program("qwen3-pretrain", "--plan --device-memory h200 " + sharded + " --ranks-per-node 4");
  EXPECT_EQ(text.exit_code, 3);
  EXPECT_NE(text.output.find(", 4 ranks on a node: "), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("of the host's 64.00 GiB: does NOT fit (--recompute auto aims within 90%: 14.40 GiB a rank)"),
            std::string::npos) << text.output;
  // Between the two: 14B at 1,024 on one H200 pins 115.6 GiB, above auto's aim on a 125 GiB host (112.5) and below
  // the host — the run of docs/studies/1xh200 call 4 ran there: auto's choice without the host, and it fits.
  const std::string h14 = "--model 14B --seq-len 1024 --global-batch 8 --recompute auto";
  const auto [h14_code, h14_plan] = plan(h14 + " --host-memory 125GiB");
  EXPECT_EQ(h14_code, 0) << h14_plan.dump();
  EXPECT_GT(h14_plan["host_pinned_bytes"].get<std::int64_t>(), h14_plan["host_pinnable_bytes"].get<std::int64_t>());
  EXPECT_EQ(h14_plan["memory_policy"], plan(h14).second["memory_policy"]);
  for (const std::string bad : {"--host-memory h200", "--host-memory lots", "--ranks-per-node 8", "--ranks-per-node 0"})
    EXPECT_EQ(plan(sharded + " " + bad).first, 2) << bad;
}

TEST(MemoryPlan, RunWhosePlanDoesNotFitStopsBeforeAllocating) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "qwen3_oom_predicted";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string data = (dir / "data.h5").string(), out = (dir / "run.h5").string();
  write_synthetic_dataset(data, 151936, {64}, 4, 3, false);
  // 1.7B needs about 29 GiB per rank: a 2 GB device cannot hold it, whatever this host has (no GPU needed).
  auto r = test::run_program("qwen3-pretrain", "--device cuda --model 1.7B --data '" + data +
                                                   "' --seq-len 64 --global-batch 1 --device-memory 2GB --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("the memory plan needs 30.0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--force tries anyway"), std::string::npos) << r.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "oom_predicted");
  EXPECT_GT(h5::read_attr_int(f.get(), "plan_peak_bytes"), 28ll << 30);
  EXPECT_TRUE(h5::has_attr(f.get(), "plan_activations_bytes"));
  // Offloaded inputs are pinned host memory: 27 of 1.7B's 28 layer inputs at 2^23 tokens are 864 GiB, more than this
  // host has available, so the run stops before allocating even with a device that would hold the rest.
  const std::string offload_out = (dir / "offload.h5").string();
  r = test::run_program("qwen3-pretrain", "--device cuda --model 1.7B --data '" + data + "' --seq-len 8388608 "
                        "--global-batch 1 --recompute full --offload-inputs --device-memory 100TB --out '" + offload_out + "'");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("the plan pins 864.00 GiB of host memory per rank (offloaded inputs or optimizer), 1 ranks on this host"),
            std::string::npos) << r.output;
  h5::Handle g = h5::open_read(offload_out, "results");
  EXPECT_EQ(h5::read_attr_string(g.get(), "status"), "oom_predicted");
  EXPECT_EQ(h5::read_attr_int(g.get(), "plan_host_pinned_bytes"), 864ll << 30);
  // --host-memory stands for the host's: 1.7B's whole optimizer on the host pins about 19 GiB, more than 1 GiB.
  const std::string host_out = (dir / "host.h5").string();
  r = test::run_program("qwen3-pretrain", "--device cuda --model 1.7B --data '" + data + "' --seq-len 64 --global-batch 1 "
                        "--recompute full --offload-optimizer --device-memory 100TB --host-memory 1GiB --out '" + host_out + "'");
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("and the host has 1.00 GiB (--host-memory): not allocating"), std::string::npos) << r.output;
}

TEST(MemoryPlan, SequenceRulesOfALayoutLiveInOnePlace) {
  // Context parallelism: two chunks per rank; each chunk's attention statistics start 16-byte aligned (cuDNN).
  EXPECT_THROW(check_sequence_layout(1, 30, 1, 2, false), UsageError);
  EXPECT_NO_THROW(check_sequence_layout(1, 40, 1, 2, true));
  EXPECT_EQ(lse_rows(4096, 1), 4096);
  EXPECT_EQ(lse_rows(64, 2), 32);  // chunks of 16: already aligned
  EXPECT_EQ(lse_rows(40, 2), 24);  // chunks of 10, each padded to 12 floats
  // Sequence parallelism on the GPU splits a rank's tokens evenly; the CPU reference pads them.
  EXPECT_THROW(check_sequence_layout(1, 4097, 2, 1, true), UsageError);
  EXPECT_NO_THROW(check_sequence_layout(1, 4097, 2, 1, false));
  EXPECT_NO_THROW(check_sequence_layout(2, 4097, 2, 1, true));  // 8,194 tokens in the micro-batch
}

// --precision fp8 under --recompute auto: the FP8 weight copies cast per layer come before every costlier policy
// (model/memory_policy.h); a given --fp8-weights is kept; bf16 runs never see the choice.
TEST(MemoryPlan, AutoCastsFp8WeightsPerLayerBeforeRecomputingOrOffloading) {
  PlannedRun in{model_preset("1.7B"), 1, 4096};
  in.fp8 = true;
  auto peak = [&](const MemoryPolicy& p) {
    PlannedRun x = in;
    x.recompute = p;
    return plan_cuda_rank_memory(x).peak();
  };
  MemoryPolicy per_layer{Recompute::none};
  per_layer.fp8_weights_per_layer = true;
  const std::int64_t kept_peak = peak(MemoryPolicy{Recompute::none}), per_layer_peak = peak(per_layer);
  ASSERT_LT(per_layer_peak, kept_peak);  // 27 of 28 layers' copies fewer
  const std::int64_t between = (kept_peak + per_layer_peak) / 2;
  const MemoryPolicy chosen = choose_memory_policy({"auto"}, in, between, 0);
  EXPECT_EQ(chosen.describe(), "none, FP8 weights cast per layer");
  EXPECT_EQ(choose_memory_policy({"auto"}, in, kept_peak, 0).describe(), "none");  // kept while it fits
  MemoryRequest kept{"auto"};
  kept.fp8_weights = "kept";
  EXPECT_EQ(choose_memory_policy(kept, in, between, 0).describe(), "selective");  // given: recomputation instead
  MemoryRequest given{"none"};
  given.fp8_weights = "per-layer";
  EXPECT_TRUE(choose_memory_policy(given, in, kept_peak, 0).fp8_weights_per_layer);
  in.fp8 = false;
  EXPECT_FALSE(choose_memory_policy({"auto"}, in, between / 2, 0).fp8_weights_per_layer);
}
