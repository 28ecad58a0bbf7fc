// qwen3-calibrate's measurements on one GPU (see op_bench.h).
#include "train/cuda_engine/op_bench.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/device_allocator.h"
#include "gpu/gemm.h"
#include "ops/cpu/adamw.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/init.h"
#include "ops/fp8.h"
#include "ops/cuda/optimizer.h"
#include "ops/cuda/qk_norm_rope.h"
#include "ops/cuda/rmsnorm.h"
#include "ops/cuda/sm_hold.h"
#include "train/buffer_table.h"
#include "train/cuda_engine/device_buffers.h"
#include "train/cuda_engine/host_optimizer.h"
#include "train/cuda_engine/op_bench_parts.h"
#include "train/cuda_engine/streams.h"
#ifdef QWEN3_HAVE_CUDNN
#include "gpu/cudnn_attention.h"
#endif

namespace qwen3::cuda {
class CudnnAttention;  // defined with cuDNN only; LayerForward holds a pointer to it either way
namespace {

// The forward GEMM the SMs-held measurement slows: 1.7B's gate|up (2,048 → 12,288) at `tokens` rows.
struct GateUpGemm {
  GateUpGemm(std::int64_t tokens, cudaStream_t s)
      : T(tokens), w(static_cast<std::size_t>(kOut * kIn) * 2), x(static_cast<std::size_t>(T * kIn) * 2),
        y(static_cast<std::size_t>(T * kOut) * 2) {
    fill_bf16(w.as<bf16>(), kOut * kIn, 0.02, s);
    fill_bf16(x.as<bf16>(), T * kIn, 1.0, s);
  }
  void run(Gemm& gemm, cudaStream_t s) { gemm.forward(x.as<bf16>(), w.as<bf16>(), y.as<bf16>(), nullptr, T, kIn, kOut, s); }
  static constexpr std::int64_t kIn = 2048, kOut = 12288;
  std::int64_t T;
  Buffer w, x, y;
};

// One decoder layer's forward as the engine runs it at `tokens` rows, in 1.7B's shapes (hidden 2,048; 16 query and 8
// key/value heads of 128; intermediate 6,144): norm, q|k|v GEMM, q and k norm+RoPE read from its columns, cuDNN
// attention, output GEMM with the residual, norm, gate|up GEMM, SwiGLU, down GEMM with the residual — the kernels the
// next step's forward runs while AdamW runs beside it (global batch 1). Each of the kLayers layers has its own weights,
// as the engine's do: with one set for all, the forward alone found a layer's weights partly in the L2 cache that
// AdamW's stream beside it evicts, and the overlap measured low. Its input is never overwritten: every run does the
// same work.
struct LayerForward {
  static constexpr std::int64_t H = 2048, kHeads = 16, kKvHeads = 8, D = 128, I = 6144;
  static constexpr std::int64_t Q = kHeads * D, KV = kKvHeads * D, QKV = Q + 2 * KV;
  static constexpr int kLayers = 28;  // 1.7B's
  // One layer's parameters (its weights, two norms, the q and k norms): one segment of the engine's AdamW.
  static constexpr std::int64_t parameters() { return QKV * H + H * Q + 2 * I * H + H * I + 2 * H + 2 * D; }
  // attention: the bench's (nullptr without cuDNN).
  LayerForward(std::int64_t tokens, CudnnAttention* attention, cudaStream_t s)
      : T(tokens), attention(attention), x(n(T * H, 2)), norm_w(n(H, 2)), normed(n(T * H, 2)), rstd(n(T, 4)),
        qkv(n(T * QKV, 2)), qk_w(n(D, 2)), q(n(T * Q, 2)), k(n(T * KV, 2)), q_rstd(n(T * kHeads, 4)),
        k_rstd(n(T * kKvHeads, 4)), rope(n(T * D, 4)), o(n(T * Q, 2)), lse(n(kHeads * T, 4)), h1(n(T * H, 2)),
        gu(n(T * 2 * I, 2)), act(n(T * I, 2)), out(n(T * H, 2)) {
    fill_bf16(x.as<bf16>(), T * H, 1.0, s);
    for (auto& [buffer, count] : {std::pair{&norm_w, H}, {&qk_w, D}}) fill_bf16(buffer->as<bf16>(), count, 1.0, s);
    for (int l = 0; l < kLayers; ++l) {
      Weights& w = weights.emplace_back();
      for (auto& [buffer, count] : {std::pair{&w.qkv, QKV * H}, {&w.o, H * Q}, {&w.gu, 2 * I * H}, {&w.down, H * I}})
        fill_bf16(buffer->as<bf16>(), count, 0.02, s);
    }
    fill_f32(rope.as<float>(), T * D, 0.5, s);
#ifdef QWEN3_HAVE_CUDNN
    workspace = std::make_unique<Buffer>(attention->workspace_bytes(shape()));
#endif
  }
#ifdef QWEN3_HAVE_CUDNN
  SdpaShape shape() const { return SdpaShape{1, T, kHeads, kKvHeads, D, Q, KV, QKV, Q}; }
#endif
  // Layer l's forward (its own weights).
  void run(Gemm& gemm, int l, cudaStream_t s) {
    const Weights& w = weights[static_cast<std::size_t>(l)];
    rmsnorm_forward(x.as<bf16>(), norm_w.as<bf16>(), normed.as<bf16>(), rstd.as<float>(), T, H, 1e-6f, s);
    gemm.forward(normed.as<bf16>(), w.qkv.as<bf16>(), qkv.as<bf16>(), nullptr, T, H, QKV, s);
    const float* cos = rope.as<float>();
    const float* sin = cos + T * D / 2;
    qk_norm_rope_forward(qkv.as<bf16>(), qk_w.as<bf16>(), q.as<bf16>(), q_rstd.as<float>(),
                         QkShape{1, T, kHeads, D, 1e6f, 1e-6f, QKV, cos, sin}, s);
    qk_norm_rope_forward(qkv.as<bf16>() + Q, qk_w.as<bf16>(), k.as<bf16>(), k_rstd.as<float>(),
                         QkShape{1, T, kKvHeads, D, 1e6f, 1e-6f, QKV, cos, sin}, s);
#ifdef QWEN3_HAVE_CUDNN
    attention->forward(q.as<bf16>(), k.as<bf16>(), qkv.as<bf16>() + Q + KV, o.as<bf16>(), lse.as<float>(), shape(),
                       workspace->as<void>(), s);
#endif  // without cuDNN the engine has no attention to run either
    gemm.forward(o.as<bf16>(), w.o.as<bf16>(), h1.as<bf16>(), x.as<bf16>(), T, Q, H, s);
    rmsnorm_forward(h1.as<bf16>(), norm_w.as<bf16>(), normed.as<bf16>(), rstd.as<float>(), T, H, 1e-6f, s);
    gemm.forward(normed.as<bf16>(), w.gu.as<bf16>(), gu.as<bf16>(), nullptr, T, H, 2 * I, s);
    swiglu_forward(gu.as<bf16>(), act.as<bf16>(), T, I, s);
    gemm.forward(act.as<bf16>(), w.down.as<bf16>(), out.as<bf16>(), h1.as<bf16>(), T, I, H, s);
  }
  static std::size_t n(std::int64_t elements, int bytes) { return static_cast<std::size_t>(elements) * bytes; }
  // One layer's GEMM weights: q|k|v [QKV, H], output [H, Q], gate|up [2I, H], down [H, I].
  struct Weights {
    Buffer qkv{n(QKV * H, 2)}, o{n(H * Q, 2)}, gu{n(2 * I * H, 2)}, down{n(H * I, 2)};
  };
  std::int64_t T;
  CudnnAttention* attention;
  std::vector<Weights> weights;  // kLayers of them
  Buffer x, norm_w, normed, rstd, qkv, qk_w, q, k, q_rstd, k_rstd, rope, o, lse, h1, gu, act, out;
  std::unique_ptr<Buffer> workspace;
};

}  // namespace

struct OpBench::Impl {
  cudaStream_t stream = nullptr;
  Buffer workspace{static_cast<std::size_t>(kGemmWorkspaceBytes)};
  Gemm gemm{workspace.as<void>(), static_cast<std::size_t>(kGemmWorkspaceBytes)};
#ifdef QWEN3_HAVE_CUDNN
  CudnnAttention attention;
#endif
  std::unique_ptr<Timer> timer;
  Impl() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    timer = std::make_unique<Timer>(stream);
  }
  ~Impl() {
    timer.reset();
    cudaStreamDestroy(stream);
  }
  double time_calls(const std::function<void()>& call, cudaStream_t) { return timer->time(call); }

