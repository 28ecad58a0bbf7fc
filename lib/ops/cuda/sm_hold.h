// A benchmark aid for qwen3-calibrate: occupy some of the GPU's SMs for a while, as NCCL's kernels do (one block per
// channel) while a collective runs beside a GEMM, so the GEMM's time with fewer SMs can be measured.
#pragma once
#include <cuda_runtime.h>

namespace qwen3::cuda {

// Launches `blocks` blocks on `stream`, each taking a whole SM (the device's largest dynamic shared memory per block)
// and spinning on the global timer for `seconds`, then ending. Returns at once (asynchronous).
void hold_sms(int blocks, double seconds, cudaStream_t stream);

}  // namespace qwen3::cuda
