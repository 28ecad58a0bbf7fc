// CPU float32 reference: one AdamW step (PyTorch semantics: decoupled decay, bias correction) on one tensor.
#pragma once
#include <cstdint>

namespace qwen3::cpu {

struct AdamWStep {
  double lr;
  double beta1, beta2, eps;
  double weight_decay;  // already 0 for tensors that are not decayed
  std::int64_t step;    // 1-based step count, for the bias corrections
  double grad_scale;    // multiplies every gradient first (clipping); 1 = none
};

// w, m, v: [n] float32 (master weights and fp32 moments), g: [n] gradient.
// w ← w·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  w ← w − lr·(m/(1−β1ᵗ)) / (sqrt(v/(1−β2ᵗ)) + eps)
void adamw_step(float* w, float* m, float* v, const float* g, std::int64_t n, const AdamWStep& s);

// The same step in float32 arithmetic, in the order of the CUDA kernel (ops/cuda/optimizer.cu), vectorised (AVX-512 or
// AVX2 where the CPU has them) over OpenMP's threads, also writing the bf16 copy of the new weights (w_bf16: [n] bf16
// bits, ops/cpu/bf16.h): the host optimizer's (--offload-optimizer). Equals adamw_step to float rounding, and the CUDA
// kernel's result bit for bit (both round every operation on its own, in the same order; tested on a GPU).
void adamw_step_f32(float* w, float* m, float* v, const float* g, std::uint16_t* w_bf16, std::int64_t n, const AdamWStep& s);

}  // namespace qwen3::cpu
