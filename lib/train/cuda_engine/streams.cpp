// RAII streams and events (see streams.h).
#include "train/cuda_engine/streams.h"

#include "gpu/check.h"

namespace qwen3::cuda {

Stream::Stream(int priority) { CUDA_CHECK(cudaStreamCreateWithPriority(&s_, cudaStreamNonBlocking, priority)); }
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);  // no error check in a destructor: an earlier failure has already been reported
}
Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (s_) cudaStreamDestroy(s_);
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}

Event::Event() { CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
Event::~Event() {
  if (e_) cudaEventDestroy(e_);
}
void Event::record(cudaStream_t s) { CUDA_CHECK(cudaEventRecord(e_, s)); }
void Event::wait_on(cudaStream_t waiter) const { CUDA_CHECK(cudaStreamWaitEvent(waiter, e_, 0)); }

void fork(cudaStream_t from, cudaStream_t to, Event& fork) {
  fork.record(from);
  fork.wait_on(to);
}

StreamPriorities stream_priorities() {
  int least = 0, greatest = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  return {greatest, greatest < least ? greatest + 1 : greatest, least};
}

}  // namespace qwen3::cuda
