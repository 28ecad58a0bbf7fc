// System facts for results files (see system_info.h).
#include "io/system_info.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>

#include "dist/mpi_communicator.h"
#include "git_commit.inc"
#include "io/h5.h"

#ifdef QWEN3_HAVE_CUDA
#include <cuda_runtime_api.h>
#if __has_include(<cudnn_version.h>)
#include <cudnn_version.h>
#endif
#if __has_include(<nccl.h>)
#include <nccl.h>
#endif
#endif

namespace qwen3 {

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

int cores_per_rank(int ranks_here) {
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && std::atoi(omp) > 0) return std::atoi(omp);
  cpu_set_t set;
  CPU_ZERO(&set);
  const long host = sysconf(_SC_NPROCESSORS_ONLN);
  const int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : static_cast<int>(host);
  const long share = host / std::max(1, ranks_here);
  return static_cast<int>(std::max(1L, std::min(static_cast<long>(mine), share)));
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string git_commit() { return QWEN3_GIT_COMMIT; }

std::map<std::string, std::string> library_versions() {
  std::map<std::string, std::string> v;
  v["mpi"] = mpi_library_version();
  v["hdf5"] = h5::library_version();
#ifdef QWEN3_HAVE_CUDA
  int rt = 0;
  if (cudaRuntimeGetVersion(&rt) == cudaSuccess)
    v["cuda"] = std::to_string(rt / 1000) + "." + std::to_string((rt % 1000) / 10);
  else
    v["cuda"] = "unavailable";
#ifdef CUDNN_MAJOR
  // The CPU backend does not load cuDNN or NCCL: these are the versions this binary was built against.
  v["cudnn"] = std::to_string(CUDNN_MAJOR) + "." + std::to_string(CUDNN_MINOR) + "." + std::to_string(CUDNN_PATCHLEVEL) + " (build)";
#else
  v["cudnn"] = "not built";
#endif
#ifdef NCCL_MAJOR
  v["nccl"] = std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) + "." + std::to_string(NCCL_PATCH) + " (build)";
#else
  v["nccl"] = "not built";
#endif
#else
  v["cuda"] = v["cudnn"] = v["nccl"] = "not built";
#endif
  return v;
}

}  // namespace qwen3
