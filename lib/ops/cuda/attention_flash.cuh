// FlashAttention-2 style tensor-core kernels (mma.sync m16n8k16 bf16, ldmatrix, cp.async double buffering) for
// causal grouped-query attention with head_dim D ∈ {64, 128}. Included once, by attention.cu. Layouts as
// ops/cuda/attention.h; fragment layouts in attention_mma.cuh.
//
// Forward: a block owns 128 query rows of one (batch, head), 8 warps × 16 rows; it walks 64-key tiles up to the
// diagonal with an online softmax in the log2 domain. Backward: a block owns 128 keys of one (batch, kv head),
// 8 warps × 16 keys, and walks every query head of the group and every 64-query tile from the diagonal down,
// accumulating dK, dV in registers (no atomics) and adding dQ into an fp32 buffer with vector atomics.
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
    const bf16* sKj = sK + (j & 1) * T::kKVElems;
    const bf16* sVj = sV + (j & 1) * T::kKVElems;

    // S = Q·Kᵀ [16 × kBc]
    float s[kBc / 8][4];
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
    // Causal mask on tiles that reach past this warp's first row; the ragged end of the sequence.
    if (k0 + kBc - 1 > w_row0 || k0 + kBc > seq) {
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + n * 8 + 2 * lt + (e & 1);
          const int row = w_row0 + lg + (e >> 1) * 8;
          if (key > row || key >= seq) s[n][e] = -INFINITY;
        }
    }
    // Online softmax. Key 0 is in tile 0 and visible to every row, so the running max is finite from then on.
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
    // O += P·V: the C fragments of S are the A fragments of P.
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
  if (!active) return;  // no block barrier follows

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
      if (row < seq) lse[(b * heads + h) * seq + row] = m[i] * scale + logf(l[i]);
    }
  }
  // Stage this warp's 16 output rows in its own rows of sQ (only this warp ever read them), then 16-byte stores.
  bf16* sO = sQ + warp * 16 * kStride;
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
      *reinterpret_cast<uint4*>(out + (b * seq * heads + h) * D + row * q_stride + ch * 8) =
          *reinterpret_cast<const uint4*>(sO + r * kStride + ch * 8);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------------------------

// delta[b, h, t] = Σ_d dout·out (fp32), one warp per (b, t, h) row; also zeroes that row of the fp32 dQ
// accumulator when one is given (saves a memset launch).
__global__ void __launch_bounds__(256)
    attn_bwd_delta_kernel(const bf16* __restrict__ out,   // [B, S, H, D]
                          const bf16* __restrict__ dout,  // [B, S, H, D]
                          float* __restrict__ delta,      // [B, H, S]
                          float* __restrict__ dq_acc,     // [B, S, H, D] or null
                          std::int64_t rows, int seq, int heads, int dim) {
  const int lane = threadIdx.x & 31;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);  // (b·S + t)·H + h
  if (r >= rows) return;
  float acc = 0.f;
  for (int c = lane; c < dim / 8; c += 32) {
    const Bf16x8 uo = *reinterpret_cast<const Bf16x8*>(out + r * dim + c * 8);
    const Bf16x8 ud = *reinterpret_cast<const Bf16x8*>(dout + r * dim + c * 8);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = __bfloat1622float2(uo.h[i]), d = __bfloat1622float2(ud.h[i]);
      acc = fmaf(a.x, d.x, fmaf(a.y, d.y, acc));
    }
    if (dq_acc) {
      float4* z = reinterpret_cast<float4*>(dq_acc + r * dim + c * 8);
      z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
      z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) {
    const int h = static_cast<int>(r % heads);
    const int t = static_cast<int>((r / heads) % seq);
    const std::int64_t b = r / (static_cast<std::int64_t>(heads) * seq);
    delta[(b * heads + h) * seq + t] = acc;
  }
}

