// Background sampler of one rank's memory in use (device memory on a GPU, resident memory on the CPU) and, where known,
// of its device's memory in use as nvidia-smi shows it; and what is known of a host allocation that failed.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qwen3 {

struct MemorySample {
  double time_s;              // seconds since the tracer started
  std::int64_t bytes;         // in use at that moment
  std::int64_t device_bytes;  // the device's memory in use (every process's, as nvidia-smi shows it); -1 unknown
};

class MemoryTracer {
 public:
  using Probe = std::function<std::int64_t()>;
  // Starts sampling `probe` (and `device`: -1 where unknown) every interval on its own thread (one sample at once).
  MemoryTracer(Probe probe, std::chrono::milliseconds interval, Probe device = nullptr);
  ~MemoryTracer();
  MemoryTracer(const MemoryTracer&) = delete;
  MemoryTracer& operator=(const MemoryTracer&) = delete;

  void sample_now();                       // an extra sample (e.g. right after a step)
  std::int64_t peak_bytes() const { return peak_.load(); }
  // The samples taken since the last call, in time order, handed over (the results file is written as the run goes,
  // so the tracer keeps only what has not been written yet).
  std::vector<MemorySample> take_new();
  // Stops the thread (idempotent) after one last sample, which take_new() still returns.
  void stop();

 private:
  void record();
  Probe probe_, device_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<std::int64_t> peak_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<MemorySample> samples_;
  std::thread thread_;
};

// Resident set size of this process, from /proc/self/statm.
std::int64_t resident_bytes();
// This host's available memory (/proc/meminfo MemAvailable), 0 where it cannot be read.
std::int64_t host_available_bytes();
// The size of the last request that the global operator new of this process could not meet (before it threw
// std::bad_alloc), -1 if none failed since the last call (a failure recovered from is not reported later). Over-aligned
// requests (operator new with std::align_val_t) are not noted.
std::int64_t last_failed_host_allocation_bytes();

}  // namespace qwen3
