// Rank 0's one line per step: loss, grad norm, lr, time, throughput, TFLOP/s per device, MFU, peak memory, ETA.
#pragma once
#include <cstdint>
#include <string>

#include "io/results.h"

namespace qwen3 {

// Dense bf16 peak of one H100/H200 (datasheet), the MFU denominator.
inline constexpr double kPeakTflopsPerDevice = 989.0;

std::string format_bytes(std::int64_t bytes);  // "1.23 GiB"
std::string format_duration(double seconds);    // "1:02:03"
// v with 3 significant digits in fixed notation, so small values still show: 0.00512, 0.0512, 5.12, 51.2, 512.
std::string format_significant(double v);
std::string progress_line(std::int64_t step, std::int64_t steps, const StepRecord& r, std::int64_t peak_bytes,
                          double eta_s);

}  // namespace qwen3
