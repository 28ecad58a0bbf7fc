// CUDA elementwise families: SwiGLU forward/backward, embedding gather/scatter, casts
// (references: ops/cpu/swiglu.h, ops/cpu/embedding.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3::cuda {

// gate_up[rows, 2·I] is the fused gate|up projection output (gate in columns [0, I), up in [I, 2I)).
// a[rows, I] = silu(gate)·up. a_amax (optional): max |a| as fp8_amax would give it, in the same pass (FP8).
void swiglu_forward(const __nv_bfloat16* gate_up, __nv_bfloat16* a, std::int64_t rows, std::int64_t inter,
                    cudaStream_t stream, float* a_amax = nullptr);
// FP8 with delayed scaling (--fp8-scaling delayed): swiglu_forward writing a = silu(gate)·up only as the down
// projection's row-major E4M3 operand, rows[r · ld + c] (the padding columns [inter, ld) zero), scaled by
// s = fp8_delayed_scale(*previous_amax) with 1/s into *inv — the codes fp8_cast gives swiglu_forward's a with that
// scale; a's amax into *amax (overwritten: the micro-batch's, which its weight gradient's transposed copy is scaled
// by) and folded into *running_amax (the step's).
struct SwigluFwdFp8 {
  std::uint8_t* rows = nullptr;
  std::int64_t ld = 0;
  const float* previous_amax = nullptr;
  float* running_amax = nullptr;
  float* inv = nullptr;
  float* amax = nullptr;
};
void swiglu_forward_fp8(const __nv_bfloat16* gate_up, std::int64_t rows, std::int64_t inter, const SwigluFwdFp8& out,
                        cudaStream_t stream);
// dgate_up[rows, 2·I] (same layout) from da[rows, I]; bf16 everywhere, fp32 math. When a is non-null the same pass
// also rewrites a[rows, I] = silu(gate)·up (the forward product, recomputed instead of stored). dgate_up_amax
// (optional): max |dgate_up|, as swiglu_forward's a_amax.
void swiglu_backward(const __nv_bfloat16* gate_up, const __nv_bfloat16* da, __nv_bfloat16* dgate_up, std::int64_t rows,
                     std::int64_t inter, cudaStream_t stream, __nv_bfloat16* a = nullptr,
                     float* dgate_up_amax = nullptr);

// FP8 (--precision fp8): swiglu_backward, with the recomputed product a written only as the down projection's
// weight-gradient operand — transposed E4M3, a_t[c · a_t_ld + r] for c < inter, r < a_t_ld (tokens rows … a_t_ld − 1
// zero), scaled by fp8_scale(*a_amax) (the forward's amax of a) with 1/s into *a_t_inv: the same codes as fp8_cast of
// the bf16 a swiglu_backward writes (ops/cuda/fp8_cast.h).
// grad_fp8 (delayed scaling, --fp8-scaling delayed): dgate_up is not written in bf16 but as gate|up's two E5M2 GEMM
// operands, s = fp8_delayed_scale(*previous_amax) (1/s into *inv): row-major rows[r · ld + c] (c < 2·inter; the
// padding columns to ld zero) and transposed cols[c · a_t_ld + r] (tokens past rows zero) — the codes fp8_cast gives
// the bf16 dgate_up with that scale; its amax is folded into *running_amax (not zeroed: the step's maximum), and
// dgate_up_amax is unused.
struct SwigluGradFp8 {
  std::uint8_t* rows = nullptr;
  std::int64_t ld = 0;
  std::uint8_t* cols = nullptr;
  const float* previous_amax = nullptr;
  float* running_amax = nullptr;
  float* inv = nullptr;
};
void swiglu_backward_fp8t(const __nv_bfloat16* gate_up, const __nv_bfloat16* da, __nv_bfloat16* dgate_up,
                          std::int64_t rows, std::int64_t inter, const float* a_amax, std::uint8_t* a_t,
                          std::int64_t a_t_ld, float* a_t_inv, cudaStream_t stream, float* dgate_up_amax = nullptr,
                          const SwigluGradFp8* grad_fp8 = nullptr);

// dst[r, 0:cols] = src[r, 0:cols] for rows r, with leading dimensions src_ld and dst_ld (a column slice copy).
void copy_columns(const __nv_bfloat16* src, std::int64_t src_ld, __nv_bfloat16* dst, std::int64_t dst_ld,
                  std::int64_t rows, std::int64_t cols, cudaStream_t stream);

// x[T, H] = table[ids[t] − vocab_begin, :] (table: the bf16 compute copy of rows [vocab_begin, vocab_begin +
// vocab_count) of the vocabulary — all of it without tensor parallelism); rows of ids outside that range are zero.
void embedding_forward(const std::int32_t* ids, const __nv_bfloat16* table, __nv_bfloat16* x, std::int64_t tokens,
                       std::int64_t hidden, cudaStream_t stream, std::int64_t vocab_begin = 0,
                       std::int64_t vocab_count = INT64_MAX);
// dtable[ids[t] − vocab_begin, :] += dx[t, :] for ids in the range (fp32 gradients; repeated ids added atomically)
void embedding_backward(const std::int32_t* ids, const float* dx, float* dtable, std::int64_t tokens, std::int64_t hidden,
                        cudaStream_t stream, std::int64_t vocab_begin = 0, std::int64_t vocab_count = INT64_MAX);

// out[n] = a[n] + b[n] (bf16, fp32 math); out may alias a.
void add(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, std::int64_t n, cudaStream_t stream);
void add(const float* a, const float* b, float* out, std::int64_t n, cudaStream_t stream);

void cast_f32_to_bf16(const float* in, __nv_bfloat16* out, std::int64_t n, cudaStream_t stream);
void cast_bf16_to_f32(const __nv_bfloat16* in, float* out, std::int64_t n, cudaStream_t stream);

}  // namespace qwen3::cuda
