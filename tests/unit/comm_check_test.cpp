// The communicator seam under mpirun: qwen3-comm-check's known-answer collectives over MPI (CPU, in CI) and over
// NCCL (two GPUs, skipped elsewhere), CUDA data parallelism (NCCL gradient all-reduce), CUDA tensor + sequence
// parallelism at tp 2 and 4 (replicated KV heads included) against one GPU, CUDA context parallelism (also on one GPU,
// its ranks sharing it), and a rank killed mid-run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cli_runner.h"
#include "killed_rank.h"
#include "io/dataset.h"
#include "io/h5.h"
#ifdef QWEN3_HAVE_CUDA
#include "cuda_test_util.h"
#endif

namespace fs = std::filesystem;
using namespace qwen3;

namespace {


// GPUs the multi-GPU layouts may use: with QWEN3_SHARED_GPU_STAGING=1 four ranks share whatever the host has (their
// collectives staged through host memory: the engine's logic checked on a one-GPU host, not NCCL's).
// staged = false: the GPUs themselves, whatever the mode.
int gpus(bool staged = true) {
#if defined(QWEN3_HAVE_CUDA) && defined(QWEN3_HAVE_NCCL)
  if (staged && test::shared_gpu_staging() && test::cuda_device_count() > 0) return 4;
  return test::cuda_device_count();
#else
  return 0;
#endif
}
}  // namespace

TEST(CommCheckMpirun, MpiCollectivesGiveKnownAnswers) {
  for (int np : {2, 3}) {
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-comm-check' --device cpu");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
  }
}

TEST(CommCheck, NcclCollectivesGiveKnownAnswersOnTwoGpus) {
  // NCCL itself, not the staging mode: two real GPUs (ranks sharing one cannot form an NCCL communicator).
  if (gpus(false) < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  const auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-comm-check' --device cuda");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 ranks, NCCL"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
}

TEST(CommCheck, CudaDataParallelEqualsOneGpu) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  const fs::path dir = test::fresh_dir("qwen3_cuda_dp");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 16, 11, false);
  auto train = [&](int np) {
    const std::string out = (dir / ("np" + std::to_string(np) + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda --model tiny --data '" +
                         data + "' --seq-len 128 --global-batch 4 --micro-batch 1 --steps 4 --lr 1e-2 --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  };
  h5::Handle one = h5::open_read(train(1), "results"), two = h5::open_read(train(2), "results");
  EXPECT_EQ(h5::read_attr_int(two.get(), "world_size"), 2);
  for (const char* s : {"steps/loss", "steps/grad_norm"}) {
    const auto a = h5::read_f64(one.get(), s), b = h5::read_f64(two.get(), s);
    ASSERT_EQ(b.size(), 4u);
    // Same documents and weights; fp32 gradient sums in another order, bf16 compute: 1e-3 relative.
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(a[i], b[i], 1e-3 * std::abs(a[i])) << s << " step " << i;
  }
}

TEST(CommCheck, CudaTensorParallelPassesTheGoldenCheckAndTrainsLikeOneGpu) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  // tp 2, and tp 4 where four GPUs are visible; qwen3-mqa.h5 has one KV head, replicated on every rank.
  std::vector<int> sizes = {2};
  if (gpus() >= 4) sizes.push_back(4);
  for (int tp : sizes)
    for (const char* file : {"qwen3-tiny.h5", "qwen3-mqa.h5"}) {
      const auto g = test::run_command(test::mpirun(tp) + "'" + test::bin_dir() + "/qwen3-golden-check'" + test::staging_option() + "--device cuda --tp " +
                                       std::to_string(tp) + " --golden '" + test::test_data_dir() + "/" + file + "'");
      EXPECT_EQ(g.exit_code, 0) << "tp " << tp << " " << file << "\n" << g.output;
      EXPECT_NE(g.output.find("0 out of tolerance: PASS"), std::string::npos) << "tp " << tp << " " << file << "\n" << g.output;
    }
  const fs::path dir = test::fresh_dir("qwen3_cuda_tp");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 16, 11, false);
  // Two micro-batches per step: the replicated weights' partial gradients accumulate before they are reduced.
  auto train = [&](int np) {
    const std::string out = (dir / ("tp" + std::to_string(np) + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda --model tiny --data '" +
                                     data + "' --seq-len 128 --global-batch 4 --micro-batch 2 --steps 4 --lr 1e-2 --tp " +
                                     std::to_string(np) + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  };
  h5::Handle one = h5::open_read(train(1), "results");
  const auto a = h5::read_f64(one.get(), "steps/loss"), an = h5::read_f64(one.get(), "steps/grad_norm");
  for (int tp : sizes) {
    h5::Handle more = h5::open_read(train(tp), "results");
    const auto b = h5::read_f64(more.get(), "steps/loss"), bn = h5::read_f64(more.get(), "steps/grad_norm");
    ASSERT_EQ(b.size(), 4u);
    // bf16 partial sums are reduce-scattered in another order than one GPU adds them: 1e-2 relative.
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(a[i], b[i], 1e-2 * std::abs(a[i])) << "tp " << tp << " step " << i;
      EXPECT_NEAR(an[i], bn[i], 2e-2 * std::abs(an[i])) << "tp " << tp << " grad norm, step " << i;
    }
  }
}

TEST(CommCheck, CudaKilledRankEndsTheJobAndTheResultsFileSaysSo) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  const int np = gpus() >= 4 ? 4 : 2;
  const auto k = test::kill_rank_during_run("cuda", np, "qwen3_cuda_killed_rank");
  EXPECT_TRUE(k.mpirun_ended) << k.output;
  EXPECT_FALSE(k.mpirun_exit_zero) << k.output;
  EXPECT_LT(k.seconds, 60) << k.output;
  EXPECT_NE(k.log.find("rank 1"), std::string::npos) << k.log;
  EXPECT_EQ(k.status, "error") << k.log;
  EXPECT_NE(k.error_message.find("terminated by signal"), std::string::npos) << k.error_message;
}

