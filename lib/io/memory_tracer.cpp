// Memory tracer (see memory_tracer.h).
#include "io/memory_tracer.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <new>
#include <string>

namespace qwen3 {
namespace {
std::atomic<std::int64_t> failed_request_bytes{-1};  // see last_failed_host_allocation_bytes()
}  // namespace

MemoryTracer::MemoryTracer(Probe probe, std::chrono::milliseconds interval, Probe device)
    : probe_(std::move(probe)), device_(std::move(device)), interval_(interval), start_(std::chrono::steady_clock::now()) {
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
  const std::int64_t bytes = probe_(), device_bytes = device_ ? device_() : -1;
  std::int64_t prev = peak_.load();
  while (bytes > prev && !peak_.compare_exchange_weak(prev, bytes)) {
  }
  std::lock_guard lock(mu_);  // the time is taken under the lock: samples are appended in time order
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  samples_.push_back({t, bytes, device_bytes});
}

void MemoryTracer::sample_now() { record(); }

std::vector<MemorySample> MemoryTracer::take_new() {
  std::lock_guard lock(mu_);
  std::vector<MemorySample> out;
  out.swap(samples_);
  return out;
}

void MemoryTracer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
    record();  // the final state
  }
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

std::int64_t last_failed_host_allocation_bytes() { return failed_request_bytes.exchange(-1); }

}  // namespace qwen3

// The global operator new, replaced (as the standard allows, once per program) only to note the size of a request
// it cannot meet before throwing std::bad_alloc: a host out-of-memory run records it (docs/results.md). Otherwise
// as libstdc++'s own: malloc, and the new-handler between attempts. The array and nothrow forms call this one, and
// operator delete's free() matches malloc.
void* operator new(std::size_t size) {
  if (size == 0) size = 1;
  while (true) {
    if (void* p = std::malloc(size)) return p;
    if (std::new_handler handler = std::get_new_handler()) {
      handler();
      continue;
    }
    qwen3::failed_request_bytes.store(static_cast<std::int64_t>(size));
    throw std::bad_alloc();
  }
}

// Its pair, so that every pointer from the malloc above goes back through free (what the default does; said here so
// that tools which check allocation pairs see them matched).
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