  // A GEMM as the step meets it: the weights (and, for a weight gradient, the saved input) out of the L2 cache, the
  // activation the kernel before it wrote or read — the input of a forward GEMM, the output gradient of a backward
  // one — in it as far as it fits (read again after the cache's write, that read's time subtracted). Until the fifth
  // session of 2026-12-06 every operand was out of the cache; the engine's op timer then put the weight-gradient
  // GEMMs at 1,024 tokens 18% faster in the step than alone (their output gradient, up to 25 MiB, still cached).
  // An FP8 GEMM (gpu/gemm.h), its operands as the casts lay them out (contraction dimension padded), every code 1.0
  // and every scale 1 (an FP8 GEMM's time does not depend on its values); the activation operand in the L2 cache as
  // above.
  double gemm8_op(const OpShape& op) {
    const std::int64_t T = op.tokens, in = op.dims[0], out = op.dims[1];
    const cudaStream_t s = stream;
    const bool forward = op.kind == OpKind::gemm8_fwd, wgrad = op.kind == OpKind::gemm8_wgrad || op.kind == OpKind::gemm8_wgrad_set;
    const std::int64_t k = forward ? fp8_padded(in) : wgrad ? fp8_padded(T) : fp8_padded(out);
    const std::int64_t a_rows = forward ? out : in, b_rows = forward ? T : wgrad ? out : T;  // A: W, Wᵀ or xᵀ; B: x, dy or dyᵀ
    Buffer a(static_cast<std::size_t>(a_rows * k)), b(static_cast<std::size_t>(b_rows * k)), one(4);
    CUDA_CHECK(cudaMemsetAsync(a.as<void>(), 0x38, static_cast<std::size_t>(a_rows * k), s));  // 1.0 in E4M3
    CUDA_CHECK(cudaMemsetAsync(b.as<void>(), forward ? 0x38 : 0x3c, static_cast<std::size_t>(b_rows * k), s));  // E5M2 1.0
    fill(one.as<float>(), 1, 1.0f, s);
    const Gemm::Fp8 A{a.as<std::uint8_t>(), one.as<float>(), k}, B{b.as<std::uint8_t>(), one.as<float>(), k};
    Buffer partial(kNormBlocks * sizeof(double)), sum(sizeof(double));
    const auto cached = [&] { sum_squares(b.as<float>(), b_rows * k / 4, partial.as<double>(), sum.as<double>(), s); };
    if (forward) {
      Buffer y(static_cast<std::size_t>(T * out) * 2);
      return timer->time_after(cached, [&] { gemm.forward(B, A, y.as<bf16>(), nullptr, T, out, s); });
    }
    if (!wgrad) {
      Buffer dx(static_cast<std::size_t>(T * in) * 4);
      if (op.kind == OpKind::gemm8_dgrad_bf16)
        return timer->time_after(cached, [&] { gemm.backward_data(B, A, dx.as<bf16>(), T, in, s); });
      return timer->time_after(cached, [&] { gemm.backward_data(B, A, dx.as<float>(), T, in, false, s); });
    }
    Buffer dw(static_cast<std::size_t>(out * in) * 4);
    CUDA_CHECK(cudaMemsetAsync(dw.as<void>(), 0, static_cast<std::size_t>(out * in) * 4, s));
    const bool accumulate = op.kind == OpKind::gemm8_wgrad;
    return timer->time_after(cached, [&] { gemm.backward_weight(B, A, dw.as<float>(), in, out, accumulate, s); });
  }