TEST(CommCheck, CudaPipelinePassesTheGoldenCheckAndTrainsLikeOneGpu) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  // pp 2; with four GPUs also pp 4 and tp 2 × pp 2; the tied tiny model (embedding on the first and last stages) and
  // the untied multi-query one.
  std::vector<std::pair<int, std::string>> layouts = {{2, "--pp 2"}};
  if (gpus() >= 4) layouts.insert(layouts.end(), {{4, "--pp 4"}, {4, "--tp 2 --pp 2"}, {4, "--pp 2 --tp 1"}});
  for (const auto& [np, args] : layouts)
    for (const char* file : {"qwen3-tiny.h5", "qwen3-mqa.h5"}) {
      if (std::string(file) == "qwen3-mqa.h5" && args == "--pp 4") continue;  // two layers
      const auto g = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-golden-check'" + test::staging_option() + "--device cuda " +
                                       args + " --golden '" + test::test_data_dir() + "/" + file + "'");
      EXPECT_EQ(g.exit_code, 0) << args << " " << file << "\n" << g.output;
      EXPECT_NE(g.output.find("0 out of tolerance: PASS"), std::string::npos) << args << " " << file << "\n" << g.output;
    }
  const fs::path dir = test::fresh_dir("qwen3_cuda_pp");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 32, 11, false);
  auto train = [&](int np, const std::string& args, const std::string& tag) {
    const std::string out = (dir / (tag + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda --model tiny --data '" +
                                     data + "' --seq-len 128 --global-batch 8 --micro-batch 1 --steps 4 --lr 1e-2 " + args +
                                     " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  };
  h5::Handle one = h5::open_read(train(1, "", "one"), "results");
  const auto a = h5::read_f64(one.get(), "steps/loss"), an = h5::read_f64(one.get(), "steps/grad_norm");
  std::vector<std::tuple<int, std::string, std::string>> runs = {{2, "--pp 2", "pp2"}};
  if (gpus() >= 4) runs.insert(runs.end(), {{4, "--pp 4", "pp4"}, {4, "--tp 2 --pp 2", "tp2pp2"}, {4, "--pp 2", "dp2pp2"},
                                 {4, "--tp 2 --pp 2 --recompute full", "tp2pp2-recompute"}});
  for (const auto& [np, args, tag] : runs) {
    h5::Handle f = h5::open_read(train(np, args, tag), "results");
    const auto b = h5::read_f64(f.get(), "steps/loss"), bn = h5::read_f64(f.get(), "steps/grad_norm");
    ASSERT_EQ(b.size(), 4u) << tag;
    // bf16 activations cross the stages as they would inside one GPU; sums in another order: 1e-2 relative.
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(a[i], b[i], 1e-2 * std::abs(a[i])) << tag << " step " << i;
      EXPECT_NEAR(an[i], bn[i], 2e-2 * std::abs(an[i])) << tag << " grad norm, step " << i;
    }
  }
}

TEST(CommCheck, CudaContextParallelPassesTheGoldenCheckAndTrainsLikeOneGpu) {
  if (gpus() < 1) GTEST_SKIP() << "needs a GPU and an NCCL build";
  // cp 2 everywhere: on one GPU its two ranks share the device and exchange keys, values and gradients through host
  // memory (NCCL refuses two ranks on one GPU); on two or more GPUs over NCCL. With four GPUs also cp 4 and cp 2 × tp 2.
  std::vector<std::pair<int, std::string>> layouts = {{2, "--cp 2"}};
  if (gpus() >= 4) layouts.insert(layouts.end(), {{4, "--cp 4"}, {4, "--cp 2 --tp 2"}});
  for (const auto& [np, args] : layouts)
    for (const char* file : {"qwen3-tiny.h5", "qwen3-mqa.h5"}) {
      const auto g = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-golden-check'" + test::staging_option() + "--device cuda " +
                                       args + " --golden '" + test::test_data_dir() + "/" + file + "'");
      EXPECT_EQ(g.exit_code, 0) << args << " " << file << "\n" << g.output;
      EXPECT_NE(g.output.find("0 out of tolerance: PASS"), std::string::npos) << args << " " << file << "\n" << g.output;
    }
  const fs::path dir = test::fresh_dir("qwen3_cuda_cp");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {256}, 32, 17, false);
  auto train = [&](int np, const std::string& args, const std::string& tag) {
    const std::string out = (dir / (tag + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda --model tiny --data '" +
                                     data + "' --seq-len 256 --global-batch 4 --micro-batch 2 --steps 4 --lr 1e-2 " + args +
                                     " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    return out;
  };
  h5::Handle one = h5::open_read(train(1, "", "one"), "results");
  const auto a = h5::read_f64(one.get(), "steps/loss"), an = h5::read_f64(one.get(), "steps/grad_norm");
  std::vector<std::tuple<int, std::string, std::string>> runs = {{2, "--cp 2", "cp2"}, {2, "--cp 2 --recompute full", "cp2-full"}};
  if (gpus() >= 4) runs.insert(runs.end(), {{4, "--cp 4", "cp4"}, {4, "--cp 2 --tp 2", "cp2tp2"}});
  for (const auto& [np, args, tag] : runs) {
    h5::Handle f = h5::open_read(train(np, args, tag), "results");
    EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok") << tag;
    const auto b = h5::read_f64(f.get(), "steps/loss"), bn = h5::read_f64(f.get(), "steps/grad_norm");
    ASSERT_EQ(b.size(), 4u) << tag;
    // The chunks' key/value gradients meet in bf16 and the ranks' sums come in another order: 1e-2 relative.
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(a[i], b[i], 1e-2 * std::abs(a[i])) << tag << " step " << i;
      EXPECT_NEAR(an[i], bn[i], 2e-2 * std::abs(an[i])) << tag << " grad norm, step " << i;
    }
    // The plan stored beside the run is what the engine allocated (cuDNN's own workspace aside, which is estimated).
    // Ranks sharing one GPU shard the optimizer over data-parallel replicas only (no NCCL across them): activations.
    std::vector<const char*> categories = {"activations"};
    if (test::cuda_device_count() >= np) categories.insert(categories.end(), {"weights", "gradients", "optimizer_state"});
    for (const char* category : categories)
      EXPECT_EQ(h5::read_attr_int(f.get(), std::string("plan_") + category + "_bytes"),
                h5::read_attr_int(f.get(), std::string("memory_") + category + "_bytes")) << tag << " " << category;
  }
  // The own attention kernels attend whole sequences only: one clear message, no results left looking complete.
  const std::string out = (dir / "own.h5").string();
  const auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda --model tiny --data '" +
                                   data + "' --seq-len 256 --global-batch 4 --steps 1 --cp 2 --attention own --out '" + out + "'");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("needs --attention cudnn"), std::string::npos) << r.output;
}

