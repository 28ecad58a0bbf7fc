// Where a CUDA engine's step time goes: CUDA events recorded between operations on one stream, summed per label.
// Off unless enabled (qwen3-pretrain --op-times; then mark() records an event, otherwise it does nothing). A benchmark aid,
// like Megatron's timers: each mark charges the GPU time since the previous mark on the same stream to its label.
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace qwen3::cuda {

class OpTimer {
 public:
  explicit OpTimer(bool enabled) : enabled_(enabled) {}
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;
  bool enabled() const { return enabled_; }
  // Charge the stream's work since its previous mark (or since start() on that stream) to label.
  void start(cudaStream_t s) { if (enabled_) record(s, nullptr); }
  void mark(cudaStream_t s, const char* label) { if (enabled_) record(s, label); }
  // Wait for the recorded events, add their intervals to the totals and recycle the events.
  void collect();
  void clear() { totals_.clear(); }
  // One line per label, largest first: total ms, share, calls; empty when disabled.
  std::string report() const;

 private:
  void record(cudaStream_t s, const char* label);
  bool enabled_ = false;
  std::vector<cudaEvent_t> pool_;
  struct Pending {
    cudaEvent_t event;
    cudaStream_t stream;
    const char* label;  // null for start()
  };
  std::vector<Pending> pending_;
  std::map<std::string, std::pair<double, long>> totals_;  // label -> (ms, calls)
};

}  // namespace qwen3::cuda