  double gemm_op(const OpShape& op) {
    if (is_fp8_gemm(op.kind)) return gemm8_op(op);
    const std::int64_t T = op.tokens, in = op.dims[0], out = op.dims[1];
    const cudaStream_t s = stream;
    Buffer w(static_cast<std::size_t>(out * in) * 2);
    fill_bf16(w.as<bf16>(), out * in, 0.02, s);
    Buffer partial(kNormBlocks * sizeof(double)), sum(sizeof(double));
    auto cached = [&](const Buffer& b, std::int64_t bf16s) {  // reads the bf16s values of b (as half as many floats)
      return [&b, bf16s, &partial, &sum, s] {
        sum_squares(b.as<float>(), bf16s / 2, partial.as<double>(), sum.as<double>(), s);
      };
    };
    switch (op.kind) {
      case OpKind::gemm_fwd: {
        Buffer x(static_cast<std::size_t>(T * in) * 2), y(static_cast<std::size_t>(T * out) * 2);
        fill_bf16(x.as<bf16>(), T * in, 1.0, s);
        return timer->time_after(cached(x, T * in),
                                 [&] { gemm.forward(x.as<bf16>(), w.as<bf16>(), y.as<bf16>(), nullptr, T, in, out, s); });
      }
      case OpKind::gemm_dgrad_f32: {
        Buffer dy(static_cast<std::size_t>(T * out) * 2), dx(static_cast<std::size_t>(T * in) * 4);
        fill_bf16(dy.as<bf16>(), T * out, 1.0, s);
        return timer->time_after(cached(dy, T * out), [&] {
          gemm.backward_data(dy.as<bf16>(), w.as<bf16>(), dx.as<float>(), T, in, out, false, s);
        });
      }
      case OpKind::gemm_dgrad_bf16: {
        Buffer dy(static_cast<std::size_t>(T * out) * 2), dx(static_cast<std::size_t>(T * in) * 2);
        fill_bf16(dy.as<bf16>(), T * out, 1.0, s);
        return timer->time_after(cached(dy, T * out),
                                 [&] { gemm.backward_data(dy.as<bf16>(), w.as<bf16>(), dx.as<bf16>(), T, in, out, s); });
      }
      default: {  // gemm_wgrad (adds to dW) and gemm_wgrad_set (writes it: β = 0)
        Buffer dy(static_cast<std::size_t>(T * out) * 2), x(static_cast<std::size_t>(T * in) * 2),
            dw(static_cast<std::size_t>(out * in) * 4);
        fill_bf16(dy.as<bf16>(), T * out, 1.0, s);
        fill_bf16(x.as<bf16>(), T * in, 1.0, s);
        CUDA_CHECK(cudaMemsetAsync(dw.as<void>(), 0, static_cast<std::size_t>(out * in) * 4, s));
        const bool accumulate = op.kind == OpKind::gemm_wgrad;
        return timer->time_after(cached(dy, T * out), [&] {
          gemm.backward_weight(dy.as<bf16>(), x.as<bf16>(), dw.as<float>(), T, in, out, accumulate, s);
        });
      }
    }
  }

