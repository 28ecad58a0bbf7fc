// FlashAttention-2 style tensor-core kernels (mma.sync m16n8k16 bf16, ldmatrix, cp.async double buffering) for
// causal grouped-query attention with head_dim D ∈ {64, 128}. Included once, by attention.cu. Layouts as
// ops/cuda/attention.h; fragment layouts in attention_mma.cuh.
//
// Forward (here): a block owns 128 query rows of one (batch, head), 8 warps × 16 rows; it walks 64-key tiles up to
// the diagonal with an online softmax in the log2 domain. Backward (attention_flash_bwd.cuh): a block owns 128 keys
// of one (batch, kv head), 8 warps × 16 keys, and walks every query head of the group and every 64-query tile from
// the diagonal down, accumulating dK, dV in registers (no atomics) and adding dQ into an fp32 buffer with vector
// atomics.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "ops/cuda/attention_mma.cuh"

namespace qwen3::cuda::attn {

using bf16 = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f;

// Rows [row0, row0 + ROWS) of a row-strided bf16 matrix (D columns) → shared [ROWS][D + 8] (the 16-byte pad makes
// ldmatrix rows land in distinct banks). Rows at or past `rows` are zero-filled, never read. All threads call it.
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_rows_async(bf16* dst, const bf16* src, std::int64_t row_stride, int row0,
                                                int rows, int tid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kTotal = ROWS * kChunks;
  static_assert(kTotal % THREADS == 0, "tile must split evenly over the block");
#pragma unroll
  for (int i = 0; i < kTotal / THREADS; ++i) {
    const int c = i * THREADS + tid;
    const int r = c / kChunks, ch = c % kChunks;
    const int row = row0 + r;
    const bool ok = row < rows;
    cp_async_16(dst + r * (D + 8) + ch * 8, ok ? src + row * row_stride + ch * 8 : src, ok);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------------
template <int D>
struct FwdTile {
  static constexpr int kBr = 128;  // query rows per block
  static constexpr int kBc = 64;   // keys per tile
  static constexpr int kWarps = 8, kThreads = kWarps * 32;
  static constexpr int kStride = D + 8;                 // bf16 per shared row
  static constexpr int kQElems = kBr * kStride;         // sQ [kBr][kStride]
  static constexpr int kKVElems = kBc * kStride;        // sK, sV [2][kBc][kStride] each
  static constexpr std::size_t kSmemBytes = sizeof(bf16) * (kQElems + 4 * kKVElems);
  static_assert(kBr == kWarps * 16, "each warp owns 16 query rows");
};

// The forward's steps on one warp's 16 query rows (fragment layouts: attention_mma.cuh). Each is inlined into the
// kernel: the arrays stay in registers.

// S = Q·Kᵀ [16 × kBc] against the key tile in shared memory.
template <int D, int kBc, int kStride>
__device__ __forceinline__ void fwd_scores(float (&s)[kBc / 8][4], const std::uint32_t (&qf)[D / 16][4],
                                           const bf16* sKj, int lane) {
#pragma unroll
  for (int n = 0; n < kBc / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int n2 = 0; n2 < kBc / 16; ++n2) {
      std::uint32_t bk[4];
      ldmatrix_x4(bk, sKj + (n2 * 16 + (lane & 7) + ((lane >> 4) << 3)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
      mma_bf16_16816(s[2 * n2], qf[kk], bk[0], bk[1]);
      mma_bf16_16816(s[2 * n2 + 1], qf[kk], bk[2], bk[3]);
    }
  }
}

// The causal mask on a tile that reaches past this warp's first row; the ragged end of the sequence.
template <int kBc>
__device__ __forceinline__ void fwd_mask(float (&s)[kBc / 8][4], int k0, int w_row0, int seq, int lg, int lt) {
  if (k0 + kBc - 1 <= w_row0 && k0 + kBc <= seq) return;
#pragma unroll
  for (int n = 0; n < kBc / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = k0 + n * 8 + 2 * lt + (e & 1);
      const int row = w_row0 + lg + (e >> 1) * 8;
      if (key > row || key >= seq) s[n][e] = -INFINITY;
    }
}

// Online softmax: s becomes P (unnormalised, log2 domain), the running max m and sum l move on, O is rescaled. Key 0
// is in tile 0 and visible to every row, so the running max is finite from then on.
template <int D, int kBc>
__device__ __forceinline__ void fwd_online_softmax(float (&s)[kBc / 8][4], float (&m)[2], float (&l)[2],
                                                   float (&o)[D / 8][4], float scale_log2) {
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int n = 0; n < kBc / 8; ++n) {
    mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
  }
  float ms[2], alpha[2], rs[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    ms[i] = mx[i] == -INFINITY ? 0.f : mx[i] * scale_log2;
    alpha[i] = fast_exp2(m[i] * scale_log2 - ms[i]);  // 0 while m = -inf
    m[i] = mx[i];
  }
#pragma unroll
  for (int n = 0; n < kBc / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[n][e] = fast_exp2(fmaf(s[n][e], scale_log2, -ms[e >> 1]));
      rs[e >> 1] += s[n][e];
    }
  l[0] = l[0] * alpha[0] + rs[0];
  l[1] = l[1] * alpha[1] + rs[1];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    o[n][0] *= alpha[0];
    o[n][1] *= alpha[0];
    o[n][2] *= alpha[1];
    o[n][3] *= alpha[1];
  }
}

// O += P·V [16 × D]: the C fragments of S are the A fragments of P.
template <int D, int kBc, int kStride>
__device__ __forceinline__ void fwd_accumulate_pv(float (&o)[D / 8][4], const float (&s)[kBc / 8][4], const bf16* sVj,
                                                  int lane) {
#pragma unroll
  for (int kj = 0; kj < kBc / 16; ++kj) {
    const std::uint32_t pa[4] = {pack_bf16(s[2 * kj][0], s[2 * kj][1]), pack_bf16(s[2 * kj][2], s[2 * kj][3]),
                                 pack_bf16(s[2 * kj + 1][0], s[2 * kj + 1][1]),
                                 pack_bf16(s[2 * kj + 1][2], s[2 * kj + 1][3])};
#pragma unroll
    for (int n2 = 0; n2 < D / 16; ++n2) {
      std::uint32_t bv[4];
      ldmatrix_x4_trans(bv, sVj + (kj * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + n2 * 16 + (lane >> 4) * 8);
      mma_bf16_16816(o[2 * n2], pa, bv[0], bv[1]);
      mma_bf16_16816(o[2 * n2 + 1], pa, bv[2], bv[3]);
    }
  }
}

// The warp's rows done: their log-sum-exp into lse_rows[row], O / l staged in the warp's own rows of shared memory
// (sO, only this warp ever read them), then 16-byte stores into out_rows (row stride row_stride).
template <int D, int kStride>
__device__ __forceinline__ void fwd_store(const float (&o)[D / 8][4], const float (&m)[2], float (&l)[2], bf16* sO,
                                          bf16* out_rows, std::int64_t row_stride, float* lse_rows, int w_row0,
                                          int seq, float scale, int lane) {
  const int lg = lane >> 2, lt = lane & 3;
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    inv[i] = 1.f / l[i];
  }
  if (lt == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = w_row0 + lg + 8 * i;
      if (row < seq) lse_rows[row] = m[i] * scale + logf(l[i]);
    }
  }
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<std::uint32_t*>(sO + lg * kStride + n * 8 + 2 * lt) = pack_bf16(o[n][0] * inv[0], o[n][1] * inv[0]);
    *reinterpret_cast<std::uint32_t*>(sO + (lg + 8) * kStride + n * 8 + 2 * lt) =
        pack_bf16(o[n][2] * inv[1], o[n][3] * inv[1]);
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int i = 0; i < 16 * kChunks / 32; ++i) {
    const int c = i * 32 + lane;
    const int r = c / kChunks, ch = c % kChunks;
    const int row = w_row0 + r;
    if (row < seq)
      *reinterpret_cast<uint4*>(out_rows + row * row_stride + ch * 8) = *reinterpret_cast<const uint4*>(sO + r * kStride + ch * 8);
  }
}

