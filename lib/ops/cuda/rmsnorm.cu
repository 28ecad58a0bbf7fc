// CUDA RMSNorm kernels (see rmsnorm.h). Rows whose length is a multiple of 8 (16-byte aligned) take the vector paths,
// 16-byte accesses throughout:
// - forward: one warp per row, held in registers (up to kMaxRegChunks × 256 = 8,192 values; longer rows take the
//   scalar path), its loads issued together (a loop that waits on each load ran at a third of the memory's bandwidth);
// - backward, up to kMaxFusedDim (6,144) values a row: one block per run of rows (one wave of blocks), a thread per 8
//   columns, so that a thread's share of the weight gradient (dw[i] = Σ_rows dy·x·rstd) stays in its registers across
//   the rows, x and dy are read once, and atomics per column and block end it (16 bytes each where dw is aligned);
//   the next row's loads (x, dy and, when accumulating, dx) are issued before this row's barrier.
//   Longer rows: one warp per row for dx, then a separate column reduction for dw that reads dy and x once more.
// Other lengths take a scalar block-per-row path.
#include <algorithm>
#include <initializer_list>

#include "core/error.h"
#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/rmsnorm.h"

namespace qwen3::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerBlockBwd = 16;

// ---- vector path (dim % 8 == 0, 16-byte aligned rows) ----

constexpr int kMaxRegChunks = 32;  // a forward row held in registers: up to 32 × 256 = 8,192 values (8 per lane a chunk)

// One warp per row, the row's chunks loaded together into registers (lane: columns 8·lane + 256·k, k < kChunks).
// amax_bits (optional): y's amax (see publish_amax; every thread reaches it, rows past the end included). Up to 16
// chunks (64 registers of them) two blocks fit an SM; 32 chunks (hidden sizes above 4,096) take one.
template <int kChunks>
__global__ void __launch_bounds__(kThreads, kChunks <= 16 ? 2 : 1) rmsnorm_forward_reg_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                           float* __restrict__ rstd, std::int64_t rows, std::int64_t dim, float eps,
                                           unsigned* __restrict__ amax_bits) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  unsigned m = 0;
  if (row < rows) {
    const int lane = threadIdx.x & 31;
    const bf16* xr = x + row * dim;
    Bf16x8 raw[kChunks];
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const std::int64_t c = 8 * lane + 256 * k;
      if (c < dim) raw[k] = *reinterpret_cast<const Bf16x8*>(xr + c);
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      if (8 * lane + 256 * k >= dim) continue;
      float v[8];
      widen8(raw[k], v);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += v[j] * v[j];
    }
    ss = warp_sum(ss);
    const float s = rsqrtf(ss / static_cast<float>(dim) + eps);
    if (lane == 0) rstd[row] = s;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const std::int64_t c = 8 * lane + 256 * k;
      if (c >= dim) continue;
      float v[8], g[8];
      widen8(raw[k], v);
      load8(w + c, g);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = v[j] * s * g[j];
      if (amax_bits) m = max(m, magnitude_bits8(v));
      store8(y + row * dim + c, v);
    }
  }
  if (amax_bits) publish_amax(m, amax_bits);
}


// One row of the data gradient (one warp); returns the largest magnitude of its bf16 copy when with_amax.
__device__ __forceinline__ unsigned rmsnorm_backward_dx_row(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                            const float* __restrict__ rstd, const float* __restrict__ dy,
                                                            float* __restrict__ dx, bf16* __restrict__ dx_bf16,
                                                            std::int64_t row, std::int64_t dim, bool accumulate,
                                                            bool with_amax) {
  const int lane = threadIdx.x & 31;
  const bf16* xr = x + row * dim;
  const float* dyr = dy + row * dim;
  const float s = rstd[row];
  float dot = 0.0f;
  for (std::int64_t c = 8 * lane; c < dim; c += 256) {
    float xv[8], gv[8], wv[8];
    load8(xr + c, xv);
    load8(dyr + c, gv);
    load8(w + c, wv);
#pragma unroll
    for (int j = 0; j < 8; ++j) dot += gv[j] * wv[j] * xv[j];
  }
  dot = warp_sum(dot);
  const float k = s * s * s * dot / static_cast<float>(dim);
  float* dxr = dx + row * dim;
  unsigned m = 0;
  for (std::int64_t c = 8 * lane; c < dim; c += 256) {
    float xv[8], gv[8], wv[8], out[8];
    load8(xr + c, xv);
    load8(dyr + c, gv);
    load8(w + c, wv);
    if (accumulate) {
      load8(dxr + c, out);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] += s * gv[j] * wv[j] - xv[j] * k;
    store8(dxr + c, out);
    if (dx_bf16 != nullptr) {
      if (with_amax) m = max(m, magnitude_bits8(out));
      store8(dx_bf16 + row * dim + c, out);
    }
  }
  return m;
}

