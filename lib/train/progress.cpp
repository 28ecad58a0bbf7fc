// Progress line formatting (see progress.h).
#include "train/progress.h"

#include <cmath>
#include <cstdio>

namespace qwen3 {

std::string format_bytes(std::int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  const auto t = static_cast<long long>(std::llround(s));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

std::string progress_line(std::int64_t step, std::int64_t steps, const StepRecord& r, std::int64_t peak_bytes, double eta_s) {
  char buf[320];
  const int width = static_cast<int>(std::to_string(steps).size());
  std::snprintf(buf, sizeof buf,
                "step %*lld/%lld | loss %.4f | grad norm %.3f | lr %.3e | %.3f s | %.0f tok/s | %.2f TFLOP/s/dev | "
                "MFU %.2f%% | peak %s | ETA %s",
                width, static_cast<long long>(step), static_cast<long long>(steps), r.loss, r.grad_norm, r.lr,
                r.step_time_s, r.tokens_per_s, r.tflops_per_device, 100.0 * r.tflops_per_device / kPeakTflopsPerDevice,
                format_bytes(peak_bytes).c_str(), format_duration(eta_s).c_str());
  return buf;
}

}  // namespace qwen3
