// CUDA elementwise kernels (see elementwise.h): grid-stride loops, fp32 math on bf16 storage.
#include <algorithm>

#include "core/error.h"
#include "gpu/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/fp8_tile.cuh"

namespace qwen3::cuda {
namespace {
constexpr int kThreads = 256;

// amax_bits (optional, every kernel of this family): the amax of what it writes — a, or dgu (publish_amax).
__global__ void swiglu_forward_kernel(const bf16* __restrict__ gu, bf16* __restrict__ a, std::int64_t rows,
                                      std::int64_t I, unsigned* __restrict__ amax_bits) {
  const std::int64_t n = rows * I;
  unsigned m = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / I, c = i - r * I;
    const float x = to_f(gu[r * 2 * I + c]);
    const bf16 y = to_bf(x / (1.0f + __expf(-x)) * to_f(gu[r * 2 * I + I + c]));
    a[i] = y;
    m = max(m, magnitude_bits(y));
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

// Eight columns per thread (I a multiple of 8, 16-byte aligned buffers).
__global__ void swiglu_forward_vec_kernel(const bf16* __restrict__ gu, bf16* __restrict__ a, std::int64_t rows,
                                          std::int64_t I, unsigned* __restrict__ amax_bits) {
  const std::int64_t I8 = I / 8, n = rows * I8;
  unsigned m = 0;
  for (std::int64_t v = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = v / I8, c = (v - r * I8) * 8;
    float g[8], u[8], y[8];
    load8(gu + r * 2 * I + c, g);
    load8(gu + r * 2 * I + I + c, u);
#pragma unroll
    for (int j = 0; j < 8; ++j) y[j] = g[j] / (1.0f + __expf(-g[j])) * u[j];
    if (amax_bits) m = max(m, magnitude_bits8(y));
    store8(a + r * I + c, y);
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

// One element of the SwiGLU backward: the gradients of gate and up from da, and the forward product a = silu(gate)·up
// (recomputed here instead of stored) — one expression for every kernel below, so that they round alike.
__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float& dg, float& du, float& y) {
  const float sig = 1.0f / (1.0f + __expf(-g));
  dg = d * u * sig * (1.0f + g * (1.0f - sig));
  du = d * g * sig;
  y = g * sig * u;
}

// The backward also rewrites the forward product a = silu(gate)·up when a is non-null (the engine recomputes it here
// instead of storing it).
__global__ void swiglu_backward_vec_kernel(const bf16* __restrict__ gu, const bf16* __restrict__ da,
                                           bf16* __restrict__ dgu, bf16* __restrict__ a, std::int64_t rows,
                                           std::int64_t I, unsigned* __restrict__ amax_bits) {
  const std::int64_t I8 = I / 8, n = rows * I8;
  unsigned m = 0;
  for (std::int64_t v = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = v / I8, c = (v - r * I8) * 8;
    float g[8], u[8], d[8], dg[8], du[8], y[8];
    load8(gu + r * 2 * I + c, g);
    load8(gu + r * 2 * I + I + c, u);
    load8(da + r * I + c, d);
#pragma unroll
    for (int j = 0; j < 8; ++j) swiglu_grad(g[j], u[j], d[j], dg[j], du[j], y[j]);
    if (amax_bits) m = max(m, max(magnitude_bits8(dg), magnitude_bits8(du)));
    store8(dgu + r * 2 * I + c, dg);
    store8(dgu + r * 2 * I + I + c, du);
    if (a != nullptr) store8(a + r * I + c, y);
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

__global__ void swiglu_backward_kernel(const bf16* __restrict__ gu, const bf16* __restrict__ da,
                                       bf16* __restrict__ dgu, bf16* __restrict__ a, std::int64_t rows, std::int64_t I,
                                       unsigned* __restrict__ amax_bits) {
  const std::int64_t n = rows * I;
  unsigned m = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / I, c = i - r * I;
    float dgf, duf, y;
    swiglu_grad(to_f(gu[r * 2 * I + c]), to_f(gu[r * 2 * I + I + c]), to_f(da[i]), dgf, duf, y);
    const bf16 dg = to_bf(dgf), du = to_bf(duf);
    dgu[r * 2 * I + c] = dg;
    dgu[r * 2 * I + I + c] = du;
    m = max(m, max(magnitude_bits(dg), magnitude_bits(du)));
    if (a != nullptr) a[i] = to_bf(y);
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

// The backward with the product a written only as the E4M3 copy the down projection's weight gradient reads:
// transposed, a_t[c · a_t_ld + r] = fp8(bf16(a[r, c]) · s), s from the forward's amax of a (exact current scaling: the
// product the forward measured), 1/s into *a_t_inv — the codes fp8_cast gives the bf16 a swiglu_backward_vec_kernel
// writes. A block per kFp8tRows × kFp8tCols tile of [row_extent, I] (row_extent = a_t_ld ≥ rows tokens, the padding
// ones' codes zero): its threads walk the tile's rows as swiglu_backward_vec_kernel walks them (16 threads a row, 8
// columns each: 256-byte loads and stores), the codes into shared memory; then each thread writes 16-token runs of the
// transposed columns as 16-byte stores. (A warp per 32 × 32 sub-tile transposed in registers ran at 64 registers a
// thread and 1.8 TB/s on an H100, the plain backward at 2.4: docs/fp8.md.) vector: 16-byte loads and stores of gate_up,
// da and dgate_up (I % 8 == 0, aligned), else element by element.
constexpr int kFp8tRows = 64, kFp8tCols = 128, kFp8tRowThreads = kFp8tCols / 8, kFp8tRun = 16;
using Fp8tTile = std::uint8_t[kFp8tRows][kFp8tCols + 16];  // + 16: rows 16-byte aligned, banks staggered

// Writes a tile's codes (tile[token][column]) transposed: out[(C + col) · ld + R + token] for col < I − C, tokens of
// the tile below row_extent, 16 a store (row_extent % 16 == 0: a run is wholly inside or outside).
__device__ __forceinline__ void store_tile_transposed(const Fp8tTile& tile, std::uint8_t* __restrict__ out,
                                                      std::int64_t ld, std::int64_t R, std::int64_t C, std::int64_t I,
                                                      std::int64_t row_extent) {
  for (int p = threadIdx.x; p < kFp8tCols * (kFp8tRows / kFp8tRun); p += kThreads) {
    const int col = p % kFp8tCols, run = p / kFp8tCols;
    const std::int64_t c = C + col, r = R + kFp8tRun * run;
    if (c >= I || r >= row_extent) continue;
    unsigned w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int t = kFp8tRun * run + 4 * k;
      w[k] = tile[t][col] | tile[t + 1][col] << 8 | tile[t + 2][col] << 16 | static_cast<unsigned>(tile[t + 3][col]) << 24;
    }
    *reinterpret_cast<uint4*>(out + c * ld + r) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// 8 values' codes (rounded to bf16 first, as a cast of the bf16 tensor would see them), packed in order.
__device__ __forceinline__ uint2 codes8(const float (&v)[8], float s, Fp8Format f) {
  Bf16x8 b;
#pragma unroll
  for (int j = 0; j < 4; ++j) b.h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  return to_fp8x8(*reinterpret_cast<const uint4*>(&b), s, f);
}

template <bool vector, bool grad_fp8>
__global__ void __launch_bounds__(kThreads) swiglu_backward_fp8t_kernel(
    const bf16* __restrict__ gu, const bf16* __restrict__ da, bf16* __restrict__ dgu, std::int64_t rows,
    std::int64_t I, std::int64_t row_extent, const float* __restrict__ a_amax, std::uint8_t* __restrict__ a_t,
    std::int64_t a_t_ld, float* __restrict__ a_t_inv, unsigned* __restrict__ amax_bits, SwigluGradFp8 out) {
  __shared__ __align__(16) Fp8tTile codes;  // written 8 bytes at a time
  __shared__ __align__(16) Fp8tTile grad_codes[grad_fp8 ? 2 : 1];  // dgate, dup transposed (grad_fp8)
  const float s = fp8_scale_and_publish(a_amax, Fp8Format::e4m3, a_t_inv);
  float sg = 0.0f;
  if constexpr (grad_fp8) {
    sg = fp8_delayed_scale(*out.previous_amax, Fp8Format::e5m2);
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *out.inv = 1.0f / sg;
  }
  const std::int64_t R = static_cast<std::int64_t>(blockIdx.y) * kFp8tRows;
  const std::int64_t C = static_cast<std::int64_t>(blockIdx.x) * kFp8tCols;
  const int lc = threadIdx.x % kFp8tRowThreads, lr = threadIdx.x / kFp8tRowThreads;
  unsigned m = 0;
  for (int i = lr; i < kFp8tRows; i += kThreads / kFp8tRowThreads) {
    const std::int64_t r = R + i, c = C + 8 * lc;
    uint2 code = {0u, 0u}, gcode = {0u, 0u}, ucode = {0u, 0u};  // a padding token's, or columns past I
    if (r < rows && c < I) {
      float g[8], u[8], d[8], dg[8], du[8], y[8];
      if constexpr (vector) {
        load8(gu + r * 2 * I + c, g);
        load8(gu + r * 2 * I + I + c, u);
        load8(da + r * I + c, d);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const bool in = c + j < I;
          g[j] = in ? to_f(gu[r * 2 * I + c + j]) : 0.0f;
          u[j] = in ? to_f(gu[r * 2 * I + I + c + j]) : 0.0f;
          d[j] = in ? to_f(da[r * I + c + j]) : 0.0f;
        }
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) swiglu_grad(g[j], u[j], d[j], dg[j], du[j], y[j]);
      m = max(m, max(magnitude_bits8(dg), magnitude_bits8(du)));  // columns past I: zeros
      if constexpr (grad_fp8) {
        gcode = codes8(dg, sg, Fp8Format::e5m2);
        ucode = codes8(du, sg, Fp8Format::e5m2);
        if (vector) {
          *reinterpret_cast<uint2*>(out.rows + r * out.ld + c) = gcode;
          *reinterpret_cast<uint2*>(out.rows + r * out.ld + I + c) = ucode;
        } else {
          for (int j = 0; j < 8 && c + j < I; ++j) {
            out.rows[r * out.ld + c + j] = static_cast<std::uint8_t>((j < 4 ? gcode.x : gcode.y) >> (8 * (j % 4)));
            out.rows[r * out.ld + I + c + j] = static_cast<std::uint8_t>((j < 4 ? ucode.x : ucode.y) >> (8 * (j % 4)));
          }
        }
      } else if constexpr (vector) {
        store8(dgu + r * 2 * I + c, dg);
        store8(dgu + r * 2 * I + I + c, du);
      } else {
        for (int j = 0; j < 8 && c + j < I; ++j) {
          dgu[r * 2 * I + c + j] = to_bf(dg[j]);
          dgu[r * 2 * I + I + c + j] = to_bf(du[j]);
        }
      }
      code = codes8(y, s, Fp8Format::e4m3);
    }
    *reinterpret_cast<uint2*>(&codes[i][8 * lc]) = code;
    if constexpr (grad_fp8) {
      *reinterpret_cast<uint2*>(&grad_codes[0][i][8 * lc]) = gcode;
      *reinterpret_cast<uint2*>(&grad_codes[1][i][8 * lc]) = ucode;
    }
  }
  __syncthreads();
  store_tile_transposed(codes, a_t, a_t_ld, R, C, I, row_extent);
  if constexpr (grad_fp8) {
    store_tile_transposed(grad_codes[0], out.cols, a_t_ld, R, C, I, row_extent);              // dgate: rows c < I
    store_tile_transposed(grad_codes[1], out.cols + I * a_t_ld, a_t_ld, R, C, I, row_extent);  // dup: rows I + c
  }
  if (amax_bits) publish_amax(m, amax_bits);
}

// The forward with the product written only as down's row-major E4M3 operand (delayed scaling): codes[r · ld + c] =
// fp8(bf16(a[r, c]) · s), s = fp8_delayed_scale(*previous_amax), the padding columns [I, ld) zero — the codes fp8_cast
// gives swiglu_forward's a with that scale; a's amax into amax_bits and running_bits. vector: 8 columns a thread.
template <bool vector>
__global__ void swiglu_forward_fp8_kernel(const bf16* __restrict__ gu, std::int64_t rows, std::int64_t I,
                                          SwigluFwdFp8 out, unsigned* __restrict__ amax_bits,
                                          unsigned* __restrict__ running_bits) {
  const float s = fp8_delayed_scale(*out.previous_amax, Fp8Format::e4m3);
  if (blockIdx.x == 0 && threadIdx.x == 0) *out.inv = 1.0f / s;
  constexpr int per = vector ? 8 : 1;
  const std::int64_t W = out.ld / per, n = rows * W;
  unsigned m = 0;
  for (std::int64_t v = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; v < n;
       v += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = v / W, c = (v - r * W) * per;
    if constexpr (vector) {
      uint2 code = {0u, 0u};  // padding columns
      if (c < I) {
        float g[8], u[8], y[8];
        load8(gu + r * 2 * I + c, g);
        load8(gu + r * 2 * I + I + c, u);
#pragma unroll
        for (int j = 0; j < 8; ++j) y[j] = g[j] / (1.0f + __expf(-g[j])) * u[j];
        m = max(m, magnitude_bits8(y));
        code = codes8(y, s, Fp8Format::e4m3);
      }
      *reinterpret_cast<uint2*>(out.rows + r * out.ld + c) = code;
    } else {
      std::uint8_t code = 0;
      if (c < I) {
        const float x = to_f(gu[r * 2 * I + c]);
        const bf16 y = to_bf(x / (1.0f + __expf(-x)) * to_f(gu[r * 2 * I + I + c]));
        m = max(m, magnitude_bits(y));
        code = to_fp8(to_f(y) * s, Fp8Format::e4m3);
      }
      out.rows[r * out.ld + c] = code;
    }
  }
  publish_amax(m, amax_bits, running_bits);
}

__global__ void copy_columns_kernel(const bf16* __restrict__ src, std::int64_t src_ld, bf16* __restrict__ dst,
                                    std::int64_t dst_ld, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i - r * cols;
    dst[r * dst_ld + c] = src[r * src_ld + c];
  }
}

__global__ void embedding_forward_kernel(const std::int32_t* __restrict__ ids, const bf16* __restrict__ table,
                                         bf16* __restrict__ x, std::int64_t hidden, std::int64_t v0, std::int64_t nv) {
  const std::int64_t t = blockIdx.x, local = static_cast<std::int64_t>(ids[t]) - v0;
  if (local < 0 || local >= nv) {
    for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = to_bf(0.0f);
    return;
  }
  const bf16* row = table + local * hidden;
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = row[i];
}

__global__ void embedding_backward_kernel(const std::int32_t* __restrict__ ids, const float* __restrict__ dx,
                                          float* __restrict__ dtable, std::int64_t hidden, std::int64_t v0,
                                          std::int64_t nv) {
  const std::int64_t t = blockIdx.x, local = static_cast<std::int64_t>(ids[t]) - v0;
  if (local < 0 || local >= nv) return;
  float* row = dtable + local * hidden;
  for (std::int64_t i = threadIdx.x; i < hidden; i += blockDim.x) atomicAdd(row + i, dx[t * hidden + i]);
}

template <typename T>
__global__ void add_kernel(const T* a, const T* b, T* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (sizeof(T) == 2) {
      out[i] = to_bf(to_f(a[i]) + to_f(b[i]));
    } else {
      out[i] = a[i] + b[i];
    }
  }
}

__global__ void copy_columns_vec_kernel(const bf16* __restrict__ src, std::int64_t src_ld, bf16* __restrict__ dst,
                                        std::int64_t dst_ld, std::int64_t rows, std::int64_t cols) {
  const std::int64_t c8 = cols / 8, n = rows * c8;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / c8, c = (i - r * c8) * 8;
    *reinterpret_cast<Bf16x8*>(dst + r * dst_ld + c) = *reinterpret_cast<const Bf16x8*>(src + r * src_ld + c);
  }
}

__global__ void cast_f32_bf16_kernel(const float* __restrict__ in, bf16* __restrict__ out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_bf(in[i]);
}

__global__ void cast_f32_bf16_vec_kernel(const float* __restrict__ in, bf16* __restrict__ out, std::int64_t n8) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n8;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    load8(in + 8 * i, v);
    store8(out + 8 * i, v);
  }
}

__global__ void cast_bf16_f32_kernel(const bf16* __restrict__ in, float* __restrict__ out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_f(in[i]);
}
}  // namespace

void swiglu_forward(const bf16* gate_up, bf16* a, std::int64_t rows, std::int64_t inter, cudaStream_t stream,
                    float* a_amax) {
  unsigned* amax = zeroed_amax(a_amax, stream);
  if (rows * inter == 0) return;
  if (inter % 8 == 0 && aligned16(gate_up) && aligned16(a)) {
    swiglu_forward_vec_kernel<<<grid_for(rows * inter / 8, kThreads), kThreads, 0, stream>>>(gate_up, a, rows, inter,
                                                                                            amax);
    CUDA_CHECK_LAUNCH("swiglu_forward_vec_kernel");
    return;
  }
  swiglu_forward_kernel<<<grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, a, rows, inter, amax);
  CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(const bf16* gate_up, const bf16* da, bf16* dgate_up, std::int64_t rows, std::int64_t inter,
                     cudaStream_t stream, bf16* a, float* dgate_up_amax) {
  unsigned* amax = zeroed_amax(dgate_up_amax, stream);
  if (rows * inter == 0) return;
  if (inter % 8 == 0 && aligned16(gate_up) && aligned16(da) && aligned16(dgate_up) && (a == nullptr || aligned16(a))) {
    swiglu_backward_vec_kernel<<<grid_for(rows * inter / 8, kThreads), kThreads, 0, stream>>>(gate_up, da, dgate_up, a,
                                                                                             rows, inter, amax);
    CUDA_CHECK_LAUNCH("swiglu_backward_vec_kernel");
    return;
  }
  swiglu_backward_kernel<<<grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, da, dgate_up, a, rows, inter,
                                                                                   amax);
  CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

void swiglu_forward_fp8(const bf16* gate_up, std::int64_t rows, std::int64_t inter, const SwigluFwdFp8& out,
                        cudaStream_t stream) {
  QWEN3_ASSERT(out.ld >= inter, "swiglu_forward_fp8: the FP8 rows are narrower than the product");
  unsigned* amax = zeroed_amax(out.amax, stream);
  if (rows * out.ld == 0) return;
  const bool vector = inter % 8 == 0 && out.ld % 8 == 0 && aligned16(gate_up) && aligned16(out.rows);
  const std::int64_t work = rows * out.ld / (vector ? 8 : 1);
  auto kernel = vector ? swiglu_forward_fp8_kernel<true> : swiglu_forward_fp8_kernel<false>;
  kernel<<<grid_for(work, kThreads), kThreads, 0, stream>>>(gate_up, rows, inter, out, amax,
                                                            reinterpret_cast<unsigned*>(out.running_amax));
  CUDA_CHECK_LAUNCH("swiglu_forward_fp8_kernel");
}

void swiglu_backward_fp8t(const bf16* gate_up, const bf16* da, bf16* dgate_up, std::int64_t rows, std::int64_t inter,
                          const float* a_amax, std::uint8_t* a_t, std::int64_t a_t_ld, float* a_t_inv,
                          cudaStream_t stream, float* dgate_up_amax, const SwigluGradFp8* grad_fp8) {
  QWEN3_ASSERT(a_t_ld >= rows, "swiglu_backward_fp8t: the transposed copy's rows hold fewer tokens than there are");
  // grad_fp8: gate|up's gradient codes, the delayed-scaling history's running amax (not zeroed: the step's maximum)
  unsigned* amax = grad_fp8 ? reinterpret_cast<unsigned*>(grad_fp8->running_amax) : zeroed_amax(dgate_up_amax, stream);
  const std::int64_t row_extent = a_t_ld;
  if (row_extent == 0 || inter == 0) return;
  QWEN3_ASSERT(a_t_ld % kFp8tRun == 0 && aligned16(a_t) && (!grad_fp8 || aligned16(grad_fp8->cols)),
               "swiglu_backward_fp8t: the transposed copies' rows must be 16-byte aligned (a_t_ld = fp8_padded(tokens))");
  const SwigluGradFp8 g = grad_fp8 ? *grad_fp8 : SwigluGradFp8{};
  const bool vector = inter % 8 == 0 && aligned16(gate_up) && aligned16(da) &&
                      (grad_fp8 ? g.ld % 8 == 0 && aligned16(g.rows) : aligned16(dgate_up));
  if (grad_fp8 && g.ld > 2 * inter)  // the row-major copy's padding columns (the data gradient's contraction): zeros
    CUDA_CHECK(cudaMemset2DAsync(g.rows + 2 * inter, static_cast<std::size_t>(g.ld), 0,
                                 static_cast<std::size_t>(g.ld - 2 * inter), static_cast<std::size_t>(rows), stream));
  const dim3 grid(static_cast<unsigned>((inter + kFp8tCols - 1) / kFp8tCols),
                  static_cast<unsigned>((row_extent + kFp8tRows - 1) / kFp8tRows));
  auto kernel = grad_fp8 ? (vector ? swiglu_backward_fp8t_kernel<true, true> : swiglu_backward_fp8t_kernel<false, true>)
                         : (vector ? swiglu_backward_fp8t_kernel<true, false> : swiglu_backward_fp8t_kernel<false, false>);
  kernel<<<grid, kThreads, 0, stream>>>(gate_up, da, dgate_up, rows, inter, row_extent, a_amax, a_t, a_t_ld, a_t_inv,
                                        amax, g);
  CUDA_CHECK_LAUNCH("swiglu_backward_fp8t_kernel");
}

void copy_columns(const bf16* src, std::int64_t src_ld, bf16* dst, std::int64_t dst_ld, std::int64_t rows,
                  std::int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return;
  if (cols % 8 == 0 && src_ld % 8 == 0 && dst_ld % 8 == 0 && aligned16(src) && aligned16(dst)) {
    copy_columns_vec_kernel<<<grid_for(rows * cols / 8, kThreads), kThreads, 0, stream>>>(src, src_ld, dst, dst_ld, rows, cols);
    CUDA_CHECK_LAUNCH("copy_columns_vec_kernel");
    return;
  }
  copy_columns_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(src, src_ld, dst, dst_ld, rows, cols);
  CUDA_CHECK_LAUNCH("copy_columns_kernel");
}

void embedding_forward(const std::int32_t* ids, const bf16* table, bf16* x, std::int64_t tokens, std::int64_t hidden,
                       cudaStream_t stream, std::int64_t vocab_begin, std::int64_t vocab_count) {
  if (tokens == 0) return;
  embedding_forward_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(ids, table, x, hidden, vocab_begin,
                                                                                   vocab_count);
  CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(const std::int32_t* ids, const float* dx, float* dtable, std::int64_t tokens, std::int64_t hidden,
                        cudaStream_t stream, std::int64_t vocab_begin, std::int64_t vocab_count) {
  if (tokens == 0) return;
  embedding_backward_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(ids, dx, dtable, hidden, vocab_begin,
                                                                                    vocab_count);
  CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

void add(const bf16* a, const bf16* b, bf16* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<bf16><<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, b, out, n);
  CUDA_CHECK_LAUNCH("add_kernel");
}
void add(const float* a, const float* b, float* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<float><<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, b, out, n);
  CUDA_CHECK_LAUNCH("add_kernel");
}

void cast_f32_to_bf16(const float* in, bf16* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(in) && aligned16(out)) {
    cast_f32_bf16_vec_kernel<<<grid_for(n / 8, kThreads), kThreads, 0, stream>>>(in, out, n / 8);
    CUDA_CHECK_LAUNCH("cast_f32_bf16_vec_kernel");
    return;
  }
  cast_f32_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in, out, n);
  CUDA_CHECK_LAUNCH("cast_f32_bf16_kernel");
}

void cast_bf16_to_f32(const bf16* in, float* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  cast_bf16_f32_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in, out, n);
  CUDA_CHECK_LAUNCH("cast_bf16_f32_kernel");
}

}  // namespace qwen3::cuda
