// Warmup + cosine learning-rate schedule (see lr_schedule.h).
#include "train/lr_schedule.h"

#include <cmath>
#include <numbers>

namespace qwen3 {

double learning_rate(std::int64_t step, std::int64_t steps, std::int64_t warmup, double lr, double min_lr) {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const std::int64_t decay_steps = steps - warmup - 1;
  if (decay_steps <= 0) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace qwen3
