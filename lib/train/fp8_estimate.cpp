// FP8 kernels priced beyond what a calibration measured (see fp8_estimate.h).
#include "train/fp8_estimate.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace qwen3 {

std::optional<Fp8Counterpart> fp8_estimate_counterpart(const OpShape& op, std::int64_t cast_width) {
  const auto same_shape = [&](OpKind bf16) {
    return Fp8Counterpart{OpShape{bf16, op.tokens, op.dims}.key(), static_cast<double>(op.tokens)};
  };
  switch (op.kind) {
    case OpKind::gemm8_fwd: return same_shape(OpKind::gemm_fwd);
    case OpKind::gemm8_dgrad_f32: return same_shape(OpKind::gemm_dgrad_f32);
    case OpKind::gemm8_dgrad_bf16: return same_shape(OpKind::gemm_dgrad_bf16);
    case OpKind::gemm8_wgrad: return same_shape(OpKind::gemm_wgrad);
    case OpKind::gemm8_wgrad_set: return same_shape(OpKind::gemm_wgrad_set);
    case OpKind::fp8_amax:
    case OpKind::fp8_cast:
    case OpKind::fp8_cast_t:
    case OpKind::fp8_cast_both:
    case OpKind::swiglu_bwd_fp8t:
    case OpKind::swiglu_bwd_fp8g:
    case OpKind::swiglu_fwd_fp8:  // [tokens, dims[0]]: as many elements of the cast
      if (cast_width <= 0) return std::nullopt;
      return Fp8Counterpart{OpShape{OpKind::cast_f32_bf16, 0, {cast_width}}.key(),
                            static_cast<double>(op.tokens) * static_cast<double>(op.dims[0]) /
                                static_cast<double>(cast_width)};
    default: return std::nullopt;
  }
}

std::int64_t widest_common_cast(const Calibration& a, const Calibration* b) {
  static const std::string prefix = std::string(op_kind_name(OpKind::cast_f32_bf16)) + " ";
  std::int64_t width = 0;
  for (const auto& [key, curve] : a.ops) {
    const std::string w = key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : "";
    const bool number = !w.empty() && w.size() < 12 && std::all_of(w.begin(), w.end(), [](char ch) {
      return ch >= '0' && ch <= '9';
    });
    if (number && (!b || b->ops.count(key)))
      width = std::max(width, static_cast<std::int64_t>(std::stoll(w)));
  }
  return width;
}

// Outside its points a GEMM takes less than proportionally longer while more tokens fill the GPU, and more than its
// share for fewer: its bf16 counterpart, measured over more token counts, shows by how much.
double fp8_kernel_time(const Calibration& c, std::int64_t cast_width, const OpShape& op,
                       const std::vector<std::pair<double, double>>& curve, bool* along) {
  const double tokens = static_cast<double>(op.tokens);
  if (curve.empty()) return 0;  // as interpolate_curve prices it
  const bool above = tokens > curve.back().first, below = tokens < curve.front().first;
  const auto& edge = above ? curve.back() : curve.front();
  OpShape at_edge = op;
  at_edge.tokens = static_cast<std::int64_t>(edge.first);
  const auto to = fp8_estimate_counterpart(op, cast_width), from = fp8_estimate_counterpart(at_edge, cast_width);
  const auto cp = to ? c.ops.find(to->key) : c.ops.end();
  // the counterpart measured at the kernel's nearest point (or before it) and further in the direction asked
  const bool reaches = cp != c.ops.end() && from && cp->second.front().first <= from->tokens &&
                       cp->second.back().first >= from->tokens &&
                       (above ? cp->second.back().first > from->tokens : cp->second.front().first < from->tokens);
  if (!(above || below) || !reaches) return interpolate_curve(curve, tokens, 1.0);
  if (along) *along = true;
  return edge.second * interpolate_curve(cp->second, to->tokens, 1.0) /
         interpolate_curve(cp->second, from->tokens, 1.0);
}

std::string estimate_source_path(const std::string& kind_or_file) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(kind_or_file, ec)) return kind_or_file;
  if (const auto path = find_calibration(kind_or_file)) return *path;
  throw UsageError("--estimate-from " + kind_or_file + ": not a calibration file, and no calibration of that GPU kind "
                   "beside the executables (calibration/<kind>.json)");
}

Calibration load_estimate_source(const std::string& kind_or_file, const Calibration& c) {
  Calibration r = load_calibration(estimate_source_path(kind_or_file));
  if (r.kind == c.kind)
    throw UsageError("--estimate-from " + kind_or_file + " is a calibration of " + c.kind + ", the card the prediction "
                     "is for: name another card's, or plan for a card without FP8 kernels (--device-memory h200, or "
                     "--calibration FILE)");
  return r;
}

}  // namespace qwen3
