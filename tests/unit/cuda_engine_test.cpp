// The CUDA engine end to end: it trains (loss falls, results file ok), matches the CPU engine step for step within
// bf16 tolerance, and a model that cannot fit ends with status "oom" and exit code 5 within seconds. GPU only.
#include <gtest/gtest.h>

#ifdef QWEN3_HAVE_CUDA
#include <chrono>
#include <filesystem>
#include <map>
#include <tuple>
#include <utility>

#include "cli_runner.h"
#include "core/error.h"
#include "cuda_test_util.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "train/engine.h"
#include "train/memory_plan.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

// Two random sequences of 96 tokens of the tiny model, each one's last label ignored.
struct TinyBatch {
  std::vector<std::int32_t> tokens, labels;
  TinyBatch() : tokens(2 * 96), labels(2 * 96) {
    std::uniform_int_distribution<int> pick(0, 511);
    for (auto& t : tokens) t = pick(test::cuda_rng());
    for (std::size_t i = 0; i < tokens.size(); ++i) labels[i] = (i % 96 == 95) ? cpu::kIgnoreLabel : tokens[i + 1];
  }
  MicroBatch micro_batch() const { return {tokens.data(), labels.data(), 2, 96}; }
  static EngineOptions options() {  // an engine sized for it
    EngineOptions o;
    o.max_batch = 2;
    o.max_seq = 96;
    return o;
  }
};

}  // namespace

TEST(CudaEngine, OversizedModelIsOutOfMemoryNamingTheCategory) {
  QWEN3_REQUIRE_GPU();
  EngineOptions o;
  o.max_batch = 1;
  o.max_seq = 4096;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    make_engine("cuda", model_preset("32B"), o);
    FAIL() << "32B with fp32 master weights and AdamW state cannot fit one GPU";
  } catch (const OutOfMemory& e) {
    EXPECT_FALSE(e.category.empty());
    EXPECT_GT(e.requested_bytes, 0);
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
}

TEST(CudaEngine, AllocatesWhatTheMemoryPlanSays) {
  QWEN3_REQUIRE_GPU();
  const MemoryPolicy none{}, selective{Recompute::selective}, full{Recompute::full}, first2{Recompute::full, 2},
      offload{Recompute::full, 0, true}, half_on_host{Recompute::none, 0, false, 0.5}, on_host{Recompute::full, 0, true, 1.0};
  for (auto [model, seq, recompute] : {std::tuple<const char*, std::int64_t, MemoryPolicy>{"0.6B", 2048, none},
                                       {"0.6B", 8192, full}, {"0.6B", 8192, selective}, {"0.6B", 8192, first2},
                                       {"0.6B", 8192, offload}, {"tiny", 256, none}, {"0.6B", 2048, half_on_host},
                                       {"0.6B", 8192, on_host}}) {
    EngineOptions o;
    o.max_batch = 1;
    o.max_seq = seq;
    o.recompute = recompute;
    auto engine = make_engine("cuda", model_preset(model), o);
    PlannedRun in{model_preset(model), 1, seq};
    in.recompute = recompute;
    const MemoryPlan plan = plan_cuda_rank_memory(in);
    const std::string tag = std::string(model) + " recompute " + recompute.describe();
    // Every category to the byte, the workspace too (cuDNN sizes its own part; the plan's estimate of it is measured).
    EXPECT_EQ(engine->device_bytes_in_use(), plan.total()) << tag;
    for (const auto& [category, bytes] : engine->device_bytes_by_category())
      for (const auto& [c, planned] : plan.by_category())
        if (c == category) EXPECT_EQ(bytes, planned) << tag << " " << category;
    EXPECT_EQ(engine->host_pinned_bytes(), plan.host_pinned_bytes) << tag;
    if (recompute.offload_inputs || recompute.offload_optimizer > 0) EXPECT_GT(plan.host_pinned_bytes, 0) << tag;
  }
}

