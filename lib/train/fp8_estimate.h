// FP8 kernels priced beyond what a calibration measured: another card's measurement through a bf16 counterpart
// measured on both (--estimate-from), and a kernel's own curve extended outside its measured token counts along its
// counterpart's curve (train/calibration.h CalibrationPricer uses both; docs/fp8.md "A card without FP8 kernels").
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "train/calibration.h"
#include "train/step_model.h"

namespace qwen3 {

// The bf16 kernel through which an FP8 kernel of one card is estimated from another's (--estimate-from): an FP8 GEMM's
// bf16 GEMM of the same kind, shape and tokens; every other FP8 kernel (amax, casts, the SwiGLUs that write FP8: all
// memory-bound) the fp32-to-bf16 cast (cast_f32_bf16, a kernel that streams at the card's bandwidth) of as many
// elements at `cast_width`. Nothing for a kernel that is not FP8.
struct Fp8Counterpart {
  std::string key;  // the bf16 kernel's OpShape::key()
  double tokens;    // where its curves are read
};
std::optional<Fp8Counterpart> fp8_estimate_counterpart(const OpShape& op, std::int64_t cast_width);

// The widest fp32-to-bf16 cast (cast_f32_bf16 <width>) a measured, and b too when given; 0 for none.
std::int64_t widest_common_cast(const Calibration& a, const Calibration* b);

// An FP8 kernel's time alone on calibration c from its curve (op's own, as measured there, cast_width: c's widest
// cast): interpolated within the curve; outside it, as the kernel's bf16 counterpart's curve runs from the nearest
// measured point where c measured the counterpart there and that far, else as interpolate_curve holds it.
// *along (may be null): set when the counterpart's curve was followed.
double fp8_kernel_time(const Calibration& c, std::int64_t cast_width, const OpShape& op,
                       const std::vector<std::pair<double, double>>& curve, bool* along);

// --estimate-from's calibration file: kind_or_file itself, or calibration/<kind>.json beside the executables
// (UsageError naming the option otherwise).
std::string estimate_source_path(const std::string& kind_or_file);
// That calibration, another card's than c (UsageError otherwise).
Calibration load_estimate_source(const std::string& kind_or_file, const Calibration& c);

}  // namespace qwen3