// dx = rstd·dy·w − x·rstd³·(Σ dy·w·x)/dim, written or added into dx; dx_bf16 (optional) receives the bf16 copy of the
// result (the next GEMM's input), which saves a separate cast pass, and amax_bits (optional, with dx_bf16) its amax.
__global__ void rmsnorm_backward_dx_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                           const float* __restrict__ rstd, const float* __restrict__ dy,
                                           float* __restrict__ dx, bf16* __restrict__ dx_bf16, std::int64_t rows,
                                           std::int64_t dim, bool accumulate, unsigned* __restrict__ amax_bits) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const unsigned m = row < rows ? rmsnorm_backward_dx_row(x, w, rstd, dy, dx, dx_bf16, row, dim, accumulate,
                                                          amax_bits != nullptr)
                                : 0u;
  if (amax_bits) publish_amax(m, amax_bits);
}

// The fused backward's block: a thread per 8 columns, at most 768 threads, so that its registers (bounded to 85 a
// thread by __launch_bounds__) fit an SM's 65,536 — every preset's hidden size (at most 5,120) is within.
constexpr int kMaxFusedThreads = 768;
constexpr int kMaxFusedDim = 8 * kMaxFusedThreads;

// Rows [blockIdx.x·rows_per_block, …) of dx (as rmsnorm_backward_dx_kernel) and their dw share, in one pass: thread t
// owns columns [8t, 8t + 8), so w and its dw partial sums stay in registers; each row's Σ dy·w·x is summed over the
// block through a two-slot shared array (one barrier a row: row r + 2 writes the slot row r read only after every
// thread passed row r + 1's barrier). Atomics add the partial sums into dw, one per column and block (two 16-byte ones
// a thread where dw is 16-byte aligned).
__global__ void __launch_bounds__(kMaxFusedThreads)
    rmsnorm_backward_fused_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                  const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx,
                                  bf16* __restrict__ dx_bf16, float* __restrict__ dw, std::int64_t rows,
                                  std::int64_t dim, std::int64_t rows_per_block, bool accumulate,
                                  unsigned* __restrict__ amax_bits, bool dw_vec) {
  __shared__ float part[2][32];
  const std::int64_t c = 8 * static_cast<std::int64_t>(threadIdx.x);
  const bool mine = c < dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * rows_per_block;
  const std::int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float wv[8] = {}, acc[8] = {}, xv[8] = {}, gv[8] = {}, dv[8] = {};  // dv: dx's old values when accumulating
  if (mine) load8(w + c, wv);
  if (mine && r0 < r1) {
    load8(x + r0 * dim + c, xv);
    load8(dy + r0 * dim + c, gv);
    if (accumulate) load8(dx + r0 * dim + c, dv);
  }
  float s = r0 < r1 ? rstd[r0] : 0.0f;
  unsigned m = 0;
  int slot = 0;
  for (std::int64_t r = r0; r < r1; ++r, slot ^= 1) {
    float xn[8] = {}, gn[8] = {}, dn[8] = {};  // the next row's, loading while this one is reduced
    const float sn = r + 1 < r1 ? rstd[r + 1] : 0.0f;
    if (mine && r + 1 < r1) {
      load8(x + (r + 1) * dim + c, xn);
      load8(dy + (r + 1) * dim + c, gn);
      if (accumulate) load8(dx + (r + 1) * dim + c, dn);
    }
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) dot += gv[j] * wv[j] * xv[j];
    dot = warp_sum(dot);
    if (lane == 0) part[slot][warp] = dot;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < warps; ++i) total += part[slot][i];
    const float k = s * s * s * total / static_cast<float>(dim);
    if (mine) {
      float out[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        out[j] = dv[j] + (s * gv[j] * wv[j] - xv[j] * k);
        acc[j] += gv[j] * xv[j] * s;
      }
      store8(dx + r * dim + c, out);
      if (dx_bf16 != nullptr) {
        if (amax_bits) m = max(m, magnitude_bits8(out));
        store8(dx_bf16 + r * dim + c, out);
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      xv[j] = xn[j];
      gv[j] = gn[j];
      dv[j] = dn[j];
    }
    s = sn;
  }
  if (mine) {
#if __CUDA_ARCH__ >= 900
    if (dw_vec) {  // two 16-byte atomics, not eight: the same columns of every block meet in the same L2 lines
      atomicAdd(reinterpret_cast<float4*>(dw + c), make_float4(acc[0], acc[1], acc[2], acc[3]));
      atomicAdd(reinterpret_cast<float4*>(dw + c + 4), make_float4(acc[4], acc[5], acc[6], acc[7]));
    } else
#endif
#pragma unroll
      for (int j = 0; j < 8; ++j) atomicAdd(dw + c + j, acc[j]);
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

// How many blocks of `threads` threads of the fused backward the current GPU runs at once (asked once per block size).
std::int64_t fused_backward_resident_blocks(unsigned threads) {
  static std::int64_t known[kMaxFusedThreads / 32 + 1] = {};
  std::int64_t& n = known[threads / 32];
  if (n == 0) {
    int device = 0, sms = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rmsnorm_backward_fused_kernel,
                                                             static_cast<int>(threads), 0));
    n = std::max<std::int64_t>(1, static_cast<std::int64_t>(sms) * per_sm);
  }
  return n;
}

