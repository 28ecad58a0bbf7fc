// Learning-rate schedule: linear warmup to the peak, then cosine decay to the minimum at the last step.
#pragma once
#include <cstdint>

namespace qwen3 {

// lr for 0-based `step` of `steps`: lr·(step+1)/warmup during warmup, then
// min_lr + ½(lr − min_lr)(1 + cos(π·(step − warmup)/(steps − warmup − 1))), reaching min_lr at the last step.
double learning_rate(std::int64_t step, std::int64_t steps, std::int64_t warmup, double lr, double min_lr);

}  // namespace qwen3
