// The backward of the FlashAttention-2 style kernels (see attention_flash.cuh, whose tile loader it uses). Included
// once, by attention.cu, after attention_flash.cuh.
#pragma once
#include "ops/cuda/attention_flash.cuh"

namespace qwen3::cuda::attn {

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

// The backward's steps on one warp's 16 keys against a tile of kBr queries (fragment layouts: attention_mma.cuh),
// each inlined into the kernel.

// Sᵀ = K·Qᵀ [16 keys × kBr queries] (or, with V and dO, dPᵀ = V·dOᵀ): rows of `keys` (this warp's 16) against the
// tile `rows` in shared memory.
template <int D, int kBr, int kStride>
__device__ __forceinline__ void bwd_transposed_product(float (&st)[kBr / 8][4], const bf16* keys, const bf16* rows,
                                                       int warp, int lane) {
#pragma unroll
  for (int n = 0; n < kBr / 8; ++n) st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    std::uint32_t a[4];
    ldmatrix_x4(a, keys + (warp * 16 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int n2 = 0; n2 < kBr / 16; ++n2) {
      std::uint32_t bq[4];
      ldmatrix_x4(bq, rows + (n2 * 16 + (lane & 7) + ((lane >> 4) << 3)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
      mma_bf16_16816(st[2 * n2], a, bq[0], bq[1]);
      mma_bf16_16816(st[2 * n2 + 1], a, bq[2], bq[3]);
    }
  }
}

// Pᵀ = exp(Sᵀ·scale − lse[query]), zero where query < key or query ≥ seq.
template <int kBr>
__device__ __forceinline__ void bwd_probabilities(float (&st)[kBr / 8][4], const float* sLseb, float scale_log2,
                                                  int w_key0, int i0, int seq, int lane) {
  const int lg = lane >> 2, lt = lane & 3;
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
}

// dK += dSᵀ·Q [16 × D], dSᵀ given as bf16 A fragments.
template <int D, int kBr, int kStride>
__device__ __forceinline__ void bwd_accumulate_dk(float (&acc)[D / 8][4], const std::uint32_t (&pa)[kBr / 16][4],
                                               const bf16* rows, int lane) {
#pragma unroll
  for (int kj = 0; kj < kBr / 16; ++kj) {
#pragma unroll
    for (int n2 = 0; n2 < D / 16; ++n2) {
      std::uint32_t bo[4];
      ldmatrix_x4_trans(bo, rows + (kj * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + n2 * 16 + (lane >> 4) * 8);
      mma_bf16_16816(acc[2 * n2], pa[kj], bo[0], bo[1]);
      mma_bf16_16816(acc[2 * n2 + 1], pa[kj], bo[2], bo[3]);
    }
  }
}

// dV += Pᵀ·dO [16 × D], each 16-query slice of Pᵀ packed into A fragments just before its use (fewer registers
// live than packing all of it first: the kernel is at 255).
template <int D, int kBr, int kStride>
__device__ __forceinline__ void bwd_accumulate_dv(float (&dv_acc)[D / 8][4], const float (&st)[kBr / 8][4],
                                                  const bf16* sdOb, int lane) {
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
}

// dSᵀ = Pᵀ ∘ (dPᵀ − delta[query]) as bf16 A fragments, and into this warp's rows of sdS for the dQ step (the
// 1/sqrt(D) is applied once at the end, to dK and dQ).
template <int kBr, int kSStride>
__device__ __forceinline__ void bwd_score_gradient(std::uint32_t (&dsa)[kBr / 16][4], const float (&st)[kBr / 8][4],
                                                   const float (&dpt)[kBr / 8][4], const float* sDeltab, bf16* sdS,
                                                   int warp, int lane) {
  const int lg = lane >> 2, lt = lane & 3;
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
}

// Every pair of this warp's keys and the tile's queries is masked: its rows of dSᵀ are zero.
template <int kBr, int kSStride>
__device__ __forceinline__ void bwd_zero_score_gradient(bf16* sdS, int warp, int lane) {
#pragma unroll
  for (int i = 0; i < 16 * (kBr / 8) / 32; ++i) {
    const int c = i * 32 + lane;
    *reinterpret_cast<uint4*>(sdS + (warp * 16 + c / (kBr / 8)) * kSStride + (c % (kBr / 8)) * 8) =
        make_uint4(0u, 0u, 0u, 0u);
  }
}

// dQ[kBr × D] += dS·K summed over the block's keys, added into dq_head's rows (stride row_stride) with vector
// atomics: warp → 16 queries (warp % 4) × D/2 columns (warp / 4).
template <int D, int kBc, int kStride, int kSStride>
__device__ __forceinline__ void bwd_add_dq(float* dq_head, std::int64_t row_stride, const bf16* sdS, const bf16* sK,
                                           int i0, int k0, int seq, int warp, int lane) {
  const int lg = lane >> 2, lt = lane & 3;
  const int mt = warp & 3, dh = warp >> 2;
  const int qrow0 = i0 + mt * 16;
  const int last = qrow0 + 15 - k0;  // key chunks past this are masked for all 16 queries
  const int n_kc = last < 0 ? 0 : min(kBc / 16, last / 16 + 1);
  if (qrow0 >= seq || n_kc == 0) return;
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
  float* p0 = dq_head + dh * (D / 2) + 2 * lt;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = qrow0 + lg + 8 * i;
    if (row < seq) {
      float* p = p0 + row * row_stride;
#pragma unroll
      for (int n = 0; n < D / 16; ++n)
        atomicAdd(reinterpret_cast<float2*>(p + n * 8), make_float2(dqa[n][2 * i], dqa[n][2 * i + 1]));
    }
  }
}

// Epilogue: dK·scale and dV staged through this warp's rows of sK / sV (once every warp is done reading them), then
// 16-byte stores into the rows of dkb / dvb (stride row_stride).
template <int D, int kStride>
__device__ __forceinline__ void bwd_store(const float (&dk_acc)[D / 8][4], const float (&dv_acc)[D / 8][4], bf16* sK,
                                          bf16* sV, bf16* dkb, bf16* dvb, std::int64_t row_stride, int w_key0, int seq,
                                          float scale, int warp, int lane) {
  const int lg = lane >> 2, lt = lane & 3;
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
#pragma unroll
  for (int i = 0; i < 16 * kChunks / 32; ++i) {
    const int c = i * 32 + lane;
    const int r = c / kChunks, ch = c % kChunks;
    const int key = w_key0 + r;
    if (key < seq) {
      *reinterpret_cast<uint4*>(dkb + key * row_stride + ch * 8) = *reinterpret_cast<const uint4*>(sdK + r * kStride + ch * 8);
      *reinterpret_cast<uint4*>(dvb + key * row_stride + ch * 8) = *reinterpret_cast<const uint4*>(sdV + r * kStride + ch * 8);
    }
  }
}

// The backward block's shared memory, and the loads of one step's query tile into it.
template <int D>
struct BwdSmem {
  using T = BwdTile<D>;
  bf16 *sK, *sV;      // [kBc][kStride] each
  bf16 *sQ, *sdO;     // [2][kBr][kStride] each
  bf16* sdS;          // [kBc][kSStride]
  float *sLse, *sDelta;  // [2][kBr] each
  __device__ explicit BwdSmem(unsigned char* raw)
      : sK(reinterpret_cast<bf16*>(raw)), sV(sK + T::kKVElems), sQ(sV + T::kKVElems), sdO(sQ + 2 * T::kQElems),
        sdS(sdO + 2 * T::kQElems), sLse(reinterpret_cast<float*>(sdS + T::kSElems)), sDelta(sLse + 2 * T::kBr) {}
  // Query rows [i0, i0 + kBr) of one head (its offsets: qoff into q and dout, soff into lse and delta) into buffer
  // `buf`: Q, dO, and the rows' lse and delta (zeros past the end, always masked). All threads call it.
  __device__ __forceinline__ void load_queries(const bf16* q, const bf16* dout, const float* lse, const float* delta,
                                               std::int64_t qoff, std::int64_t soff, std::int64_t q_stride, int i0,
                                               int seq, int buf, int tid) const {
    constexpr int kBr = T::kBr;
    load_rows_async<kBr, D, T::kThreads>(sQ + buf * T::kQElems, q + qoff, q_stride, i0, seq, tid);
    load_rows_async<kBr, D, T::kThreads>(sdO + buf * T::kQElems, dout + qoff, q_stride, i0, seq, tid);
    if (tid < 2 * kBr) {
      const int c = tid & (kBr - 1);
      const bool ok = i0 + c < seq;
      const float* src = tid < kBr ? lse + soff : delta + soff;
      float* dst = tid < kBr ? sLse : sDelta;
      cp_async_4(dst + buf * kBr + c, ok ? src + i0 + c : src, ok);
    }
  }
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
  const BwdSmem<D> sm(smem_raw);
  bf16 *sK = sm.sK, *sV = sm.sV, *sdS = sm.sdS;

  // kv heads vary fastest and the first (longest: most queries below the diagonal) key tiles come first.
  const int g = blockIdx.x;
  const int k0 = blockIdx.y * kBc;
  const std::int64_t b = blockIdx.z;
  const int group = heads / kv_heads;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const std::int64_t q_stride = static_cast<std::int64_t>(heads) * D, kv_stride = static_cast<std::int64_t>(kv_heads) * D;

  // Steps: (query head of the group) × (query tile from the one holding key k0 to the end).
  const int qt0 = k0 / kBr;
  const int n_qt = (seq + kBr - 1) / kBr - qt0;  // ≥ 1 since k0 < seq
  const int n_steps = group * n_qt;
  auto issue = [&](int step, int buf) {
    const int hh = g * group + step / n_qt;
    sm.load_queries(q, dout, lse, delta, (b * seq * heads + hh) * D, (b * heads + hh) * seq, q_stride,
                    (qt0 + step % n_qt) * kBr, seq, buf, tid);
  };
  load_rows_async<kBc, D, T::kThreads>(sK, k + (b * seq * kv_heads + g) * D, kv_stride, k0, seq, tid);
  load_rows_async<kBc, D, T::kThreads>(sV, v + (b * seq * kv_heads + g) * D, kv_stride, k0, seq, tid);
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
    const bf16* sQb = sm.sQ + buf * T::kQElems;
    const bf16* sdOb = sm.sdO + buf * T::kQElems;
    if (w_key0 <= min(i0 + kBr, seq) - 1) {  // some (query ≥ key, query < seq) pair in this warp's block
      float st[kBr / 8][4];
      bwd_transposed_product<D, kBr, kStride>(st, sK, sQb, warp, lane);  // Sᵀ
      bwd_probabilities<kBr>(st, sm.sLse + buf * kBr, scale_log2, w_key0, i0, seq, lane);
      bwd_accumulate_dv<D, kBr, kStride>(dv_acc, st, sdOb, lane);  // dV += Pᵀ·dO
      float dpt[kBr / 8][4];
      bwd_transposed_product<D, kBr, kStride>(dpt, sV, sdOb, warp, lane);  // dPᵀ
      std::uint32_t dsa[kBr / 16][4];
      bwd_score_gradient<kBr, kSStride>(dsa, st, dpt, sm.sDelta + buf * kBr, sdS, warp, lane);
      bwd_accumulate_dk<D, kBr, kStride>(dk_acc, dsa, sQb, lane);  // dK += dSᵀ·Q
    } else {
      bwd_zero_score_gradient<kBr, kSStride>(sdS, warp, lane);
    }
    __syncthreads();  // dSᵀ of all 128 keys complete
    bwd_add_dq<D, kBc, kStride, kSStride>(dq_acc + (b * seq * heads + hh) * D, q_stride, sdS, sK, i0, k0, seq, warp,
                                          lane);
  }
  __syncthreads();  // every warp done reading sK and sV
  bwd_store<D, kStride>(dk_acc, dv_acc, sK, sV, dk + (b * seq * kv_heads + g) * D, dv + (b * seq * kv_heads + g) * D,
                        kv_stride, w_key0, seq, scale, warp, lane);
}

}  // namespace qwen3::cuda::attn