TEST(CommCheck, CudaCheckpointsResumeInAnyLayoutAndHuggingFaceWeightsLoad) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  const fs::path dir = test::fresh_dir("qwen3_cuda_ckpt");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 32, 13, false);
  auto train = [&](int np, const std::string& args, const std::string& tag) {
    const std::string out = (dir / (tag + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain'" + test::staging_option() + "--device cuda --model tiny --data '" +
                                     data + "' --seq-len 128 --global-batch 8 --micro-batch 1 --steps 6 --lr 1e-2 " + args +
                                     " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    h5::Handle f = h5::open_read(out, "results");
    return h5::read_f64(f.get(), "steps/loss");
  };
  // One GPU: saved at step 3, resumed: the same losses (cuDNN's attention backward may sum in another order: 1e-3).
  const auto whole = train(1, "--save '" + (dir / "one").string() + "' --save-interval 3", "one");
  const auto resumed = train(1, "--resume '" + (dir / "one" / "step-00000003").string() + "'", "one-resumed");
  ASSERT_EQ(whole.size(), 6u);
  ASSERT_EQ(resumed.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(resumed[i], whole[i + 3], 1e-3 * std::abs(whole[i + 3])) << "step " << i + 3;
  // Two data-parallel GPUs with the distributed optimizer (sharded moments), and with four tp 2 × pp 2: saved at
  // step 3, resumed on one GPU, against the one-GPU run (bf16 across layouts: 1e-2).
  std::vector<std::pair<int, std::string>> layouts = {{2, ""}};
  if (gpus() >= 4) layouts.push_back({4, "--tp 2 --pp 2"});
  for (const auto& [np, args] : layouts) {
    const std::string tag = "np" + std::to_string(np);
    train(np, args + " --save '" + (dir / tag).string() + "' --save-interval 3", tag);
    const auto back = train(1, "--resume '" + (dir / tag / "step-00000003").string() + "'", tag + "-on-one");
    ASSERT_EQ(back.size(), 3u) << tag;
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(back[i], whole[i + 3], 1e-2 * std::abs(whole[i + 3])) << tag << " step " << i + 3;
  }
  // Hugging Face's own checkpoint of the golden weights through the CUDA engine, at tp 1 and 2 (bf16 tolerances).
  for (int tp : {1, 2}) {
    const auto g = test::run_command(test::mpirun(tp) + "'" + test::bin_dir() + "/qwen3-golden-check'" + test::staging_option() + "--device cuda --tp " +
                                     std::to_string(tp) + " --golden '" + test::test_data_dir() + "/qwen3-tiny.h5' --init-from-hf '" +
                                     test::test_data_dir() + "/hf/tiny-fp32'");
    EXPECT_EQ(g.exit_code, 0) << g.output;
    EXPECT_NE(g.output.find("0 out of tolerance: PASS"), std::string::npos) << g.output;
  }
}