// dq = scale · dq_acc in bf16; n % 8 == 0.
__global__ void __launch_bounds__(256)
    attn_bwd_dq_convert_kernel(const float* __restrict__ dq_acc, bf16* __restrict__ dq, std::int64_t n, float scale) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x * 8;
  for (std::int64_t i = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8; i < n; i += stride) {
    const float4 a = *reinterpret_cast<const float4*>(dq_acc + i);
    const float4 c = *reinterpret_cast<const float4*>(dq_acc + i + 4);
    uint4 o;
    o.x = pack_bf16(a.x * scale, a.y * scale);
    o.y = pack_bf16(a.z * scale, a.w * scale);
    o.z = pack_bf16(c.x * scale, c.y * scale);
    o.w = pack_bf16(c.z * scale, c.w * scale);
    *reinterpret_cast<uint4*>(dq + i) = o;
  }
}

template <int D>
struct BwdTile {
  static constexpr int kBc = 128;  // keys per block
  static constexpr int kBr = 64;   // queries per inner step
  static constexpr int kWarps = 8, kThreads = kWarps * 32;
  static constexpr int kStride = D + 8;    // bf16 per shared row of K, V, Q, dO
  static constexpr int kSStride = kBr + 8; // bf16 per shared row of dSᵀ
  static constexpr int kKVElems = kBc * kStride;  // sK, sV [kBc][kStride]
  static constexpr int kQElems = kBr * kStride;   // sQ, sdO [2][kBr][kStride]
  static constexpr int kSElems = kBc * kSStride;  // sdS [kBc][kSStride] (dSᵀ: keys × queries)
  static constexpr std::size_t kSmemBytes =
      sizeof(bf16) * (2 * kKVElems + 4 * kQElems + kSElems) + sizeof(float) * 4 * kBr;
  static_assert(kBc == kWarps * 16, "each warp owns 16 keys");
  static_assert(kBr == 64 && kWarps == 8, "the dQ step splits 64 queries × D over 8 warps as 4 × 2");
};

