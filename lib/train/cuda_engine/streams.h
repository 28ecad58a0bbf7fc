// The CUDA engine's streams and events, owned (RAII): the main stream; the backward's sequence-parallel collectives on
// the highest priority; the optimizer's side stream and the offload copies on the lowest.
#pragma once
#include <cuda_runtime.h>

namespace qwen3::cuda {

// A non-blocking stream of a given priority (lower number: higher priority).
class Stream {
 public:
  Stream() = default;
  explicit Stream(int priority);
  ~Stream();
  Stream(Stream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;
  operator cudaStream_t() const { return s_; }
  explicit operator bool() const { return s_ != nullptr; }

 private:
  cudaStream_t s_ = nullptr;
};

// An event for ordering only (no timing).
class Event {
 public:
  Event();
  ~Event();
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  operator cudaEvent_t() const { return e_; }
  void record(cudaStream_t s);
  // `waiter` waits for this event's last record.
  void wait_on(cudaStream_t waiter) const;

 private:
  cudaEvent_t e_ = nullptr;
};

// `to` waits for everything queued on `from` so far (through `fork`).
void fork(cudaStream_t from, cudaStream_t to, Event& fork);

// The device's stream priorities: greatest (collectives), main (one below), least (optimizer, offload).
struct StreamPriorities {
  int greatest, main, least;
};
StreamPriorities stream_priorities();

}  // namespace qwen3::cuda
