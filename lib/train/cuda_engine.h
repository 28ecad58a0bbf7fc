// The CUDA engine: bf16-mixed Qwen3 training, one GPU per rank — bf16 weights and activations for compute, fp32
// master weights, fp32 gradients accumulated across micro-batches, fp32 AdamW state. All memory is taken at start-up.
// With EngineOptions::tp_comm it holds one tensor-parallel rank's share (sequence parallelism on, collectives over
// NCCL); data-parallel gradients are all-reduced over NCCL in reduce_gradients().
#pragma once
#include <memory>
#include <string>

#include "train/engine.h"

namespace qwen3 {

// Throws OutOfMemory (category, size, bytes in use) when the model and its activations do not fit.
std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const EngineOptions& opts);

// Total memory of the GPU that node-local rank `local_rank` drives; 0 when no GPU is visible.
std::int64_t cuda_device_total_bytes(int local_rank);
// Why CUDA cannot run here, in words ("" when a device is usable): no driver, a driver older than this build's
// runtime, no visible device.
std::string cuda_unusable_reason();

}  // namespace qwen3