  // One sequence's attention as the engine calls it (train/cuda/attention.cpp): the normed, rotated q and k in buffers
  // of their own, v (and dv) in the fused q|k|v projection's columns, the output and its gradient packed.
  double attention_op(const OpShape& op) {
#ifdef QWEN3_HAVE_CUDNN
    const std::int64_t S = op.tokens, h = op.dims[0], kvh = op.dims[1], D = op.dims[2];
    const std::int64_t qd = h * D, kvd = kvh * D, qkv = qd + 2 * kvd;
    const SdpaShape shape{1, S, h, kvh, D, qd, kvd, qkv, qd};
    const cudaStream_t s = stream;
    Buffer q(static_cast<std::size_t>(S * qd) * 2), k(static_cast<std::size_t>(S * kvd) * 2),
        x(static_cast<std::size_t>(S * qkv) * 2), o(static_cast<std::size_t>(S * qd) * 2),
        lse(static_cast<std::size_t>(h * S) * 4), ws(attention.workspace_bytes(shape));
    fill_bf16(q.as<bf16>(), S * qd, 1.0, s);
    fill_bf16(k.as<bf16>(), S * kvd, 1.0, s);
    fill_bf16(x.as<bf16>(), S * qkv, 1.0, s);
    const bf16* v = x.as<bf16>() + qd + kvd;
    if (op.kind == OpKind::attention_fwd)
      return time_calls([&] { attention.forward(q.as<bf16>(), k.as<bf16>(), v, o.as<bf16>(), lse.as<float>(), shape, ws.as<void>(), s); }, s);
    Buffer dout(static_cast<std::size_t>(S * qd) * 2), dq(static_cast<std::size_t>(S * qd) * 2),
        dk(static_cast<std::size_t>(S * kvd) * 2), dx(static_cast<std::size_t>(S * qkv) * 2);
    fill_bf16(dout.as<bf16>(), S * qd, 1.0, s);
    attention.forward(q.as<bf16>(), k.as<bf16>(), v, o.as<bf16>(), lse.as<float>(), shape, ws.as<void>(), s);
    return time_calls([&] {
      attention.backward(q.as<bf16>(), k.as<bf16>(), v, o.as<bf16>(), dout.as<bf16>(), lse.as<float>(), dq.as<bf16>(),
                         dk.as<bf16>(), dx.as<bf16>() + qd + kvd, shape, ws.as<void>(), s);
    }, s);
#else
    throw InternalError("qwen3-calibrate: built without cuDNN, whose attention the engine runs");
#endif
  }
};

