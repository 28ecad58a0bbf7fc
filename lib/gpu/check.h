// Checked CUDA, cuBLAS(Lt) calls: a failure throws with the call, the file:line, host and device. Device memory
// exhaustion becomes OutOfMemory (exit 5), everything else InternalError.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

namespace qwen3::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line);

// After a kernel launch: the launch's own error (bad configuration), not the kernel's completion.
void check_launch(const char* kernel, const char* file, int line);

}  // namespace qwen3::cuda

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t qwen3_err_ = (call);                                                       \
    if (qwen3_err_ != cudaSuccess) ::qwen3::cuda::throw_cuda_error(qwen3_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t qwen3_st_ = (call);                                                     \
    if (qwen3_st_ != CUBLAS_STATUS_SUCCESS) ::qwen3::cuda::throw_cublas_error(qwen3_st_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK_LAUNCH(name) ::qwen3::cuda::check_launch(name, __FILE__, __LINE__)
