// The CPU reference's number formats. Parameters, gradients and AdamW state are float32 (as the GPU backend's
// master copies); activations and activation gradients are float64, so the reference's own rounding stays far
// below every tolerance it is used for. Measured on the golden file: a float32 activation chain loses ~4e-7 of
// relative accuracy in the gradients, which one AdamW step amplifies past 1e-5 for gradients near eps.
#pragma once

namespace qwen3::cpu {
using act_t = double;
}  // namespace qwen3::cpu
