// Progress line formatting (see progress.h).
#include "train/progress.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

std::string format_significant(double v) {
  if (!std::isfinite(v)) return std::to_string(v);
  char buf[48];
  if (v == 0) return "0";
  // Digits after the point: 2 for [1, 10), one more per decade below, none from 100 on.
  const int decimals = std::max(0, 2 - static_cast<int>(std::floor(std::log10(std::fabs(v)))));
  std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 20), v);
  return buf;
}

std::string progress_line(std::int64_t step, std::int64_t steps, const StepRecord& r, std::int64_t peak_bytes, double eta_s) {
  char buf[320];
  const int width = static_cast<int>(std::to_string(steps).size());
  std::snprintf(buf, sizeof buf,
                "step %*lld/%lld | loss %.4f | grad norm %.3f | lr %.3e | %.3f s | %.0f tok/s | %s TFLOP/s/dev | "
                "MFU %s%% | peak %s | ETA %s",
                width, static_cast<long long>(step), static_cast<long long>(steps), r.loss, r.grad_norm, r.lr,
                r.step_time_s, r.tokens_per_s, format_significant(r.tflops_per_device).c_str(),
                format_significant(100.0 * r.tflops_per_device / kPeakTflopsPerDevice).c_str(),
                format_bytes(peak_bytes).c_str(), format_duration(eta_s).c_str());
  return buf;
}

namespace {
// stdout opened a second time, non-blocking, where it is a pipe or a terminal (mpirun gives its ranks a pseudo-
// terminal or a pipe): a new open file description, so the flag touches no other process's view of it. -1 where
// stdout is a file (writes never wait) or cannot be reopened (a socket): then stdout itself.
int nonblocking_stdout() {
  static const int fd = [] {
    struct stat st {};
    if (::fstat(STDOUT_FILENO, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) return -1;
    return ::open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  }();
  return fd;
}
}  // namespace

bool print_without_blocking(const std::string& line) {
  const std::string text = line + "\n";
  const int fd = nonblocking_stdout();
  if (fd < 0) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    return true;
  }
  std::fflush(stdout);  // anything printed before through stdio first (empty once every line of a run comes here)
  // A reader that is only slow (mpirun on a loaded machine) gets up to a second per line; one that has stopped costs
  // that second once: later lines are dropped at once until one goes through again.
  static bool reader_stopped = false;
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    pollfd p{fd, POLLOUT, 0};
    if (n < 0 && errno == EAGAIN && !reader_stopped && ::poll(&p, 1, 1000) == 1) continue;
    reader_stopped = true;
    return false;
  }
  reader_stopped = false;
  return true;
}

}  // namespace qwen3
