// Memory tracer (see memory_tracer.h).
#include "io/memory_tracer.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

namespace qwen3 {

MemoryTracer::MemoryTracer(Probe probe, std::chrono::milliseconds interval)
    : probe_(std::move(probe)), interval_(interval), start_(std::chrono::steady_clock::now()) {
  record();
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, interval_, [this] { return stopping_; });
      if (stopping_) break;
      lock.unlock();
      record();
      lock.lock();
    }
  });
}

MemoryTracer::~MemoryTracer() { stop(); }

void MemoryTracer::record() {
  const std::int64_t bytes = probe_();
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::int64_t prev = peak_.load();
  while (bytes > prev && !peak_.compare_exchange_weak(prev, bytes)) {
  }
  std::lock_guard lock(mu_);
  samples_.push_back({t, bytes});
}

void MemoryTracer::sample_now() { record(); }

std::vector<MemorySample> MemoryTracer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
    record();  // the final state
  }
  std::lock_guard lock(mu_);
  auto out = samples_;
  std::sort(out.begin(), out.end(), [](const MemorySample& a, const MemorySample& b) { return a.time_s < b.time_s; });
  return out;
}

std::int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::int64_t>(sysconf(_SC_PAGESIZE));
}

std::int64_t host_available_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  std::int64_t kib = 0;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

}  // namespace qwen3
