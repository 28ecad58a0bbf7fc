// What qwen3-calibrate's measurements (op_bench.cpp, op_bench_elementwise.cpp) share: a device buffer, operands filled
// like a model's, the L2-cold timer, AdamW as the engine runs it. Internal to train/cuda.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "gpu/check.h"
#include "ops/adamw_chunks.h"
#include "ops/cuda/init.h"
#include "ops/cuda/optimizer.h"
#include "train/step_model.h"

namespace qwen3::cuda {

using bf16 = __nv_bfloat16;

// One device buffer, freed at scope exit; it moves (its owner in a container), never copies.
class Buffer {
 public:
  explicit Buffer(std::size_t bytes) { CUDA_CHECK(cudaMalloc(&p_, std::max<std::size_t>(bytes, 256))); }
  ~Buffer() { cudaFree(p_); }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Buffer& operator=(Buffer&&) = delete;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

// Normal values (std) in a float buffer, then as bf16 when asked: operands like a model's, not zeros (which run
// faster on these GPUs than real data).
void fill_f32(float* p, std::int64_t n, double std, cudaStream_t s);
void fill_bf16(bf16* p, std::int64_t n, double std, cudaStream_t s);
// Token ids in [0, vocab) (a fixed pattern that touches many rows).
void fill_ids(std::int32_t* p, std::int64_t n, std::int64_t vocab, cudaStream_t s);

// Seconds per call as a training step meets the kernel: its operands not in the L2 cache (the step's other kernels have
// evicted them). Each call follows a write of twice the L2 cache's size; that write, timed alone the same way, is
// subtracted. One call to warm up (autotuning, plans, lazy module loading), one to size the run, then back-to-back
// pairs for at least ~20 ms (3 to 200 of them) between two events, so that a kernel bound by its launch shows it.
class Timer {
 public:
  explicit Timer(cudaStream_t s) : s_(s) {
    int l2 = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    flush_bytes_ = 2 * static_cast<std::size_t>(std::max(l2, 1 << 20));
    CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
    CUDA_CHECK(cudaEventCreate(&a_));
    CUDA_CHECK(cudaEventCreate(&b_));
    flush_s_ = run([] {}, false);
  }
  ~Timer() {
    cudaFree(flush_);
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  double time(const std::function<void()>& call) { return std::max(run(call, true) - flush_s_, 0.0); }
  // Seconds per call when `prefix` runs between the write and the call (it reads what the step's kernel before this
  // one leaves in the L2 cache), the (write, prefix) pair's own time subtracted.
  double time_after(const std::function<void()>& prefix, const std::function<void()>& call) {
    return std::max(run([&] { prefix(), call(); }, true) - run(prefix, true), 0.0);
  }
  std::size_t flush_bytes() const { return flush_bytes_; }

 private:
  void flush() { CUDA_CHECK(cudaMemsetAsync(flush_, 0, flush_bytes_, s_)); }
  // Seconds per (flush, call) pair.
  double run(const std::function<void()>& call, bool warm_up) {
    if (warm_up) call();
    CUDA_CHECK(cudaStreamSynchronize(s_));
    auto timed = [&](int n) {
      CUDA_CHECK(cudaEventRecord(a_, s_));
      for (int i = 0; i < n; ++i) flush(), call();
      CUDA_CHECK(cudaEventRecord(b_, s_));
      CUDA_CHECK(cudaEventSynchronize(b_));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, a_, b_));
      return ms / 1e3 / n;
    };
    const double one = timed(1);
    return timed(static_cast<int>(std::clamp(0.02 / std::max(one, 1e-7), 3.0, 200.0)));
  }
  cudaStream_t s_;
  void* flush_ = nullptr;
  std::size_t flush_bytes_ = 0;
  cudaEvent_t a_ = nullptr, b_ = nullptr;
  double flush_s_ = 0;
};

// AdamW over n elements as the engine runs it (one chunk table entry), its state filled once: step() launches one
// update on `stream`.
struct AdamWBench {
  explicit AdamWBench(std::int64_t n, cudaStream_t s)
      : n(n), w(bytes(4)), m(bytes(4)), v(bytes(4)), g(bytes(4)), wb(bytes(2)), chunks(make_adamw_chunks({{0, n, 1}})),
        table(chunks.size() * sizeof(AdamWChunk)) {
    for (float* p : {w.as<float>(), m.as<float>(), g.as<float>()}) fill_f32(p, n, 0.02, s);
    fill(v.as<float>(), n, 1e-4f, s);
    CUDA_CHECK(cudaMemcpyAsync(table.as<void>(), chunks.data(), chunks.size() * sizeof(AdamWChunk), cudaMemcpyHostToDevice, s));
  }
  void step(cudaStream_t s) {
    adamw_step(w.as<float>(), m.as<float>(), v.as<float>(), g.as<float>(), wb.as<bf16>(), table.as<AdamWChunk>(),
               static_cast<int>(chunks.size()), args, s);
  }
  std::size_t bytes(int per_element) const { return static_cast<std::size_t>(n) * static_cast<std::size_t>(per_element); }
  std::int64_t n;
  Buffer w, m, v, g, wb;
  std::vector<AdamWChunk> chunks;
  Buffer table;
  AdamWArgs args{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f, 1.0f};
};

// Seconds per call of an op that is neither a GEMM nor attention (norms, RoPE, SwiGLU, adds and casts, embedding,
// the loss, AdamW, the gradient norm's sum of squares), on `timer`'s stream. InternalError for a kind it cannot run.
double time_elementwise(const OpShape& op, Timer& timer, cudaStream_t s);

}  // namespace qwen3::cuda
