// cuDNN fused causal GQA attention (gpu/cudnn_attention.h) against the float64 CPU reference (ops/cpu/attention.h)
// on fresh random bf16 inputs, in packed [B,S,H,D] layouts and inside a fused [T, q+2kv] projection buffer. Every
// output starts poisoned with NaN bytes (DeviceBuffer), so an element cuDNN never writes fails the comparison.
// Skipped where no CUDA device is present.
//
// Tolerances, as relative errors ‖gpu − ref‖ / ‖ref‖ over a whole tensor (the same as the project's own kernels,
// cuda_attention_test.cpp): out, dq, dk, dv ≤ 2e-2 (bf16 operands, P and dS rounded to bf16 before the tensor-core
// products; cuDNN lands near 2–3e-3 on an H100); lse ≤ 1e-3 (fp32 row statistics; measured ~5e-8).
#if defined(QWEN3_HAVE_CUDA) && defined(QWEN3_HAVE_CUDNN)

#include "gpu/cudnn_attention.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda_test_util.h"
#include "ops/cpu/attention.h"

namespace {

using qwen3::test::DeviceBuffer;
using qwen3::test::rel_error;
using qwen3::test::widen;

constexpr double kTolBf16 = 2e-2;
constexpr double kTolLse = 1e-3;

struct Case {
  const char* name;
  std::int64_t batch, seq, heads, kv_heads, head_dim;
  bool fused_qkv;  // q|k|v side by side in one [T, q+2kv] buffer (and dq|dk|dv in another), else packed tensors
};

// Host [rows, width] ↔ device rows `pitch` elements apart.
void upload_rows(__nv_bfloat16* dst, std::int64_t pitch, const std::vector<__nv_bfloat16>& src, std::int64_t rows,
                 std::int64_t width) {
  ASSERT_EQ(cudaMemcpy2D(dst, pitch * sizeof(__nv_bfloat16), src.data(), width * sizeof(__nv_bfloat16),
                         width * sizeof(__nv_bfloat16), rows, cudaMemcpyHostToDevice),
            cudaSuccess);
}
std::vector<double> download_rows(const __nv_bfloat16* src, std::int64_t pitch, std::int64_t rows, std::int64_t width) {
  std::vector<__nv_bfloat16> h(static_cast<std::size_t>(rows * width));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy2D(h.data(), width * sizeof(__nv_bfloat16), src, pitch * sizeof(__nv_bfloat16),
                         width * sizeof(__nv_bfloat16), rows, cudaMemcpyDeviceToHost),
            cudaSuccess);
  return widen(h);
}

class CudnnAttentionShapes : public ::testing::TestWithParam<Case> {};

