// OpTimer (see op_timer.h).
#include "gpu/op_timer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "gpu/check.h"

namespace qwen3::cuda {

OpTimer::~OpTimer() {
  for (auto& p : pending_) cudaEventDestroy(p.event);
  for (auto e : pool_) cudaEventDestroy(e);
}

void OpTimer::record(cudaStream_t s, const char* label) {
  cudaEvent_t e;
  if (pool_.empty()) {
    CUDA_CHECK(cudaEventCreate(&e));
  } else {
    e = pool_.back();
    pool_.pop_back();
  }
  CUDA_CHECK(cudaEventRecord(e, s));
  pending_.push_back({e, s, label});
}

void OpTimer::collect() {
  if (pending_.empty()) return;
  for (const auto& p : pending_) CUDA_CHECK(cudaEventSynchronize(p.event));
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i].label == nullptr) continue;  // a start(): no interval ends here
    std::size_t j = i;  // the previous event recorded on the same stream
    while (j > 0 && pending_[j - 1].stream != pending_[i].stream) --j;
    if (j == 0) continue;
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, pending_[j - 1].event, pending_[i].event));
    auto& t = totals_[pending_[i].label];
    t.first += ms;
    t.second += 1;
  }
  for (auto& p : pending_) pool_.push_back(p.event);
  pending_.clear();
}

std::string OpTimer::report() const {
  if (!enabled_ || totals_.empty()) return {};
  std::vector<std::pair<std::string, std::pair<double, long>>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  double total = 0;
  for (const auto& r : rows) total += r.second.first;
  std::string out = "CUDA op times (--op-times), all steps:\n";
  char line[256];
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "  %10.2f ms  %5.1f%%  %7ld calls  %s\n", r.second.first,
                  100.0 * r.second.first / total, r.second.second, r.first.c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "  %10.2f ms  total\n", total);
  return out + line;
}

}  // namespace qwen3::cuda
