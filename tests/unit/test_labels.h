// The ctest label of a test, from its names, by the rules of tests/CMakeLists.txt (keep the two alike): gpu, slurm,
// mpi or unit. A test that starts mpirun or needs a GPU in a suite labelled otherwise fails, naming the suffix to give
// its suite, so that `ctest -L unit` never starts a launcher and `ctest -L gpu` holds every GPU test.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>

namespace qwen3::test {

inline std::string label_of(std::string_view suite, std::string_view name) {
  if (const auto slash = suite.rfind('/'); slash != std::string_view::npos) suite.remove_prefix(slash + 1);
  const auto begins = [](std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; };
  const auto ends = [](std::string_view s, std::string_view p) { return s.size() >= p.size() && s.substr(s.size() - p.size()) == p; };
  if (begins(suite, "Cuda") || begins(suite, "Cudnn") || begins(suite, "Nccl") || ends(suite, "Gpu") || begins(name, "Cuda") ||
      begins(name, "Nccl"))
    return "gpu";
  if (ends(suite, "Slurm")) return "slurm";
  if (ends(suite, "Mpirun")) return "mpi";
  return "unit";
}

// Fails the running test unless its label is one of `allowed` (e.g. {"mpi", "slurm", "gpu"}); `what` says what it did.
inline void expect_label(std::initializer_list<std::string_view> allowed, const std::string& what) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return;
  const std::string label = label_of(info->test_suite_name(), info->name());
  for (const auto a : allowed)
    if (label == a) return;
  ADD_FAILURE() << info->test_suite_name() << "." << info->name() << " " << what << " but its ctest label is " << label
                << ": name its suite ...Mpirun (mpi), ...Slurm (slurm) or ...Gpu (gpu) as tests/CMakeLists.txt says";
}

}  // namespace qwen3::test
