// The communicator seam under mpirun: qwen3-comm-check's known-answer collectives over MPI (CPU, in CI) and over
// NCCL (two GPUs, skipped elsewhere), CUDA data parallelism (NCCL gradient all-reduce) and CUDA tensor + sequence
// parallelism against one GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli_runner.h"
#include "io/dataset.h"
#include "io/h5.h"
#ifdef QWEN3_HAVE_CUDA
#include "cuda_test_util.h"
#endif

namespace fs = std::filesystem;
using namespace qwen3;

namespace {


int gpus() {
#if defined(QWEN3_HAVE_CUDA) && defined(QWEN3_HAVE_NCCL)
  return test::cuda_device_count();
#else
  return 0;
#endif
}
}  // namespace

TEST(CommCheck, MpiCollectivesGiveKnownAnswers) {
  for (int np : {2, 3}) {
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-comm-check' --device cpu");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
  }
}

TEST(CommCheck, NcclCollectivesGiveKnownAnswersOnTwoGpus) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  const auto r = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-comm-check' --device cuda");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 ranks, NCCL"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
}

TEST(CommCheck, CudaDataParallelEqualsOneGpu) {
  if (gpus() < 2) GTEST_SKIP() << "needs two GPUs and an NCCL build";
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_cuda_dp";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 16, 11, false);
  auto train = [&](int np) {
    const std::string out = (dir / ("np" + std::to_string(np) + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --device cuda --model tiny --data '" +
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
  const auto g = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-golden-check' --device cuda --tp 2 --golden '" +
                                   test::test_data_dir() + "/qwen3-tiny.h5'");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  EXPECT_NE(g.output.find("0 out of tolerance: PASS"), std::string::npos) << g.output;
  const fs::path dir = fs::path(::testing::TempDir()) / "qwen3_cuda_tp";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {128}, 16, 11, false);
  auto train = [&](int np) {
    const std::string out = (dir / ("tp" + std::to_string(np) + ".h5")).string();
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --device cuda --model tiny --data '" +
                                     data + "' --seq-len 128 --global-batch 4 --micro-batch 2 --steps 4 --lr 1e-2 --tp " +
                                     std::to_string(np) + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  };
  h5::Handle one = h5::open_read(train(1), "results"), two = h5::open_read(train(2), "results");
  const auto a = h5::read_f64(one.get(), "steps/loss"), b = h5::read_f64(two.get(), "steps/loss");
  ASSERT_EQ(b.size(), 4u);
  // bf16 partial sums are reduce-scattered in another order than one GPU adds them: 1e-2 relative.
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(a[i], b[i], 1e-2 * std::abs(a[i])) << "step " << i;
}