// dw[c] += Σ_rows dy[r, c]·x[r, c]·rstd[r]. Block (32, 8): threadIdx.x owns 8 columns, threadIdx.y strides the rows
// of this block's row chunk; the 8 partial sums are combined in shared memory, then one atomicAdd per column and block.
constexpr int kDwRowThreads = 8;
__global__ void rmsnorm_backward_dw_kernel(const bf16* __restrict__ x, const float* __restrict__ rstd,
                                           const float* __restrict__ dy, float* __restrict__ dw, std::int64_t rows,
                                           std::int64_t dim, std::int64_t rows_per_block) {
  __shared__ float part[kDwRowThreads][32 * 8 + 4];
  const std::int64_t c = (static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x) * 8;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_block;
  const std::int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (c < dim) {
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kDwRowThreads) {
      float xv[8], gv[8];
      load8(x + r * dim + c, xv);
      load8(dy + r * dim + c, gv);
      const float s = rstd[r];
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += gv[j] * xv[j] * s;
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) part[threadIdx.y][threadIdx.x * 8 + j] = acc[j];
  __syncthreads();
  const int t = threadIdx.y * 32 + threadIdx.x;  // 256 threads, one column of the block's 256 each
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * 256 + t;
  if (col < dim) {
    float sum = 0.0f;
#pragma unroll
    for (int y = 0; y < kDwRowThreads; ++y) sum += part[y][t];
    atomicAdd(dw + col, sum);
  }
}

// ---- scalar path (any dim) ----

__global__ void rmsnorm_forward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                       float* __restrict__ rstd, std::int64_t dim, float eps,
                                       unsigned* __restrict__ amax_bits) {
  const std::int64_t row = blockIdx.x;
  const bf16* xr = x + row * dim;
  float ss = 0.0f;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_f(xr[i]);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float s = rsqrtf(ss / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) rstd[row] = s;
  unsigned m = 0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const bf16 v = to_bf(to_f(xr[i]) * s * to_f(w[i]));
    m = max(m, magnitude_bits(v));
    y[row * dim + i] = v;
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

// Each block handles kRowsPerBlockBwd rows; each thread owns columns i ≡ threadIdx.x (mod blockDim) for dw.
__global__ void rmsnorm_backward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                        const float* __restrict__ rstd, const float* __restrict__ dy,
                                        float* __restrict__ dx, bf16* __restrict__ dx_bf16, float* __restrict__ dw,
                                        std::int64_t rows, std::int64_t dim, bool accumulate,
                                        unsigned* __restrict__ amax_bits) {
  extern __shared__ float dw_acc[];  // [dim]
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) dw_acc[i] = 0.0f;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlockBwd;
  unsigned m = 0;
  for (std::int64_t row = row0; row < row0 + kRowsPerBlockBwd && row < rows; ++row) {
    const bf16* xr = x + row * dim;
    const float* dyr = dy + row * dim;
    const float s = rstd[row];
    float dot = 0.0f;
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float xv = to_f(xr[i]), g = dyr[i];
      dot += g * to_f(w[i]) * xv;
      dw_acc[i] += g * xv * s;
    }
    dot = block_sum(dot);
    const float k = s * s * s * dot / static_cast<float>(dim);
    float* dxr = dx + row * dim;
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = s * dyr[i] * to_f(w[i]) - to_f(xr[i]) * k;
      const float out = accumulate ? dxr[i] + v : v;
      dxr[i] = out;
      if (dx_bf16 != nullptr) {
        dx_bf16[row * dim + i] = to_bf(out);
        m = max(m, magnitude_bits(to_bf(out)));
      }
    }
  }
  __syncthreads();
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) atomicAdd(dw + i, dw_acc[i]);
  if (amax_bits) publish_amax(m, amax_bits);
}