template <int D>
__global__ void __launch_bounds__(BwdTile<D>::kThreads, 1)
    attn_bwd_flash_kernel(const bf16* __restrict__ q,      // [B, S, H, D]
                          const bf16* __restrict__ k,      // [B, S, KVH, D]
                          const bf16* __restrict__ v,      // [B, S, KVH, D]
                          const bf16* __restrict__ dout,   // [B, S, H, D]
                          const float* __restrict__ lse,   // [B, H, S]
                          const float* __restrict__ delta, // [B, H, S]
                          float* __restrict__ dq_acc,      // [B, S, H, D], unscaled Σ dS·K
                          bf16* __restrict__ dk,           // [B, S, KVH, D]
                          bf16* __restrict__ dv,           // [B, S, KVH, D]
                          int seq, int heads, int kv_heads, float scale, float scale_log2) {
  using T = BwdTile<D>;
  constexpr int kBr = T::kBr, kBc = T::kBc, kStride = T::kStride, kSStride = T::kSStride;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [kBc][kStride]
  bf16* sV = sK + T::kKVElems;                   // [kBc][kStride]
  bf16* sQ = sV + T::kKVElems;                   // [2][kBr][kStride]
  bf16* sdO = sQ + 2 * T::kQElems;               // [2][kBr][kStride]
  bf16* sdS = sdO + 2 * T::kQElems;              // [kBc][kSStride]
  float* sLse = reinterpret_cast<float*>(sdS + T::kSElems);  // [2][kBr]
  float* sDelta = sLse + 2 * kBr;                             // [2][kBr]

  // kv heads vary fastest and the first (longest: most queries below the diagonal) key tiles come first.
  const int g = blockIdx.x;
  const int k0 = blockIdx.y * kBc;
  const std::int64_t b = blockIdx.z;
  const int group = heads / kv_heads;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int lg = lane >> 2, lt = lane & 3;
  const std::int64_t q_stride = static_cast<std::int64_t>(heads) * D, kv_stride = static_cast<std::int64_t>(kv_heads) * D;
  const bf16* kb = k + (b * seq * kv_heads + g) * D;
  const bf16* vb = v + (b * seq * kv_heads + g) * D;

  // Steps: (query head of the group) × (query tile from the one holding key k0 to the end).
  const int qt0 = k0 / kBr;
  const int n_qt = (seq + kBr - 1) / kBr - qt0;  // ≥ 1 since k0 < seq
  const int n_steps = group * n_qt;
  auto issue = [&](int step, int buf) {
    const int hh = g * group + step / n_qt;
    const int i0 = (qt0 + step % n_qt) * kBr;
    const std::int64_t qoff = (b * seq * heads + hh) * D;
    load_rows_async<kBr, D, T::kThreads>(sQ + buf * T::kQElems, q + qoff, q_stride, i0, seq, tid);
    load_rows_async<kBr, D, T::kThreads>(sdO + buf * T::kQElems, dout + qoff, q_stride, i0, seq, tid);
    const std::int64_t soff = (b * heads + hh) * seq;
    if (tid < 2 * kBr) {
      const int c = tid & (kBr - 1);
      const bool ok = i0 + c < seq;
      const float* src = tid < kBr ? lse + soff : delta + soff;
      float* dst = tid < kBr ? sLse : sDelta;
      cp_async_4(dst + buf * kBr + c, ok ? src + i0 + c : src, ok);  // zeros past the end (always masked)
    }
  };
  load_rows_async<kBc, D, T::kThreads>(sK, kb, kv_stride, k0, seq, tid);
  load_rows_async<kBc, D, T::kThreads>(sV, vb, kv_stride, k0, seq, tid);
  issue(0, 0);
  cp_async_commit();

  const int w_key0 = k0 + warp * 16;  // this warp's keys: w_key0 .. w_key0 + 15
  float dk_acc[D / 8][4], dv_acc[D / 8][4];  // [16 × D] each
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.f;

  for (int step = 0; step < n_steps; ++step) {
    const int buf = step & 1;
    cp_async_wait<0>();
    __syncthreads();  // step's tiles visible; previous step's dQ reads of sdS are done
    if (step + 1 < n_steps) issue(step + 1, buf ^ 1);
    cp_async_commit();
    const int hh = g * group + step / n_qt;
    const int i0 = (qt0 + step % n_qt) * kBr;
    const bf16* sQb = sQ + buf * T::kQElems;
    const bf16* sdOb = sdO + buf * T::kQElems;
    const float* sLseb = sLse + buf * kBr;
    const float* sDeltab = sDelta + buf * kBr;

    if (w_key0 <= min(i0 + kBr, seq) - 1) {  // some (query ≥ key, query < seq) pair in this warp's block
      // Sᵀ = K·Qᵀ [16 keys × kBr queries]
      float st[kBr / 8][4];
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t a[4];
        ldmatrix_x4(a, sK + (warp * 16 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int n2 = 0; n2 < kBr / 16; ++n2) {
          std::uint32_t bq[4];
          ldmatrix_x4(bq, sQb + (n2 * 16 + (lane & 7) + ((lane >> 4) << 3)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
          mma_bf16_16816(st[2 * n2], a, bq[0], bq[1]);
          mma_bf16_16816(st[2 * n2 + 1], a, bq[2], bq[3]);
        }
      }
      // Pᵀ = exp(Sᵀ·scale − lse[query]), zero where query < key or query ≥ seq.
      const bool need_mask = i0 < w_key0 + 15 || i0 + kBr > seq;
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) {
        const float2 ls = *reinterpret_cast<const float2*>(sLseb + n * 8 + 2 * lt);
        const float lse2[2] = {ls.x * kLog2e, ls.y * kLog2e};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float p = fast_exp2(fmaf(st[n][e], scale_log2, -lse2[e & 1]));
          if (need_mask) {
            const int key = w_key0 + lg + (e >> 1) * 8;
            const int qi = i0 + n * 8 + 2 * lt + (e & 1);
            if (key > qi || qi >= seq) p = 0.f;
          }
          st[n][e] = p;
        }
      }
      // dV += Pᵀ·dO [16 × D]
#pragma unroll
      for (int kj = 0; kj < kBr / 16; ++kj) {
        const std::uint32_t pa[4] = {pack_bf16(st[2 * kj][0], st[2 * kj][1]), pack_bf16(st[2 * kj][2], st[2 * kj][3]),
                                     pack_bf16(st[2 * kj + 1][0], st[2 * kj + 1][1]),
                                     pack_bf16(st[2 * kj + 1][2], st[2 * kj + 1][3])};
#pragma unroll
        for (int n2 = 0; n2 < D / 16; ++n2) {
          std::uint32_t bo[4];
          ldmatrix_x4_trans(bo, sdOb + (kj * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + n2 * 16 + (lane >> 4) * 8);
          mma_bf16_16816(dv_acc[2 * n2], pa, bo[0], bo[1]);
          mma_bf16_16816(dv_acc[2 * n2 + 1], pa, bo[2], bo[3]);
        }
      }
      // dPᵀ = V·dOᵀ [16 keys × kBr queries]
      float dpt[kBr / 8][4];
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t a[4];
        ldmatrix_x4(a, sV + (warp * 16 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int n2 = 0; n2 < kBr / 16; ++n2) {
          std::uint32_t bo[4];
          ldmatrix_x4(bo, sdOb + (n2 * 16 + (lane & 7) + ((lane >> 4) << 3)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
          mma_bf16_16816(dpt[2 * n2], a, bo[0], bo[1]);
          mma_bf16_16816(dpt[2 * n2 + 1], a, bo[2], bo[3]);
        }
      }
      // dSᵀ = Pᵀ ∘ (dPᵀ − delta[query]) (the 1/sqrt(D) is applied once at the end, to dK and dQ).
      std::uint32_t dsa[kBr / 16][4];
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) {
        const float2 dl = *reinterpret_cast<const float2*>(sDeltab + n * 8 + 2 * lt);
        const std::uint32_t lo = pack_bf16(st[n][0] * (dpt[n][0] - dl.x), st[n][1] * (dpt[n][1] - dl.y));
        const std::uint32_t hi = pack_bf16(st[n][2] * (dpt[n][2] - dl.x), st[n][3] * (dpt[n][3] - dl.y));
        dsa[n >> 1][(n & 1) * 2] = lo;
        dsa[n >> 1][(n & 1) * 2 + 1] = hi;
        *reinterpret_cast<std::uint32_t*>(sdS + (warp * 16 + lg) * kSStride + n * 8 + 2 * lt) = lo;
        *reinterpret_cast<std::uint32_t*>(sdS + (warp * 16 + lg + 8) * kSStride + n * 8 + 2 * lt) = hi;
      }
      // dK += dSᵀ·Q [16 × D]
#pragma unroll
      for (int kj = 0; kj < kBr / 16; ++kj) {
#pragma unroll
        for (int n2 = 0; n2 < D / 16; ++n2) {
          std::uint32_t bq[4];
          ldmatrix_x4_trans(bq, sQb + (kj * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + n2 * 16 + (lane >> 4) * 8);
          mma_bf16_16816(dk_acc[2 * n2], dsa[kj], bq[0], bq[1]);
          mma_bf16_16816(dk_acc[2 * n2 + 1], dsa[kj], bq[2], bq[3]);
        }
      }
    } else {
      // Every pair is masked: this warp's rows of dSᵀ are zero.
#pragma unroll
      for (int i = 0; i < 16 * (kBr / 8) / 32; ++i) {
        const int c = i * 32 + lane;
        *reinterpret_cast<uint4*>(sdS + (warp * 16 + c / (kBr / 8)) * kSStride + (c % (kBr / 8)) * 8) =
            make_uint4(0u, 0u, 0u, 0u);
      }
    }
    __syncthreads();  // dSᵀ of all 128 keys complete

    // dQ[kBr × D] += dS·K, summed over this block's keys: warp → 16 queries (warp % 4) × D/2 columns (warp / 4).
    const int mt = warp & 3, dh = warp >> 2;
    const int qrow0 = i0 + mt * 16;
    const int last = qrow0 + 15 - k0;  // key chunks past this are masked for all 16 queries
    const int n_kc = last < 0 ? 0 : min(kBc / 16, last / 16 + 1);
    if (qrow0 < seq && n_kc > 0) {
      float dqa[D / 16][4];
#pragma unroll
      for (int n = 0; n < D / 16; ++n) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.f;
      for (int kc = 0; kc < n_kc; ++kc) {
        std::uint32_t a[4];  // dS [16 queries × 16 keys] from the stored dSᵀ
        ldmatrix_x4_trans(a, sdS + (kc * 16 + (lane & 7) + ((lane >> 4) << 3)) * kSStride + mt * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int n2 = 0; n2 < D / 32; ++n2) {
          std::uint32_t bk[4];
          ldmatrix_x4_trans(bk, sK + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + dh * (D / 2) + n2 * 16 + (lane >> 4) * 8);
          mma_bf16_16816(dqa[2 * n2], a, bk[0], bk[1]);
          mma_bf16_16816(dqa[2 * n2 + 1], a, bk[2], bk[3]);
        }
      }
      float* dq_head = dq_acc + (b * seq * heads + hh) * D + dh * (D / 2) + 2 * lt;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = qrow0 + lg + 8 * i;
        if (row < seq) {
          float* p = dq_head + row * q_stride;
#pragma unroll
          for (int n = 0; n < D / 16; ++n)
            atomicAdd(reinterpret_cast<float2*>(p + n * 8), make_float2(dqa[n][2 * i], dqa[n][2 * i + 1]));
        }
      }
    }
  }

  // Epilogue: stage dK·scale and dV through this warp's rows of sK / sV once every warp is done reading them.
  __syncthreads();
  bf16* sdK = sK + warp * 16 * kStride;
  bf16* sdV = sV + warp * 16 * kStride;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<std::uint32_t*>(sdK + lg * kStride + n * 8 + 2 * lt) = pack_bf16(dk_acc[n][0] * scale, dk_acc[n][1] * scale);
    *reinterpret_cast<std::uint32_t*>(sdK + (lg + 8) * kStride + n * 8 + 2 * lt) = pack_bf16(dk_acc[n][2] * scale, dk_acc[n][3] * scale);
    *reinterpret_cast<std::uint32_t*>(sdV + lg * kStride + n * 8 + 2 * lt) = pack_bf16(dv_acc[n][0], dv_acc[n][1]);
    *reinterpret_cast<std::uint32_t*>(sdV + (lg + 8) * kStride + n * 8 + 2 * lt) = pack_bf16(dv_acc[n][2], dv_acc[n][3]);
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
  bf16* dkb = dk + (b * seq * kv_heads + g) * D;
  bf16* dvb = dv + (b * seq * kv_heads + g) * D;
#pragma unroll
  for (int i = 0; i < 16 * kChunks / 32; ++i) {
    const int c = i * 32 + lane;
    const int r = c / kChunks, ch = c % kChunks;
    const int key = w_key0 + r;
    if (key < seq) {
      *reinterpret_cast<uint4*>(dkb + key * kv_stride + ch * 8) = *reinterpret_cast<const uint4*>(sdK + r * kStride + ch * 8);
      *reinterpret_cast<uint4*>(dvb + key * kv_stride + ch * 8) = *reinterpret_cast<const uint4*>(sdV + r * kStride + ch * 8);
    }
  }
}

}  // namespace qwen3::cuda::attn
