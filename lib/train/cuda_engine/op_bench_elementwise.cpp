// qwen3-calibrate's measurements of the step's kernels other than GEMMs and attention (see op_bench_parts.h), one
// function per family, each on operands shaped as the engine calls the kernel.
#include <string>

#include "core/error.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/fp8_cast.h"
#include "ops/cuda/qk_norm_rope.h"
#include "ops/cuda/rmsnorm.h"
#include "train/cuda_engine/op_bench_parts.h"

namespace qwen3::cuda {
namespace {

std::size_t n(std::int64_t elements, int bytes) { return static_cast<std::size_t>(elements) * bytes; }

// RMSNorm over [T, W] rows, forward or backward (fp32 gradients in and out, the bf16 copy of dx written too).
double norm_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, W = op.dims[0];
  Buffer x(n(T * W, 2)), w(n(W, 2)), r(n(T, 4));
  fill_bf16(x.as<bf16>(), T * W, 1.0, s);
  fill_bf16(w.as<bf16>(), W, 1.0, s);
  if (op.kind == OpKind::rmsnorm_fwd) {
    Buffer y(n(T * W, 2));
    return timer.time([&] { rmsnorm_forward(x.as<bf16>(), w.as<bf16>(), y.as<bf16>(), r.as<float>(), T, W, 1e-6f, s); });
  }
  Buffer dy(n(T * W, 4)), dx(n(T * W, 4)), dw(n(W, 4)), dxb(n(T * W, 2));
  fill_f32(r.as<float>(), T, 1.0, s);
  fill_f32(dy.as<float>(), T * W, 1.0, s);
  return timer.time([&] {
    rmsnorm_backward(x.as<bf16>(), w.as<bf16>(), r.as<float>(), dy.as<float>(), dx.as<float>(), dw.as<float>(), T, W,
                     true, s, dxb.as<bf16>());
  });
}

// The q or k heads' norm and RoPE, forward or backward: [T, heads · D].
double qk_norm_rope_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, heads = op.dims[0], D = op.dims[1], count = T * heads * D;
  Buffer x(n(count, 2)), w(n(D, 2)), y(n(count, 2)), r(n(T * heads, 4)), cs(n(T * D, 4)), dw(n(D, 4));
  fill_bf16(x.as<bf16>(), count, 1.0, s);
  fill_bf16(w.as<bf16>(), D, 1.0, s);
  fill_f32(cs.as<float>(), T * D, 0.5, s);
  fill_f32(r.as<float>(), T * heads, 1.0, s);
  const QkShape q{1, T, heads, D, 1e6f, 1e-6f, heads * D, cs.as<float>(), cs.as<float>() + T * D / 2};
  if (op.kind == OpKind::qk_norm_rope_fwd)
    return timer.time([&] { qk_norm_rope_forward(x.as<bf16>(), w.as<bf16>(), y.as<bf16>(), r.as<float>(), q, s); });
  Buffer dx(n(count, 2));
  return timer.time([&] {
    qk_norm_rope_backward(x.as<bf16>(), w.as<bf16>(), r.as<float>(), y.as<bf16>(), dx.as<bf16>(), dw.as<float>(), q, s);
  });
}

