// Error reporting for checked CUDA calls (see check.h).
#include "gpu/check.h"

#include "core/error.h"
#include "io/system_info.h"

namespace qwen3::cuda {
namespace {
std::string where(const char* call, const char* file, int line) {
  int dev = -1;
  cudaGetDevice(&dev);
  return std::string(call) + " at " + file + ":" + std::to_string(line) + " on " + hostname() + " GPU " + std::to_string(dev);
}
}  // namespace

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaErrorMemoryAllocation)
    throw OutOfMemory("CUDA out of memory in " + where(call, file, line), "unknown", 0, 0);
  throw InternalError(std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ") from " + where(call, file, line));
}

void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  throw InternalError(std::string("cuBLAS status ") + std::to_string(static_cast<int>(st)) + " from " + where(call, file, line));
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, kernel, file, line);
}

}  // namespace qwen3::cuda
