// Runs one of the built executables (build/bin) with arguments and captures its output and exit code.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_labels.h"

namespace qwen3::test {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Where the executables and the test data are: the build's paths, unless QWEN3_BIN_DIR / QWEN3_TEST_DATA_DIR are set
// in the environment (a build folder copied to another machine, e.g. a GPU host).
inline std::string bin_dir() {
  const char* env = std::getenv("QWEN3_BIN_DIR");
  return env ? env : QWEN3_BIN_DIR;
}
inline std::string test_data_dir() {
  const char* env = std::getenv("QWEN3_TEST_DATA_DIR");
  return env ? env : QWEN3_TEST_DATA_DIR;
}

// Runs a shell command line (stderr folded into stdout).
inline CliResult run_command(const std::string& command) {
  CliResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return r;
}

// program: a name in build/bin (e.g. "qwen3-pretrain"); args are passed to the shell as written.
inline CliResult run_program(const std::string& program, const std::string& args) {
  const std::string exe = bin_dir() + "/" + program;
  if (!std::filesystem::exists(exe)) return {-1, "missing " + exe + " (build the " + program + " target)"};
  return run_command("'" + exe + "' " + args);
}

// An empty folder for one test under the test temporary directory (whatever an earlier run left there removed).
inline std::filesystem::path fresh_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// CI (.ci/run sets CI=true; tools/bootstrap.sh installs Slurm, h5py, matplotlib, scipy, numpy) has everything a test
// needs, so there a missing tool is a failure; elsewhere (a GPU host, a laptop) the test skips, saying why.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}
#define QWEN3_REQUIRE_OR_SKIP(available, reason)                                           \
  do {                                                                                     \
    if (!(available)) {                                                                    \
      if (::qwen3::test::in_ci()) FAIL() << (reason) << " (CI=true: CI installs everything)"; \
      GTEST_SKIP() << (reason);                                                            \
    }                                                                                      \
  } while (0)

// mpirun as the tests use it: root allowed, oversubscribed (2 cores in CI), one OpenMP thread per rank, NVLink
// multicast off for NCCL. Only tests labelled mpi, slurm or gpu may start it (test_labels.h).
inline std::string mpirun(int np) {
  expect_label({"mpi", "slurm", "gpu"}, "starts mpirun");
  return "mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -x NCCL_NVLS_ENABLE=0 -np " + std::to_string(np) +
         " ";
}

// The suite's switch QWEN3_SHARED_GPU_STAGING=1 (`QWEN3_SHARED_GPU_STAGING=1 ctest -L gpu` on a host with fewer GPUs
// than a layout's ranks) as the option the binaries take: " --shared-gpu-staging " (their ranks that share a GPU
// exchange through host memory), else " ". The binaries read no environment for it.
inline bool shared_gpu_staging() {
  const char* env = std::getenv("QWEN3_SHARED_GPU_STAGING");
  return env && std::string(env) == "1";
}
inline std::string staging_option() { return shared_gpu_staging() ? " --shared-gpu-staging " : " "; }

}  // namespace qwen3::test