double OpBench::optimizer_hidden_share(std::int64_t tokens) {
  Impl& b = *impl_;
  // The engine's two streams with the engine's priorities (streams.h): the main stream one below the greatest, the
  // optimizer's the least, so the forward's kernels are placed first and AdamW's fill the SMs they leave. Until the
  // fourth session of 2026-12-06 the main stream here had the default priority, the optimizer's own.
  const cuda::Stream main_stream(stream_priorities().main), side_stream(stream_priorities().least);
  const cudaStream_t main = main_stream, side = side_stream;
  // As the engine's step runs it (param_update.cpp): AdamW segment by segment on the side stream, one layer's
  // parameters each, and each layer's forward on the main stream waiting for its own segment — so a layer's forward
  // runs beside the next layer's AdamW. Until the third session of 2026-12-06 the two streams ran free of each other
  // (AdamW queued whole first, then the forwards), which hid 4% at 1,024 tokens on an H100 where the engine's step hid
  // about a third.
#ifdef QWEN3_HAVE_CUDNN
  LayerForward layer(tokens, &b.attention, main);
#else
  LayerForward layer(tokens, nullptr, main);
#endif
  AdamWBench adamw(LayerForward::parameters(), main);
  cudaEvent_t start, end_main, end_side, segment_done;
  for (cudaEvent_t* e : {&start, &end_main, &end_side}) CUDA_CHECK(cudaEventCreate(e));
  CUDA_CHECK(cudaEventCreateWithFlags(&segment_done, cudaEventDisableTiming));
  // Seconds from `start` to the later of the two streams' ends, over `passes` of LayerForward::kLayers layers: the
  // forwards alone, AdamW's segments alone, or both with each forward waiting for its segment.
  auto span = [&](int passes, bool forwards, bool adamws) {
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaEventRecord(start, main));
    CUDA_CHECK(cudaStreamWaitEvent(side, start, 0));
    for (int p = 0; p < passes; ++p)
      for (int l = 0; l < LayerForward::kLayers; ++l) {
        if (adamws) {
          adamw.step(side);
          CUDA_CHECK(cudaEventRecord(segment_done, side));
          // The forward takes this record: the wait is issued just after it.
          if (forwards) CUDA_CHECK(cudaStreamWaitEvent(main, segment_done, 0));
        }
        if (forwards) layer.run(b.gemm, l, main);
      }
    CUDA_CHECK(cudaEventRecord(end_main, main));
    CUDA_CHECK(cudaEventRecord(end_side, side));
    CUDA_CHECK(cudaDeviceSynchronize());
    float a_ms = 0, b_ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&a_ms, start, end_main));
    CUDA_CHECK(cudaEventElapsedTime(&b_ms, start, end_side));
    return std::max(a_ms, b_ms) / 1e3;
  };
  span(1, true, true);  // warm-up: autotuning, modules
  const double one_pass = span(1, true, true);
  const int passes = static_cast<int>(std::clamp(0.06 / one_pass, 1.0, 100.0));  // about 60 ms of work together
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {  // the best of three
    const double tf = span(passes, true, false), ta = span(passes, false, true), both = span(passes, true, true);
    best = std::max(best, std::clamp((tf + ta - both) / std::min(tf, ta), 0.0, 1.0));
  }
  for (cudaEvent_t e : {start, end_main, end_side, segment_done}) cudaEventDestroy(e);
  return best;
}