TEST(CudaEngine, EveryRankOfTpPpCpLayoutsAllocatesItsStagesPlan) {
  QWEN3_REQUIRE_GPU();
  // qwen3-pretrain records every rank's allocator bytes by category beside the plan of its own pipeline stage
  // (ranks/memory_*, ranks/plan_*): at cp 2 (ranks may share a GPU), tp 2 and pp 2 (a GPU per rank), for every
  // recomputation policy. Every category is equal to the byte.
  // Ranks sharing a GPU exchange through the host with --shared-gpu-staging.
  const int gpus = test::shared_gpu_staging() ? 2 : test::cuda_device_count();
  const fs::path dir = test::fresh_dir("qwen3_cuda_rank_plan");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {256}, 16, 5, false);
  std::vector<std::string> skipped;
  for (const char* layout : {"--cp 2", "--tp 2", "--pp 2"}) {
    if (std::string(layout) != "--cp 2" && gpus < 2) {
      skipped.push_back(layout);
      continue;
    }
    for (const char* policy : {"--recompute none", "--recompute selective", "--recompute full",
                               "--recompute full --recompute-num-layers 1", "--recompute full --offload-inputs"}) {
      const std::string tag = std::string(layout) + " " + policy;
      const std::string out = (dir / "run.h5").string();
      fs::remove(out);
      const auto r = test::run_command(test::mpirun(2) + "--bind-to none '" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda "
                                       "--model tiny --data '" + data + "' --seq-len 256 --global-batch 4 --micro-batch 1 "
                                       "--steps 1 " + layout + " " + policy + " --out '" + out + "'");
      ASSERT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
      h5::Handle f = h5::open_read(out, "results");
      for (const char* category : {"weights", "gradients", "optimizer_state", "activations", "workspace"}) {
        const auto used = h5::read_f64(f.get(), std::string("ranks/memory_") + category + "_bytes");
        const auto planned = h5::read_f64(f.get(), std::string("ranks/plan_") + category + "_bytes");
        ASSERT_EQ(used.size(), 2u) << tag;
        ASSERT_EQ(planned.size(), 2u) << tag;
        for (std::size_t rank = 0; rank < 2; ++rank) {
          EXPECT_EQ(used[rank], planned[rank]) << tag << " rank " << rank << " " << category;
        }
      }
    }
  }
  if (!skipped.empty())
    GTEST_SKIP() << "cp 2 compared; tp 2 and pp 2 need two GPUs (this host has " << gpus
                 << ") or QWEN3_SHARED_GPU_STAGING=1 (the suite's switch for --shared-gpu-staging)";
}

// --attention own (issue 29): the plan counts the own kernels' workspace and v copy, and the run allocates that.
TEST(CudaEngine, TheOwnAttentionKernelsAllocateTheirPlanAndEngineSettingsAreOptions) {
  QWEN3_REQUIRE_GPU();
  const fs::path dir = test::fresh_dir("qwen3_cuda_own_attention_plan");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {256}, 16, 5, false);
  for (const char* policy : {"--recompute none", "--recompute full"}) {
    const std::string out = (dir / "run.h5").string();
    fs::remove(out);
    const auto r = test::run_program("qwen3-pretrain", "--device cuda --model tiny --data '" + data + "' --seq-len 256 "
                                     "--global-batch 2 --steps 1 --attention own " + std::string(policy) + " --out '" + out + "'");
    ASSERT_EQ(r.exit_code, 0) << policy << "\n" << r.output;
    h5::Handle f = h5::open_read(out, "results");
    for (const char* category : {"weights", "gradients", "optimizer_state", "activations", "workspace"})
      EXPECT_EQ(h5::read_attr_int(f.get(), std::string("plan_") + category + "_bytes"),
                h5::read_attr_int(f.get(), std::string("memory_") + category + "_bytes")) << policy << " " << category;
  }
  // --comm-sm-margin beyond the GPU's SMs (an option since it stopped being QWEN3_COMM_SM_MARGIN): one message, exit 2.
  const auto r = test::run_program("qwen3-pretrain", "--device cuda --model tiny --data '" + data + "' --seq-len 256 "
                                   "--global-batch 2 --steps 1 --comm-sm-margin 100000 --no-gemm-autotune --out '" +
                                   (dir / "margin.h5").string() + "'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--comm-sm-margin 100000: expected 0 to "), std::string::npos) << r.output;
}

