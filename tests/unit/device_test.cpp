// What a user meets when the GPU is not what the run needs: no usable GPU (no driver, none visible) is one line and
// the usage exit code, --list-devices lists only the backends that run here; two ranks of a pipeline-parallel group
// on one GPU are refused with what to do (NCCL would end with "invalid usage"). Runs on any host: the GPU cases
// hide the GPU (CUDA_VISIBLE_DEVICES) or make ranks share one.
#include <gtest/gtest.h>

#include <string>

#include "cli_runner.h"
#include "io/dataset.h"
#include "train/engine.h"

using namespace qwen3;

namespace {
bool built(const std::string& device) {
  for (const auto& d : available_devices())
    if (d == device) return true;
  return false;
}
bool usable(const std::string& device) {
  for (const auto& d : usable_devices())
    if (d == device) return true;
  return false;
}
std::string tiny_dataset(const std::string& name) {
  const auto dir = test::fresh_dir(name);
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {64}, 8, 5, false);
  return data;
}
}  // namespace

TEST(Device, NoUsableGpuIsOneLineAndTheUsageExitCode) {
  if (!built("cuda")) GTEST_SKIP() << "this build has no CUDA backend";
  const std::string data = tiny_dataset("qwen3_no_gpu");
  // On a GPU host the GPUs are hidden; elsewhere (CI) there is no driver to begin with.
  const std::string hide = usable("cuda") ? "CUDA_VISIBLE_DEVICES= " : "";
  const std::string out = (std::filesystem::path(data).parent_path() / "run.h5").string();
  auto r = test::run_command(hide + "'" + test::bin_dir() + "/qwen3-pretrain' --device cuda --model tiny --data '" + data +
                             "' --seq-len 64 --global-batch 2 --steps 1 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("qwen3-pretrain: error: --device cuda: no usable GPU on this host: "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("cudaError"), std::string::npos) << "no internal error names: " << r.output;
  EXPECT_EQ(r.output.find(".cpp:"), std::string::npos) << "no source locations: " << r.output;
  // --list-devices: stdout lists what runs here; the built but unusable backend is named on stderr with the reason.
  r = test::run_command("(" + hide + "'" + test::bin_dir() + "/qwen3-pretrain' --list-devices 2>/dev/null)");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "cpu\n");
  r = test::run_command(hide + "'" + test::bin_dir() + "/qwen3-pretrain' --list-devices");
  EXPECT_NE(r.output.find("cuda is built in but cannot run here: "), std::string::npos) << r.output;
  // The golden check meets the same message.
  r = test::run_command(hide + "'" + test::bin_dir() + "/qwen3-golden-check' --device cuda --golden '" +
                        test::test_data_dir() + "/qwen3-tiny.h5'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no usable GPU on this host"), std::string::npos) << r.output;
}

TEST(DeviceGpu, ListDevicesNamesTheGpuBackendWhereAGpuWorks) {
  if (!usable("cuda")) GTEST_SKIP() << "no usable GPU on this host";
  const auto r = test::run_command("'" + test::bin_dir() + "/qwen3-pretrain' --list-devices");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "cpu\ncuda\n");
}

TEST(DeviceGpu, PipelineRanksSharingOneGpuAreRefusedWithWhatToDo) {
  if (!usable("cuda")) GTEST_SKIP() << "no usable GPU on this host";
  const std::string data = tiny_dataset("qwen3_shared_gpu");
  const std::string out = (std::filesystem::path(data).parent_path() / "run.h5").string();
  // Without the shared-GPU staging mode (--shared-gpu-staging would stage them instead of refusing).
  const auto r = test::run_command(test::mpirun(2) + "-x CUDA_VISIBLE_DEVICES=0 '" + test::bin_dir() +
                                   "/qwen3-pretrain' --device cuda --model tiny --pp 2 --data '" + data +
                                   "' --seq-len 64 --global-batch 2 --steps 1 --out '" + out + "'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--pp 2: pipeline-parallel ranks share one GPU"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Start one rank per GPU"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--shared-gpu-staging"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("invalid usage"), std::string::npos) << r.output;
}

#ifdef QWEN3_HAVE_CUDA
#include <cuda_runtime.h>

#include "train/cuda_engine.h"
#include "train/memory_plan.h"

// --device-memory's GPU names against the card itself: never more than the CUDA runtime gives a process (a plan
// that fits by the name fits the run's own check), and within 64 MiB of it.
TEST(DeviceGpu, GpuNameMeansTheCardsRealSize) {
  if (!usable("cuda")) GTEST_SKIP() << "no usable GPU on this host";
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  const std::string card = prop.name;
  const std::string name = card.find("H200") != std::string::npos           ? "h200"
                           : card.find("H100 80GB") != std::string::npos    ? "h100-80gb"
                                                                            : "";
  if (name.empty()) GTEST_SKIP() << card << " has no name in known_gpus()";
  const std::int64_t table = parse_memory_size("--device-memory", name), real = cuda_device_total_bytes(0);
  std::printf("%s: CUDA gives %lld bytes (%.2f MiB); '%s' means %lld\n", card.c_str(), static_cast<long long>(real),
              real / 1048576.0, name.c_str(), static_cast<long long>(table));
  EXPECT_LE(table, real) << card;
  EXPECT_LT(real - table, 64ll << 20) << card;
}
#endif