double OpBench::gemm_slowdown_with_sms_held(int sms) {
  Impl& b = *impl_;
  const cudaStream_t main = b.stream;
  cudaStream_t side = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  GateUpGemm gemm(4096, main);
  cudaEvent_t start, end;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&end));
  // Seconds of k GEMMs on the main stream; with `held` SMs taken first by the side stream's kernel, which a short
  // one-block wait on the main stream gives time to be placed.
  auto gemms = [&](int k, int held) {
    CUDA_CHECK(cudaDeviceSynchronize());
    if (held > 0) {
      hold_sms(held, 0.2, side);
      hold_sms(1, 0.002, main);
    }
    CUDA_CHECK(cudaEventRecord(start, main));
    for (int i = 0; i < k; ++i) gemm.run(b.gemm, main);
    CUDA_CHECK(cudaEventRecord(end, main));
    CUDA_CHECK(cudaDeviceSynchronize());
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
    return ms / 1e3;
  };
  gemms(1, 0);  // warm-up: autotuning, modules
  const int k = static_cast<int>(std::clamp(0.02 / gemms(1, 0), 1.0, 1000.0));
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) best = std::min(best, gemms(k, sms) / gemms(k, 0));
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  cudaStreamDestroy(side);
  return std::max(best, 1.0);
}

OpBench::OpBench() : impl_(std::make_unique<Impl>()) {}
OpBench::~OpBench() = default;

std::int64_t OpBench::own_bytes() const {
  return kGemmWorkspaceBytes + static_cast<std::int64_t>(impl_->timer->flush_bytes());
}

std::int64_t stream_bytes(int streams, int events) {
  const std::int64_t before = device_used_bytes();
  std::vector<cudaStream_t> s(static_cast<std::size_t>(streams));
  std::vector<cudaEvent_t> e(static_cast<std::size_t>(events));
  for (auto& x : s) CUDA_CHECK(cudaStreamCreateWithPriority(&x, cudaStreamNonBlocking, 0));
  for (auto& x : e) CUDA_CHECK(cudaEventCreateWithFlags(&x, cudaEventDisableTiming));
  for (auto& x : s) CUDA_CHECK(cudaStreamSynchronize(x));
  const std::int64_t after = device_used_bytes();
  for (auto& x : e) cudaEventDestroy(x);
  for (auto& x : s) cudaStreamDestroy(x);
  return after - before;
}