template <int D>
__global__ void __launch_bounds__(FwdTile<D>::kThreads, 1)
    attn_fwd_flash_kernel(const bf16* __restrict__ q,  // [B, S, H, D]
                          const bf16* __restrict__ k,  // [B, S, KVH, D]
                          const bf16* __restrict__ v,  // [B, S, KVH, D]
                          bf16* __restrict__ out,      // [B, S, H, D]
                          float* __restrict__ lse,     // [B, H, S]
                          int seq, int heads, int kv_heads, float scale, float scale_log2) {
  using T = FwdTile<D>;
  constexpr int kBr = T::kBr, kBc = T::kBc, kStride = T::kStride;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kBr][kStride], later the output staging area
  bf16* sK = sQ + T::kQElems;                    // [2][kBc][kStride]
  bf16* sV = sK + 2 * T::kKVElems;               // [2][kBc][kStride]

  // Heads vary fastest and the last (longest) query tiles come first: the causal work is balanced and the kv
  // heads in use at one time stay in L2.
  const int h = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBr;
  const std::int64_t b = blockIdx.z;
  const int g = h / (heads / kv_heads);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int lg = lane >> 2, lt = lane & 3;  // fragment row group, column pair
  const std::int64_t q_stride = static_cast<std::int64_t>(heads) * D, kv_stride = static_cast<std::int64_t>(kv_heads) * D;
  const bf16* qb = q + (b * seq * heads + h) * D;
  const bf16* kb = k + (b * seq * kv_heads + g) * D;
  const bf16* vb = v + (b * seq * kv_heads + g) * D;

  const int n_tiles = (min(q0 + kBr, seq) + kBc - 1) / kBc;  // key tiles up to the diagonal
  load_rows_async<kBr, D, T::kThreads>(sQ, qb, q_stride, q0, seq, tid);
  load_rows_async<kBc, D, T::kThreads>(sK, kb, kv_stride, 0, seq, tid);
  load_rows_async<kBc, D, T::kThreads>(sV, vb, kv_stride, 0, seq, tid);
  cp_async_commit();

  const int w_row0 = q0 + warp * 16;  // this warp's rows: w_row0 .. w_row0 + 15
  const bool active = w_row0 < seq;   // warp-uniform
  std::uint32_t qf[D / 16][4];        // Q fragments, kept in registers for the whole key loop
  float o[D / 8][4];                  // O accumulator [16 × D]
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of raw scores, rows lg and lg + 8
  float l[2] = {0.f, 0.f};              // running Σ exp, this thread's columns only (quad-reduced at the end)

  for (int j = 0; j < n_tiles; ++j) {
    cp_async_wait<0>();
    __syncthreads();  // tile j visible to all; every warp is done with tile j - 1's buffer
    if (j + 1 < n_tiles) {
      const int nb = (j + 1) & 1;
      load_rows_async<kBc, D, T::kThreads>(sK + nb * T::kKVElems, kb, kv_stride, (j + 1) * kBc, seq, tid);
      load_rows_async<kBc, D, T::kThreads>(sV + nb * T::kKVElems, vb, kv_stride, (j + 1) * kBc, seq, tid);
    }
    cp_async_commit();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], sQ + (warp * 16 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
    }
    const int k0 = j * kBc;
    if (!active || k0 > w_row0 + 15) continue;  // every key of this tile is in this warp's future
    float s[kBc / 8][4];
    fwd_scores<D, kBc, kStride>(s, qf, sK + (j & 1) * T::kKVElems, lane);
    fwd_mask<kBc>(s, k0, w_row0, seq, lg, lt);
    fwd_online_softmax<D, kBc>(s, m, l, o, scale_log2);
    fwd_accumulate_pv<D, kBc, kStride>(o, s, sV + (j & 1) * T::kKVElems, lane);
  }
  if (!active) return;  // no block barrier follows
  fwd_store<D, kStride>(o, m, l, sQ + warp * 16 * kStride, out + (b * seq * heads + h) * D, q_stride,
                        lse + (b * heads + h) * seq, w_row0, seq, scale, lane);
}

}  // namespace qwen3::cuda::attn