// SwiGLU over the fused gate|up [T, 2W] → [T, W], forward or backward.
double swiglu_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, W = op.dims[0];
  Buffer gu(n(T * 2 * W, 2)), a(n(T * W, 2));
  fill_bf16(gu.as<bf16>(), T * 2 * W, 1.0, s);
  if (op.kind == OpKind::swiglu_fwd) return timer.time([&] { swiglu_forward(gu.as<bf16>(), a.as<bf16>(), T, W, s); });
  if (op.kind == OpKind::swiglu_fwd_fp8) {  // down's E4M3 operand [T, padded W], from a previous amax
    Buffer rows(n(T * fp8_padded(W), 1)), history(8), inv(4), amax(4);
    swiglu_forward(gu.as<bf16>(), a.as<bf16>(), T, W, s, history.as<float>());  // a source: the product's own amax
    const SwigluFwdFp8 out{rows.as<std::uint8_t>(), fp8_padded(W), history.as<float>(), history.as<float>() + 1,
                           inv.as<float>(), amax.as<float>()};
    return timer.time([&] { swiglu_forward_fp8(gu.as<bf16>(), T, W, out, s); });
  }
  Buffer da(n(T * W, 2)), dgu(n(T * 2 * W, 2));
  fill_bf16(da.as<bf16>(), T * W, 1.0, s);
  if (op.kind == OpKind::swiglu_bwd_fp8t || op.kind == OpKind::swiglu_bwd_fp8g) {
    const std::int64_t ld = fp8_padded(T);  // down's transposed E4M3 operand [W, padded T] instead of a
    Buffer at(n(W * ld, 1)), amax(4), inv(4), g_amax(4), history(8), g_inv(4);
    swiglu_forward(gu.as<bf16>(), a.as<bf16>(), T, W, s, amax.as<float>());  // the forward's amax of a scales it
    if (op.kind == OpKind::swiglu_bwd_fp8g) {  // gate|up's gradient as E5M2 [T, 2·W] and [2·W, padded T] instead
      Buffer rows(n(T * fp8_padded(2 * W), 1)), cols(n(2 * W * ld, 1));
      CUDA_CHECK(cudaMemcpyAsync(history.as<float>(), amax.as<float>(), 4, cudaMemcpyDeviceToDevice, s));  // a source
      const SwigluGradFp8 out{rows.as<std::uint8_t>(), fp8_padded(2 * W), cols.as<std::uint8_t>(), history.as<float>(),
                              history.as<float>() + 1, g_inv.as<float>()};
      return timer.time([&] {
        swiglu_backward_fp8t(gu.as<bf16>(), da.as<bf16>(), nullptr, T, W, amax.as<float>(), at.as<std::uint8_t>(), ld,
                             inv.as<float>(), s, nullptr, &out);
      });
    }
    return timer.time([&] {  // with its gradient's amax, as the engine takes it
      swiglu_backward_fp8t(gu.as<bf16>(), da.as<bf16>(), dgu.as<bf16>(), T, W, amax.as<float>(), at.as<std::uint8_t>(),
                           ld, inv.as<float>(), s, g_amax.as<float>());
    });
  }
  return timer.time([&] { swiglu_backward(gu.as<bf16>(), da.as<bf16>(), dgu.as<bf16>(), T, W, s, a.as<bf16>()); });
}

// A bf16 add (the residual under sequence parallelism) or the fp32 → bf16 cast of a received gradient: [T, W].
double add_or_cast_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, W = op.dims[0];
  if (op.kind == OpKind::add_bf16) {
    Buffer a(n(T * W, 2)), b(n(T * W, 2)), c(n(T * W, 2));
    fill_bf16(a.as<bf16>(), T * W, 1.0, s);
    fill_bf16(b.as<bf16>(), T * W, 1.0, s);
    return timer.time([&] { add(a.as<bf16>(), b.as<bf16>(), c.as<bf16>(), T * W, s); });
  }
  Buffer a(n(T * W, 4)), b(n(T * W, 2));
  fill_f32(a.as<float>(), T * W, 1.0, s);
  return timer.time([&] { cast_f32_to_bf16(a.as<float>(), b.as<bf16>(), T * W, s); });
}

// The embedding's gather [V, W] → [T, W], or its backward's scatter-add into an fp32 [V, W] gradient.
double embedding_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, W = op.dims[0], V = op.dims[1];
  Buffer ids(n(T, 4));
  fill_ids(ids.as<std::int32_t>(), T, V, s);
  if (op.kind == OpKind::embedding_fwd) {
    Buffer table(n(V * W, 2)), x(n(T * W, 2));
    fill_bf16(table.as<bf16>(), V * W, 0.02, s);
    return timer.time([&] { embedding_forward(ids.as<std::int32_t>(), table.as<bf16>(), x.as<bf16>(), T, W, s); });
  }
  Buffer dtable(n(V * W, 4)), dx(n(T * W, 4));
  fill_f32(dx.as<float>(), T * W, 1.0, s);
  CUDA_CHECK(cudaMemsetAsync(dtable.as<void>(), 0, n(V * W, 4), s));
  return timer.time([&] { embedding_backward(ids.as<std::int32_t>(), dx.as<float>(), dtable.as<float>(), T, W, s); });
}

