// SMs held for a while (see sm_hold.h): a block per SM, spinning on %globaltimer (nanoseconds) until its time is up.
#include "gpu/check.h"
#include "ops/cuda/sm_hold.h"

namespace qwen3::cuda {
namespace {

__device__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void hold_kernel(unsigned long long ns) {
  extern __shared__ char reserve[];  // only its size matters: it keeps a second block off this SM
  const unsigned long long end = global_ns() + ns;
  while (global_ns() < end) {
    if (threadIdx.x == 0) reserve[0] = 0;
  }
}

}  // namespace

void hold_sms(int blocks, double seconds, cudaStream_t stream) {
  int device = 0, shared = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  CUDA_CHECK(cudaFuncSetAttribute(hold_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared));
  hold_kernel<<<blocks, 32, static_cast<std::size_t>(shared), stream>>>(static_cast<unsigned long long>(seconds * 1e9));
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace qwen3::cuda