TEST(CudaEngine, SameStepsAsTheCpuEngineWithinBf16) {
  QWEN3_REQUIRE_GPU();
  const auto cfg = model_preset("tiny");
  const EngineOptions o = TinyBatch::options();
  auto cpu = make_engine("cpu", cfg, o), gpu = make_engine("cuda", cfg, o);
  const TinyBatch batch;
  const MicroBatch mb = batch.micro_batch();
  const AdamWConfig adamw;
  for (int step = 0; step < 3; ++step) {
    cpu->zero_grad();
    gpu->zero_grad();
    auto lc = cpu->forward_backward(mb, 1.0 / 190, nullptr);
    auto lg = gpu->forward_backward(mb, 1.0 / 190, nullptr);
    EXPECT_EQ(lc.count, lg.count);
    EXPECT_NEAR(lg.sum / lg.count, lc.sum / lc.count, 1e-2 * lc.sum / lc.count) << "step " << step;
    EXPECT_NEAR(gpu->grad_norm(), cpu->grad_norm(), 3e-2 * cpu->grad_norm()) << "step " << step;
    for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight",
                             "model.embed_tokens.weight", "model.layers.0.self_attn.k_norm.weight"}) {
      const auto a = gpu->gradient(name), b = cpu->gradient(name);
      EXPECT_LT(test::rel_error(test::widen(a), test::widen(b)), 5e-2) << name << " step " << step;
    }
    cpu->optimizer_step(1e-3, adamw, 1.0);
    gpu->optimizer_step(1e-3, adamw, 1.0);
  }
}

TEST(CudaEngine, RecomputationTrainsLikeKeepingActivations) {
  QWEN3_REQUIRE_GPU();
  // Every recomputation policy runs the same kernels on the same inputs as keeping everything: selective recomputes
  // the norm outputs and q, k; full the whole layer from its input (all layers, or the first 2), with the inputs in
  // pinned host memory or not. The optimizer on the host (all of it, or its last 30%) runs the CPU reference's AdamW,
  // which rounds apart from the device's at float precision. The first loss is bit-identical, the later ones differ at
  // most by the order of cuDNN's attention-gradient accumulation and that rounding (1e-3 relative).
  const fs::path dir = test::fresh_dir("qwen3_cuda_recompute");
  const auto data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {256}, 16, 77, false);
  auto train = [&](const std::string& tag, const std::string& args) {
    const auto out = (dir / (tag + ".h5")).string();
    auto r = test::run_program("qwen3-pretrain", "--device cuda --data '" + data + "' --seq-len 256 --global-batch 4 "
                               "--micro-batch 2 --steps 4 --lr 3e-3 " + args + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    h5::Handle f = h5::open_read(out, "results");
    return std::tuple{h5::read_f64(f.get(), "steps/loss"), h5::read_f64(f.get(), "steps/grad_norm"),
                      h5::read_attr_string(f.get(), "recompute"), h5::read_attr_int(f.get(), "memory_host_pinned_bytes")};
  };
  const auto [a, an, mode, pinned] = train("none", "--recompute none");
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(mode, "none");
  EXPECT_EQ(pinned, 0);
  for (const auto& [tag, args, expect_mode] :
       {std::tuple<std::string, std::string, std::string>{"selective", "--recompute selective", "selective"},
        {"full", "--recompute full", "full"},
        {"first2", "--recompute full --recompute-num-layers 2", "full"},
        {"offload", "--recompute full --offload-inputs", "full"},
        {"optimizer", "--recompute none --offload-optimizer", "none"},
        {"optimizer-part", "--recompute none --offload-optimizer=0.3", "none"}}) {
    const auto [b, bn, m, host] = train(tag, args);
    ASSERT_EQ(b.size(), 4u) << tag;
    EXPECT_EQ(m, expect_mode) << tag;
    EXPECT_EQ(host > 0, tag == "offload" || tag.rfind("optimizer", 0) == 0) << tag << " pinned host bytes " << host;
    EXPECT_EQ(a[0], b[0]) << tag;
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(a[i], b[i], 1e-3 * std::abs(a[i])) << tag << " step " << i;
      EXPECT_NEAR(an[i], bn[i], 1e-3 * std::abs(an[i])) << tag << " grad norm, step " << i;
    }
  }
  fs::remove_all(dir);
}