bool vector_path(std::int64_t dim, std::initializer_list<const void*> ptrs) {
  if (dim % 8 != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && !aligned16(p)) return false;
  return true;
}

}  // namespace

void rmsnorm_forward(const bf16* x, const bf16* w, bf16* y, float* rstd, std::int64_t rows, std::int64_t dim, float eps,
                     cudaStream_t stream, float* y_amax) {
  unsigned* amax = zeroed_amax(y_amax, stream);
  if (rows == 0) return;
  if (vector_path(dim, {x, w, y}) && dim <= 256 * kMaxRegChunks) {
    const auto blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
    const std::int64_t chunks = (dim + 255) / 256;
    if (chunks <= 4) {
      rmsnorm_forward_reg_kernel<4><<<blocks, kThreads, 0, stream>>>(x, w, y, rstd, rows, dim, eps, amax);
    } else if (chunks <= 8) {
      rmsnorm_forward_reg_kernel<8><<<blocks, kThreads, 0, stream>>>(x, w, y, rstd, rows, dim, eps, amax);
    } else if (chunks <= 16) {
      rmsnorm_forward_reg_kernel<16><<<blocks, kThreads, 0, stream>>>(x, w, y, rstd, rows, dim, eps, amax);
    } else {
      rmsnorm_forward_reg_kernel<kMaxRegChunks><<<blocks, kThreads, 0, stream>>>(x, w, y, rstd, rows, dim, eps, amax);
    }
    CUDA_CHECK_LAUNCH("rmsnorm_forward (vector path)");
    return;
  }
  rmsnorm_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, y, rstd, dim, eps, amax);
  CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const bf16* x, const bf16* w, const float* rstd, const float* dy, float* dx, float* dw,
                      std::int64_t rows, std::int64_t dim, bool accumulate, cudaStream_t stream, bf16* dx_bf16,
                      float* dx_bf16_amax) {
  QWEN3_ASSERT(!dx_bf16_amax || dx_bf16, "rmsnorm_backward: an amax of the bf16 copy needs the copy");
  unsigned* amax = zeroed_amax(dx_bf16_amax, stream);
  if (rows == 0) return;
  if (vector_path(dim, {x, w, dy, dx, dx_bf16}) && dim <= kMaxFusedDim) {
    // One wave: as many blocks as the GPU holds at once, each a run of at least 4 rows (a second, partly filled wave
    // left SMs idle; dw's atomics are one per column and block)
    const auto threads = static_cast<unsigned>((dim / 8 + 31) / 32 * 32);
    const std::int64_t resident = fused_backward_resident_blocks(threads);
    const std::int64_t per_block = std::max<std::int64_t>(4, (rows + resident - 1) / resident);
    rmsnorm_backward_fused_kernel<<<static_cast<unsigned>((rows + per_block - 1) / per_block), threads, 0, stream>>>(
        x, w, rstd, dy, dx, dx_bf16, dw, rows, dim, per_block, accumulate, amax, aligned16(dw));
    CUDA_CHECK_LAUNCH("rmsnorm_backward_fused_kernel");
    return;
  }
  if (vector_path(dim, {x, w, dy, dx, dx_bf16})) {
    rmsnorm_backward_dx_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
        x, w, rstd, dy, dx, dx_bf16, rows, dim, accumulate, amax);
    CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
    // Enough row chunks to fill the GPU several times over; each block reduces rows_per_block rows of 256 columns.
    const std::int64_t col_blocks = (dim + 255) / 256;
    std::int64_t row_blocks = (1024 + col_blocks - 1) / col_blocks;
    if (row_blocks > (rows + 7) / 8) row_blocks = (rows + 7) / 8;
    const std::int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
    row_blocks = (rows + rows_per_block - 1) / rows_per_block;
    rmsnorm_backward_dw_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks)),
                                 dim3(32, kDwRowThreads), 0, stream>>>(x, rstd, dy, dw, rows, dim, rows_per_block);
    CUDA_CHECK_LAUNCH("rmsnorm_backward_dw_kernel");
    return;
  }
  const auto blocks = static_cast<unsigned>((rows + kRowsPerBlockBwd - 1) / kRowsPerBlockBwd);
  const std::size_t smem = static_cast<std::size_t>(dim) * sizeof(float);
  if (smem > 48 * 1024) {
    static bool raised = false;  // once per process: allow more than 48 KB of dynamic shared memory
    if (!raised) {
      CUDA_CHECK(cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024));
      raised = true;
    }
  }
  rmsnorm_backward_kernel<<<blocks, kThreads, smem, stream>>>(x, w, rstd, dy, dx, dx_bf16, dw, rows, dim, accumulate,
                                                              amax);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_kernel");
}

}  // namespace qwen3::cuda
