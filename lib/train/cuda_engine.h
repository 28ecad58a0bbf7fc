// The CUDA engine: bf16-mixed Qwen3 training on one GPU — bf16 weights and activations for compute, fp32 master
// weights, fp32 gradients accumulated across micro-batches, fp32 AdamW state. All memory is taken at start-up.
#pragma once
#include <memory>

#include "train/engine.h"

namespace qwen3 {

// Throws OutOfMemory (category, size, bytes in use) when the model and its activations do not fit.
std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const EngineOptions& opts);

}  // namespace qwen3