TEST(CudaEngine, OptimizerOnTheHostStepsLikeTheDevice) {
  QWEN3_REQUIRE_GPU();
  // --offload-optimizer: the host's AdamW (ops/cpu/adamw.h) on the window's tail, the device's kernel on its head.
  // Three steps with the same batches: the losses, the weights' change and the moments that the checkpoints read agree
  // with the all-device engine; what is set (a checkpoint's restore) reads back exactly.
  const auto cfg = model_preset("tiny");
  EngineOptions o = TinyBatch::options();
  auto device = make_engine("cuda", cfg, o);
  o.recompute.offload_optimizer = 1.0;
  auto host = make_engine("cuda", cfg, o);
  o.recompute.offload_optimizer = 0.5;
  auto half = make_engine("cuda", cfg, o);
  EXPECT_GT(host->host_pinned_bytes(), 12 * 200000);
  const TinyBatch batch;
  const MicroBatch mb = batch.micro_batch();
  std::map<std::string, std::vector<double>> start;  // the weights before the steps
  for (const auto& p : device->params().entries()) start[p.name] = test::widen(device->weights(p.name));
  for (int step = 0; step < 3; ++step) {
    std::vector<double> losses;
    for (Engine* e : {device.get(), host.get(), half.get()}) {
      e->zero_grad();
      const auto l = e->forward_backward(mb, 1.0 / 190, nullptr);
      losses.push_back(l.sum / l.count);
      e->grad_norm();
      e->optimizer_step(3e-3, AdamWConfig{}, 0.7);
    }
    EXPECT_NEAR(losses[1], losses[0], 1e-4 * losses[0]) << "step " << step;
    EXPECT_NEAR(losses[2], losses[0], 1e-4 * losses[0]) << "step " << step;
  }
  // What the three steps moved (w3 − w0) agrees within 2% (bf16 roundings of the weights differ now and then, and
  // AdamW's step for a gradient near zero follows its sign); a tensor the host missed or decayed wrongly is off by ~100%.
  auto moved = [&](Engine& e, const std::string& name) {
    auto w = test::widen(e.weights(name));
    for (std::size_t i = 0; i < w.size(); ++i) w[i] -= start[name][i];
    return w;
  };
  for (const auto& p : device->params().entries()) {
    for (Engine* e : {host.get(), half.get()}) {
      EXPECT_LT(test::rel_error(moved(*e, p.name), moved(*device, p.name)), 2e-2) << p.name;
      for (int which : {0, 1})
        EXPECT_LT(test::rel_error(test::widen(e->moment(p.name, which)), test::widen(device->moment(p.name, which))), 3e-2)
            << p.name << " moment " << which;
    }
  }
  // The CPU timed its own passes: one entry per step, each above zero; the whole optimizer's elements on `host`, about
  // half of them on `half`; none on the all-device engine.
  const auto all = host->host_optimizer_times(), part = half->host_optimizer_times();
  ASSERT_EQ(all.step_cpu_s.size(), 3u);
  for (double s : all.step_cpu_s) EXPECT_GT(s, 0);
  EXPECT_GT(static_cast<double>(all.elements), 0.9 * static_cast<double>(cfg.parameter_count()));
  EXPECT_NEAR(static_cast<double>(part.elements), 0.5 * static_cast<double>(all.elements), 0.05 * static_cast<double>(all.elements));
  EXPECT_TRUE(device->host_optimizer_times().step_cpu_s.empty());
  EXPECT_EQ(device->host_optimizer_times().elements, 0);
  const std::string name = "model.layers.3.mlp.down_proj.weight";  // at the flat buffers' tail: on the host
  std::vector<float> values(host->weights(name).size());
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0.001f * static_cast<float>(i % 97);
  host->set_weights(name, values);
  host->set_moment(name, 1, values);
  EXPECT_EQ(host->weights(name), values);
  EXPECT_EQ(host->moment(name, 1), values);
}