double OpBench::time(const OpShape& op) {
  if (is_gemm(op.kind)) return impl_->gemm_op(op);
  if (is_attention(op.kind)) return impl_->attention_op(op);
  return time_elementwise(op, *impl_->timer, impl_->stream);
}

std::int64_t device_used_bytes() {
  std::size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return static_cast<std::int64_t>(total - free);
}

void measure_host(Calibration& c, int threads) {
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  // Pinned copies of 256 MiB, each way: the best of five.
  constexpr std::size_t kBytes = 256u << 20;
  void* host = nullptr;
  CUDA_CHECK(cudaMallocHost(&host, kBytes));
  {
    Buffer dev(kBytes);
    auto rate = [&](cudaMemcpyKind kind) {
      double best = 0;
      for (int i = 0; i < 5; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        if (kind == cudaMemcpyHostToDevice) CUDA_CHECK(cudaMemcpyAsync(dev.as<void>(), host, kBytes, kind, s));
        else CUDA_CHECK(cudaMemcpyAsync(host, dev.as<void>(), kBytes, kind, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        best = std::max(best, kBytes / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    c.h2d_bytes_per_s = rate(cudaMemcpyHostToDevice);
    c.d2h_bytes_per_s = rate(cudaMemcpyDeviceToHost);
    // A host round trip as the engine makes one per micro-batch (read_scalar): a scalar copied back behind the
    // stream's work, waited for. The median of 200.
    std::vector<double> trips;
    for (int i = 0; i < 200; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      CUDA_CHECK(cudaMemcpyAsync(host, dev.as<void>(), sizeof(double), cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      trips.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(trips.begin(), trips.begin() + 100, trips.end());
    c.sync_s = trips[100];
  }
  CUDA_CHECK(cudaFreeHost(host));
  cudaStreamDestroy(s);
  {  // 8 GiB of pinned host memory: what its mapping costs on the device
    constexpr std::size_t kPinned = 8ull << 30;
    const std::int64_t before = device_used_bytes();
    void* p = nullptr;
    CUDA_CHECK(cudaHostAlloc(&p, kPinned, cudaHostAllocDefault));
    c.pinned_map_bytes_per_byte = static_cast<double>(device_used_bytes() - before) / kPinned;
    CUDA_CHECK(cudaFreeHost(p));
  }
  // The CPU's AdamW as a run's host optimizer does it (train/cuda/host_optimizer.h, on the buffer table's pinned
  // entries): 2^26 gradients streamed down in pieces while the CPU passes run on `threads` threads and bf16 weights go
  // up; the rate is the passes' own time, as a run records it (ranks/host_optimizer_cpu_s): three steps after one.
  constexpr std::int64_t kN = 1ll << 26;
  double cpu_s = 0;
  {
    const Stream st(stream_priorities().least);  // the optimizer's stream, as in a run
    DeviceAllocator alloc;
    const DeviceBuffers state(host_optimizer_buffers(kN), alloc);
    HostOptimizer opt(state, 0, {{AdamWChunk{0, kN, 1}}}, threads);
    Buffer g(static_cast<std::size_t>(kN) * 4), wb(static_cast<std::size_t>(kN) * 2);
    CUDA_CHECK(cudaMemsetAsync(g.as<void>(), 0, static_cast<std::size_t>(kN) * 4, st));
    const cpu::AdamWStep a{1e-4, 0.9, 0.95, 1e-8, 0.1, 10, 1.0};
    Event ready;
    for (int step = 0; step < 4; ++step) {
      ready.record(st);
      opt.begin_step(a, ready);
      opt.update_segment(0, g.as<float>(), wb.as<bf16>(), st);
    }
    const std::vector<double> steps = opt.step_cpu_seconds();
    CUDA_CHECK(cudaStreamSynchronize(st));
    for (std::size_t i = 1; i < steps.size(); ++i) cpu_s += steps[i];
  }
  c.cpu_adamw_elements_per_s = 3.0 * kN / cpu_s;
  c.cpu_threads = threads;
}

}  // namespace qwen3::cuda
