// Hugging Face golden files: every file of the qwen3-golden schema in tests/data passes on the CPU within 1e-5,
// the CUDA check runs where a GPU and the CUDA backend exist, and the checker's own failures are clear.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli_runner.h"
#include "cuda_test_util.h"
#include "core/error.h"
#include "io/h5.h"
#include "train/engine.h"
#include "train/golden_check.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {
std::vector<std::string> golden_files() {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(test::test_data_dir())) {
    if (e.path().extension() != ".h5") continue;
    h5::Handle f = h5::open_read(e.path().string(), "test file");
    if (h5::has_attr(f.get(), "format") && h5::read_attr_string(f.get(), "format") == "qwen3-golden")
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}
bool cuda_backend_built() {
  for (auto& d : available_devices())
    if (d == "cuda") return true;
  return false;
}
}  // namespace

TEST(Golden, EveryGoldenFilePassesOnTheCpu) {
  const auto files = golden_files();
  ASSERT_GE(files.size(), 2u) << "tests/data should hold the tied tiny file and an untied variant";
  bool saw_untied = false;
  for (const auto& file : files) {
    const GoldenReport r = run_golden_check(file, "cpu", GoldenTolerance::fp32());
    saw_untied |= !r.config.tie_word_embeddings;
    // logits + loss + (grad + after_step per parameter) + the training losses
    EXPECT_GE(r.rows.size(), 2 + 2 * 10u + 5) << file;
    for (const auto& row : r.rows) EXPECT_TRUE(row.pass()) << file << ": " << row.quantity << " " << row.rel_error;
  }
  EXPECT_TRUE(saw_untied);
}

TEST(Golden, CudaWithinBf16Tolerance) {
  if (!cuda_backend_built()) GTEST_SKIP() << "this build has no CUDA backend";
#ifdef QWEN3_HAVE_CUDA
  if (!test::cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host";
#endif
  for (const auto& file : golden_files())
    for (double on_host : {0.0, 0.5, 1.0}) {  // the optimizer on the device, half on the host, all (--offload-optimizer)
      GoldenParallel par;
      par.offload_optimizer = on_host;
      const GoldenReport r = run_golden_check(file, "cuda", GoldenTolerance::bf16(), par);
      for (const auto& row : r.rows)
        EXPECT_TRUE(row.pass()) << file << " optimizer on host " << on_host << ": " << row.quantity << " " << row.rel_error;
    }
  for (const auto& file : golden_files()) {  // the project's own attention kernels (--attention own)
    GoldenParallel par;
    par.cudnn_attention = false;
    for (const auto& row : run_golden_check(file, "cuda", GoldenTolerance::bf16(), par).rows)
      EXPECT_TRUE(row.pass()) << file << " --attention own: " << row.quantity << " " << row.rel_error;
  }
}

TEST(Golden, ACorruptedReferenceFails) {
  // The check can fail: perturb one gradient of a copy and the table must say FAIL with exit code 6.
  const auto copy = fs::path(::testing::TempDir()) / "golden_perturbed.h5";
  fs::copy_file(test::test_data_dir() + "/qwen3-tiny.h5", copy, fs::copy_options::overwrite_existing);
  {
    h5::Handle f = h5::open_rw(copy.string());
    const std::string name = "grads/model.layers.2.mlp.up_proj.weight";
    std::vector<std::int64_t> shape;
    auto g = h5::read_f32(f.get(), name, &shape);
    g[17] += 1e-3f;
    H5Ldelete(f.get(), name.c_str(), H5P_DEFAULT);
    h5::write_f32(f.get(), name, g, shape);
  }
  auto r = test::run_program("qwen3-golden-check", "--golden '" + copy.string() + "'");
  EXPECT_EQ(r.exit_code, 6) << r.output;
  EXPECT_NE(r.output.find("grad model.layers.2.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(r.output.find("FAIL"), std::string::npos) << r.output;
  fs::remove(copy);
}

TEST(Golden, CliPassesAndRejectsBadFiles) {
  auto ok = test::run_program("qwen3-golden-check", "--golden '" + test::test_data_dir() + "/qwen3-tiny.h5' --device cpu");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("0 out of tolerance: PASS"), std::string::npos) << ok.output;
  auto missing = test::run_program("qwen3-golden-check", "--golden /nonexistent.h5");
  EXPECT_EQ(missing.exit_code, 3) << missing.output;
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos);
  const auto wrong = (fs::path(::testing::TempDir()) / "not_golden.h5").string();
  { h5::Handle f = h5::create(wrong); h5::write_attr(f.get(), "format", std::string("qwen3-pretrain-dataset")); }
  auto bad = test::run_program("qwen3-golden-check", "--golden '" + wrong + "'");
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  EXPECT_NE(bad.output.find("expected 'qwen3-golden'"), std::string::npos) << bad.output;
  auto usage = test::run_program("qwen3-golden-check", "--golden x.h5 --device tpu");
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
  fs::remove(wrong);
}