TEST(CudaEngine, OptimizerOnTheHostCheckpointsResumesAndExports) {
  QWEN3_REQUIRE_GPU();
  // Six steps with the whole optimizer on the host, saved at step 3: resumed with the optimizer on the host, half on
  // it, or on the device, the last three steps follow the uninterrupted run (the checkpoint holds full tensors, read
  // back from wherever they lived); --export-hf writes the final weights from the host's master copy.
  const fs::path dir = test::fresh_dir("qwen3_cuda_offload_ckpt");
  const auto data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 32, 11, false);
  auto train = [&](const std::string& tag, const std::string& args) {
    const auto out = (dir / (tag + ".h5")).string();
    auto r = test::run_program("qwen3-pretrain", "--device cuda --data '" + data + "' --seq-len 128 --global-batch 4 "
                               "--steps 6 --lr 3e-3 " + args + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    h5::Handle f = h5::open_read(out, "results");
    return h5::read_f64(f.get(), "steps/loss");
  };
  const std::string ckpt = (dir / "ckpt").string(), hf = (dir / "hf").string();
  const auto whole = train("whole", "--offload-optimizer --save '" + ckpt + "' --save-interval 3 --export-hf '" + hf + "'");
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_TRUE(fs::exists(fs::path(hf) / "config.json"));
  EXPECT_TRUE(fs::exists(fs::path(hf) / "model.safetensors"));
  for (const char* on_host : {"1", "0.5", "0"}) {
    const auto resumed = train(std::string("resumed-") + on_host,
                               std::string("--offload-optimizer=") + on_host + " --resume '" + ckpt + "/step-00000003'");
    ASSERT_EQ(resumed.size(), 3u) << on_host;
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(resumed[i], whole[3 + i], 1e-3 * whole[3 + i]) << on_host << " step " << 4 + i;
  }
  fs::remove_all(dir);
}

TEST(CudaEngine, PretrainCliTrainsAndRecordsOom) {
  QWEN3_REQUIRE_GPU();
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_cuda_cli";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 16, 1234, false);
  const auto out = (dir / "run.h5").string();
  auto r = test::run_program("qwen3-pretrain", "--device cuda --data '" + data + "' --seq-len 128 --global-batch 8 "
                             "--micro-batch 2 --steps 20 --lr 3e-3 --min-lr 3e-4 --warmup-steps 2 --out '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    h5::Handle f = h5::open_read(out, "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
    const auto loss = h5::read_f64(f.get(), "steps/loss");
    ASSERT_EQ(loss.size(), 20u);
    EXPECT_LT(loss.back(), loss.front() - 0.1);
    EXPECT_GT(h5::read_attr_int(f.get(), "memory_weights_bytes"), 0);
    EXPECT_GT(h5::read_f64(f.get(), "memory/peak_bytes")[0], 0);
  }
  // 14B does not fit one GPU: the memory plan stops the run before it allocates ...
  const auto predicted_out = (dir / "predicted.h5").string();
  auto predicted = test::run_program("qwen3-pretrain", "--device cuda --model 14B --data '" + data +
                                     "' --seq-len 128 --global-batch 8 --steps 2 --out '" + predicted_out + "'");
  EXPECT_EQ(predicted.exit_code, 5) << predicted.output;
  EXPECT_NE(predicted.output.find("the memory plan needs"), std::string::npos) << predicted.output;
  EXPECT_EQ(h5::read_attr_string(h5::open_read(predicted_out, "results").get(), "status"), "oom_predicted");
  // ... and with --force the allocator itself runs out, names the category, and the run ends cleanly.
  const auto oom_out = (dir / "oom.h5").string();
  const auto t0 = std::chrono::steady_clock::now();
  auto oom = test::run_program("qwen3-pretrain", "--device cuda --model 14B --force --data '" + data +
                               "' --seq-len 128 --global-batch 8 --steps 2 --out '" + oom_out + "'");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(oom.exit_code, 5) << oom.output;
  EXPECT_NE(oom.output.find("out of GPU memory"), std::string::npos) << oom.output;
  EXPECT_LT(seconds, 60.0);
  h5::Handle f = h5::open_read(oom_out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "oom");
  EXPECT_TRUE(h5::has_attr(f.get(), "oom_category"));
  EXPECT_GT(h5::read_attr_int(f.get(), "oom_requested_bytes"), 0);
  fs::remove_all(dir);
}

#else
TEST(CudaEngine, NotBuilt) { GTEST_SKIP() << "this build has no CUDA backend"; }
#endif