// The loss and its gradient over [T, W] logits. Each call overwrites the logits with their gradient (as the engine
// does): later calls read gradients, the same amount of work.
double cross_entropy_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, W = op.dims[0];
  Buffer logits(n(T * W, 2)), labels(n(T, 4)), loss(n(T, 4));
  fill_bf16(logits.as<bf16>(), T * W, 1.0, s);
  fill_ids(labels.as<std::int32_t>(), T, W, s);
  return timer.time([&] {
    cross_entropy_forward_backward(logits.as<bf16>(), labels.as<std::int32_t>(), loss.as<float>(), T, W, 1.0f, s);
  });
}

// AdamW over `tokens` elements (one chunk table entry), or the gradient norm's sum of squares over as many.
double optimizer_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens;
  if (op.kind == OpKind::adamw) {
    AdamWBench adamw(T, s);
    return timer.time([&] { adamw.step(s); });
  }
  Buffer x(n(T, 4)), partial(kNormBlocks * sizeof(double)), out(sizeof(double));
  fill_f32(x.as<float>(), T, 1.0, s);
  return timer.time([&] { sum_squares(x.as<float>(), T, partial.as<double>(), out.as<double>(), s); });
}

// --precision fp8's casts of [T, W] bf16 (ops/cuda/fp8_cast.h): the amax, or the cast to the row-major copy, the
// transposed one, or both (E4M3; E5M2 casts the same way).
double fp8_op(const OpShape& op, Timer& timer, cudaStream_t s) {
  const std::int64_t T = op.tokens, W = op.dims[0];
  Buffer x(n(T * W, 2)), amax(4), inv(4), rows(n(T * fp8_padded(W), 1)), cols(n(W * fp8_padded(T), 1));
  fill_bf16(x.as<bf16>(), T * W, 1.0, s);
  if (op.kind == OpKind::fp8_amax) return timer.time([&] { fp8_amax(x.as<bf16>(), T * W, amax.as<float>(), s); });
  fp8_amax(x.as<bf16>(), T * W, amax.as<float>(), s);
  Fp8Copies out;
  if (op.kind != OpKind::fp8_cast_t) out.rows = rows.as<std::uint8_t>(), out.rows_ld = fp8_padded(W);
  if (op.kind != OpKind::fp8_cast) out.cols = cols.as<std::uint8_t>(), out.cols_ld = fp8_padded(T);
  return timer.time([&] { fp8_cast(x.as<bf16>(), T, W, amax.as<float>(), Fp8Format::e4m3, out, inv.as<float>(), s); });
}

}  // namespace

double time_elementwise(const OpShape& op, Timer& timer, cudaStream_t s) {
  switch (op.kind) {
    case OpKind::rmsnorm_fwd:
    case OpKind::rmsnorm_bwd: return norm_op(op, timer, s);
    case OpKind::qk_norm_rope_fwd:
    case OpKind::qk_norm_rope_bwd: return qk_norm_rope_op(op, timer, s);
    case OpKind::swiglu_fwd:
    case OpKind::swiglu_bwd:
    case OpKind::swiglu_bwd_fp8t:
    case OpKind::swiglu_bwd_fp8g:
    case OpKind::swiglu_fwd_fp8: return swiglu_op(op, timer, s);
    case OpKind::add_bf16:
    case OpKind::cast_f32_bf16: return add_or_cast_op(op, timer, s);
    case OpKind::embedding_fwd:
    case OpKind::embedding_bwd: return embedding_op(op, timer, s);
    case OpKind::cross_entropy: return cross_entropy_op(op, timer, s);
    case OpKind::adamw:
    case OpKind::sum_squares: return optimizer_op(op, timer, s);
    case OpKind::fp8_amax:
    case OpKind::fp8_cast:
    case OpKind::fp8_cast_t:
    case OpKind::fp8_cast_both: return fp8_op(op, timer, s);
    default: throw InternalError(std::string("qwen3-calibrate: no measurement for ") + op_kind_name(op.kind));
  }
}

}  // namespace qwen3::cuda