TEST_P(CudnnAttentionShapes, MatchesCpuReference) {
  QWEN3_REQUIRE_GPU();
  if (!qwen3::cuda::CudnnAttention::available()) GTEST_SKIP() << "cuDNN cannot create a handle on this host";
  const Case c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", case " + c.name);
  qwen3::test::cuda_rng().seed(seed);

  const std::int64_t T = c.batch * c.seq, qw = c.heads * c.head_dim, kw = c.kv_heads * c.head_dim;
  const std::int64_t width = qw + 2 * kw;
  const auto q = qwen3::test::random_bf16_values(static_cast<std::size_t>(T * qw));
  const auto k = qwen3::test::random_bf16_values(static_cast<std::size_t>(T * kw));
  const auto v = qwen3::test::random_bf16_values(static_cast<std::size_t>(T * kw));
  const auto dout = qwen3::test::random_bf16_values(static_cast<std::size_t>(T * qw));

  // Reference from the same bf16-rounded values, in float64.
  const qwen3::cpu::AttentionShape cs{c.batch, c.seq, c.heads, c.kv_heads, c.head_dim};
  const auto qd = widen(q), kd = widen(k), vd = widen(v), dod = widen(dout);
  std::vector<double> out_ref(qd.size()), lse_ref(static_cast<std::size_t>(c.batch * c.heads * c.seq));
  std::vector<double> dq_ref(qd.size()), dk_ref(kd.size()), dv_ref(kd.size());
  qwen3::cpu::attention_forward(qd.data(), kd.data(), vd.data(), out_ref.data(), lse_ref.data(), cs);
  qwen3::cpu::attention_backward(qd.data(), kd.data(), vd.data(), out_ref.data(), lse_ref.data(), dod.data(),
                                 dq_ref.data(), dk_ref.data(), dv_ref.data(), cs);

  // Device layout: either one buffer per tensor or q|k|v (and dq|dk|dv) fused per token.
  const std::size_t nq = static_cast<std::size_t>(T * qw), nkv = static_cast<std::size_t>(T * kw);
  DeviceBuffer<__nv_bfloat16> qkv(c.fused_qkv ? static_cast<std::size_t>(T * width) : nq + 2 * nkv);
  DeviceBuffer<__nv_bfloat16> dqkv(c.fused_qkv ? static_cast<std::size_t>(T * width) : nq + 2 * nkv);
  DeviceBuffer<__nv_bfloat16> out(nq), d_dout(nq);
  DeviceBuffer<float> lse(lse_ref.size());
  qwen3::cuda::SdpaShape s{c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, qw, kw, kw, qw};
  __nv_bfloat16 *dq_ptr = dqkv.get(), *dk_ptr, *dv_ptr, *q_ptr = qkv.get(), *k_ptr, *v_ptr;
  if (c.fused_qkv) {
    s.q_stride = s.k_stride = s.v_stride = width;
    k_ptr = q_ptr + qw, v_ptr = q_ptr + qw + kw;
    dk_ptr = dq_ptr + qw, dv_ptr = dq_ptr + qw + kw;
  } else {
    k_ptr = q_ptr + nq, v_ptr = k_ptr + nkv;
    dk_ptr = dq_ptr + nq, dv_ptr = dk_ptr + nkv;
  }
  upload_rows(q_ptr, s.q_stride, qwen3::test::to_bf16(q), T, qw);
  upload_rows(k_ptr, s.k_stride, qwen3::test::to_bf16(k), T, kw);
  upload_rows(v_ptr, s.v_stride, qwen3::test::to_bf16(v), T, kw);
  upload_rows(d_dout.get(), qw, qwen3::test::to_bf16(dout), T, qw);

  qwen3::cuda::CudnnAttention attn;
  DeviceBuffer<unsigned char> workspace(attn.workspace_bytes(s));
  attn.forward(q_ptr, k_ptr, v_ptr, out.get(), lse.get(), s, workspace.get(), nullptr);
  const double e_out = rel_error(download_rows(out.get(), qw, T, qw), out_ref);
  const double e_lse = rel_error(widen(lse.download()), lse_ref);
  EXPECT_LE(e_out, kTolBf16) << "out";
  EXPECT_LE(e_lse, kTolLse) << "lse";

  // The backward reads cuDNN's own out and lse, as in training.
  attn.backward(q_ptr, k_ptr, v_ptr, out.get(), d_dout.get(), lse.get(), dq_ptr, dk_ptr, dv_ptr, s, workspace.get(),
                nullptr);
  qwen3::test::expect_attention_grads(e_out, e_lse, download_rows(dq_ptr, s.q_stride, T, qw), dq_ref,
                                      download_rows(dk_ptr, s.k_stride, T, kw), dk_ref,
                                      download_rows(dv_ptr, s.v_stride, T, kw), dv_ref, kTolBf16);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudnnAttentionShapes,
    ::testing::Values(Case{"GqaD128", 1, 512, 16, 8, 128, false},     // Qwen3-like 2:1 groups
                      Case{"MhaD64Batch2", 2, 384, 8, 8, 64, false},  // heads == kv_heads, two sequences
                      Case{"Gqa3D128S200", 1, 200, 6, 2, 128, false}, // S not a multiple of 64 (or 128)
                      Case{"FusedQkvGqaD64", 2, 256, 8, 2, 64, true}),  // k, v strided inside [T, q+2kv]
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// Context parallelism: one chunk of c queries of a longer sequence attends to every key up to its end (the causal
// diagonal aligned bottom-right), each tensor addressed inside a bigger buffer as the engine does — q, out, dout, dq
// and lse are chunk 1 of a rank's two chunks, k/v/dk/dv the first kv_seq rows of the whole gathered sequence. Rows
// outside the chunk must stay untouched (poisoned) and the rest match the reference with query positions shifted.
TEST(CudnnAttention, ChunkOfALongerSequenceMatchesCpuReference) {
  QWEN3_REQUIRE_GPU();
  if (!qwen3::cuda::CudnnAttention::available()) GTEST_SKIP() << "cuDNN cannot create a handle on this host";
  struct Chunk {
    std::int64_t batch, c, heads, kv_heads, head_dim, chunk_index;  // query chunk g of c rows: keys [0, (g + 1)·c)
  };
  for (const Chunk& k : {Chunk{2, 96, 8, 2, 64, 2}, Chunk{1, 256, 16, 8, 128, 1}, Chunk{2, 16, 8, 4, 16, 3}}) {
    const unsigned seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed) + ", c " + std::to_string(k.c) + ", chunk " + std::to_string(k.chunk_index));
    qwen3::test::cuda_rng().seed(seed);
    const std::int64_t B = k.batch, c = k.c, kv_seq = (k.chunk_index + 1) * c, q_rows = 2 * c, kv_rows = kv_seq + c;
    const std::int64_t qw = k.heads * k.head_dim, kw = k.kv_heads * k.head_dim;
    // Compact host tensors: the chunk's queries [B, c, qw] and keys/values [B, kv_seq, kw].
    const auto q = qwen3::test::random_bf16_values(static_cast<std::size_t>(B * c * qw));
    const auto kk = qwen3::test::random_bf16_values(static_cast<std::size_t>(B * kv_seq * kw));
    const auto v = qwen3::test::random_bf16_values(static_cast<std::size_t>(B * kv_seq * kw));
    const auto dout = qwen3::test::random_bf16_values(static_cast<std::size_t>(B * c * qw));
    std::vector<std::int64_t> pos(static_cast<std::size_t>(c));
    for (std::int64_t i = 0; i < c; ++i) pos[static_cast<std::size_t>(i)] = kv_seq - c + i;
    qwen3::cpu::AttentionShape cs{B, c, k.heads, k.kv_heads, k.head_dim};
    cs.kv_seq = kv_seq, cs.q_pos = pos.data();
    const auto qd = widen(q), kd = widen(kk), vd = widen(v), dod = widen(dout);
    std::vector<double> out_ref(qd.size()), lse_ref(static_cast<std::size_t>(B * k.heads * c)), dq_ref(qd.size()),
        dk_ref(kd.size()), dv_ref(kd.size());
    qwen3::cpu::attention_forward(qd.data(), kd.data(), vd.data(), out_ref.data(), lse_ref.data(), cs);
    qwen3::cpu::attention_backward(qd.data(), kd.data(), vd.data(), out_ref.data(), lse_ref.data(), dod.data(),
                                   dq_ref.data(), dk_ref.data(), dv_ref.data(), cs);

    // Device buffers of whole rank/sequence size; the chunk is rows [c, 2c) of each sequence's q_rows.
    DeviceBuffer<__nv_bfloat16> dq_buf(B * q_rows * qw), q_buf(B * q_rows * qw), o_buf(B * q_rows * qw),
        do_buf(B * q_rows * qw), k_buf(B * kv_rows * kw), v_buf(B * kv_rows * kw), dk_buf(B * kv_rows * kw),
        dv_buf(B * kv_rows * kw);
    DeviceBuffer<float> lse(static_cast<std::size_t>(B * k.heads * q_rows));
    auto to_chunk = [&](__nv_bfloat16* base, std::int64_t width, std::int64_t rows_per_seq, std::int64_t first,
                        const std::vector<float>& host, std::int64_t rows) {
      const auto h = qwen3::test::to_bf16(host);
      for (std::int64_t b = 0; b < B; ++b)
        ASSERT_EQ(cudaMemcpy(base + (b * rows_per_seq + first) * width, h.data() + b * rows * width,
                             rows * width * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice), cudaSuccess);
    };
    auto from_chunk = [&](const DeviceBuffer<__nv_bfloat16>& buf, std::int64_t width, std::int64_t rows_per_seq,
                          std::int64_t first, std::int64_t rows) {
      const auto all = widen(buf.download());
      std::vector<double> out;
      for (std::int64_t b = 0; b < B; ++b)
        out.insert(out.end(), all.begin() + (b * rows_per_seq + first) * width,
                   all.begin() + (b * rows_per_seq + first + rows) * width);
      return out;
    };
    to_chunk(q_buf.get(), qw, q_rows, c, q, c);
    to_chunk(do_buf.get(), qw, q_rows, c, dout, c);
    to_chunk(k_buf.get(), kw, kv_rows, 0, kk, kv_seq);
    to_chunk(v_buf.get(), kw, kv_rows, 0, v, kv_seq);
    qwen3::cuda::SdpaShape s{B, c, k.heads, k.kv_heads, k.head_dim, qw, kw, kw, qw};
    s.kv_seq = kv_seq, s.q_batch_rows = q_rows, s.kv_batch_rows = kv_rows;
    qwen3::cuda::CudnnAttention attn;
    DeviceBuffer<unsigned char> workspace(attn.workspace_bytes(s));
    attn.forward(q_buf.get() + c * qw, k_buf.get(), v_buf.get(), o_buf.get() + c * qw, lse.get() + c, s,
                 workspace.get(), nullptr);
    const double e_out = rel_error(from_chunk(o_buf, qw, q_rows, c, c), out_ref);
    std::vector<double> lse_got;
    const auto lse_all = widen(lse.download());
    for (std::int64_t bh = 0; bh < B * k.heads; ++bh)
      lse_got.insert(lse_got.end(), lse_all.begin() + bh * q_rows + c, lse_all.begin() + bh * q_rows + 2 * c);
    const double e_lse = rel_error(lse_got, lse_ref);
    EXPECT_LE(e_out, kTolBf16) << "out";
    EXPECT_LE(e_lse, kTolLse) << "lse";
    // The rows before the chunk were never written: still poisoned (NaN).
    EXPECT_TRUE(std::isnan(from_chunk(o_buf, qw, q_rows, 0, 1)[0])) << "out written outside the chunk";
    EXPECT_TRUE(std::isnan(lse_all[0])) << "lse written outside the chunk";

    attn.backward(q_buf.get() + c * qw, k_buf.get(), v_buf.get(), o_buf.get() + c * qw, do_buf.get() + c * qw,
                  lse.get() + c, dq_buf.get() + c * qw, dk_buf.get(), dv_buf.get(), s, workspace.get(), nullptr);
    qwen3::test::expect_attention_grads(e_out, e_lse, from_chunk(dq_buf, qw, q_rows, c, c), dq_ref,
                                        from_chunk(dk_buf, kw, kv_rows, 0, kv_seq), dk_ref,
                                        from_chunk(dv_buf, kw, kv_rows, 0, kv_seq), dv_ref, kTolBf16);
    EXPECT_TRUE(std::isnan(from_chunk(dk_buf, kw, kv_rows, kv_seq, 1)[0])) << "dk written past its keys";
  }
}

// Shapes cuDNN's engines cannot take are refused up front with InternalError, the caller's cue to fall back.
TEST(CudnnAttention, RejectsUnsupportedShapes) {
  QWEN3_REQUIRE_GPU();
  if (!qwen3::cuda::CudnnAttention::available()) GTEST_SKIP() << "cuDNN cannot create a handle on this host";
  qwen3::cuda::CudnnAttention attn;
  const qwen3::cuda::SdpaShape odd_dim{1, 64, 4, 2, 12, 48, 24, 24, 48};        // head_dim not a multiple of 8
  const qwen3::cuda::SdpaShape bad_groups{1, 64, 6, 4, 64, 384, 256, 256, 384};  // 6 heads over 4 kv heads
  EXPECT_THROW(attn.workspace_bytes(odd_dim), qwen3::InternalError);
  EXPECT_THROW(attn.workspace_bytes(bad_groups), qwen3::InternalError);
}

}  // namespace

#endif  // QWEN3_HAVE_CUDA
