// Launchers for the fused causal grouped-query attention (ops/cuda/attention.h): shape checks, path choice and
// launch configuration. head_dim 64 and 128 take the FlashAttention-2 style tensor-core kernels
// (attention_flash.cuh); any other multiple of 8 up to 256 takes the simple one-warp-per-row kernels
// (attention_fallback.cuh). Memory is linear in the sequence: only lse [B, H, S] and the backward workspace
// (delta [B, H, S], plus an fp32 dQ accumulator [B, S, H, D] on the tensor-core path) are kept.
#include "ops/cuda/attention.h"

#include <cmath>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "core/error.h"
#include "gpu/check.h"
#include "ops/attention_workspace.h"
#include "ops/cuda/attention_fallback.cuh"
#include "ops/cuda/attention_flash.cuh"
#include "ops/cuda/attention_flash_bwd.cuh"

namespace qwen3::cuda {
namespace {

std::string describe(const AttentionShape& s) {
  return "batch " + std::to_string(s.batch) + ", seq " + std::to_string(s.seq) + ", heads " + std::to_string(s.heads) +
         ", kv_heads " + std::to_string(s.kv_heads) + ", head_dim " + std::to_string(s.head_dim);
}

void check_shape(const AttentionShape& s, const char* op) {
  const auto fail = [&](const std::string& why) {
    throw UsageError(std::string(op) + ": " + why + " (" + describe(s) + ")");
  };
  if (s.batch < 1 || s.seq < 1 || s.heads < 1 || s.kv_heads < 1) fail("every dimension must be at least 1");
  if (s.heads % s.kv_heads != 0) fail("heads must be a multiple of kv_heads");
  if (s.head_dim < 8 || s.head_dim > attn::kSimpleMaxDim || s.head_dim % 8 != 0)
    fail("head_dim must be a multiple of 8 between 8 and 256");
  // Grid limits (y, z ≤ 65535: heads, 128-row tiles, batch; x < 2^31: rows / 4); positions are 32-bit in kernels.
  if (s.heads > 65535 || s.kv_heads > 65535 || s.batch > 65535) fail("batch, heads and kv_heads must be at most 65535");
  if ((s.seq + 127) / 128 > 65535) fail("seq must be at most 65535·128");
  if (s.batch * s.seq * s.heads > (std::int64_t{1} << 32)) fail("batch·seq·heads must be at most 2^32");
}

// bf16 tensors and the workspace are moved in 16-byte pieces; lse needs only float alignment.
void check_aligned(const void* p, const char* name, const char* op, std::size_t align = 16) {
  if (p == nullptr || reinterpret_cast<std::uintptr_t>(p) % align != 0)
    throw UsageError(std::string(op) + ": " + name + " must be a non-null device pointer aligned to " +
                     std::to_string(align) + " bytes");
}

bool use_flash(const AttentionShape& s) { return attention_uses_flash(s.head_dim); }

std::size_t delta_bytes(const AttentionShape& s) { return attention_delta_bytes(s.batch, s.seq, s.heads); }

// Raises a kernel's dynamic shared-memory limit once per (device, kernel); fails clearly on a GPU with too little.
template <typename Kernel>
void allow_dynamic_smem(Kernel* kernel, std::size_t bytes, const char* name) {
  static std::mutex mu;
  static std::set<std::pair<int, const void*>> done;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const std::lock_guard<std::mutex> lock(mu);
  if (done.count({dev, reinterpret_cast<const void*>(kernel)})) return;
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (static_cast<std::size_t>(optin) < bytes)
    throw InternalError(std::string(name) + " needs " + std::to_string(bytes) + " bytes of shared memory per block; GPU " +
                        std::to_string(dev) + " allows " + std::to_string(optin));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  done.insert({dev, reinterpret_cast<const void*>(kernel)});
}

unsigned int blocks_for(std::int64_t rows, int per_block) {
  return static_cast<unsigned int>((rows + per_block - 1) / per_block);
}

template <int D>
void flash_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out,
                   float* lse, const AttentionShape& s, cudaStream_t stream) {
  using T = attn::FwdTile<D>;
  allow_dynamic_smem(attn::attn_fwd_flash_kernel<D>, T::kSmemBytes, "attn_fwd_flash_kernel");
  const dim3 grid(static_cast<unsigned>(s.heads), static_cast<unsigned>((s.seq + T::kBr - 1) / T::kBr),
                  static_cast<unsigned>(s.batch));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  attn::attn_fwd_flash_kernel<D><<<grid, T::kThreads, T::kSmemBytes, stream>>>(
      q, k, v, out, lse, static_cast<int>(s.seq), static_cast<int>(s.heads), static_cast<int>(s.kv_heads), scale,
      scale * attn::kLog2e);
  CUDA_CHECK_LAUNCH("attn_fwd_flash_kernel");
}

template <int D>
void flash_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                    const __nv_bfloat16* dout, const float* lse, const float* delta, float* dq_acc,
                    __nv_bfloat16* dk, __nv_bfloat16* dv, const AttentionShape& s, cudaStream_t stream) {
  using T = attn::BwdTile<D>;
  allow_dynamic_smem(attn::attn_bwd_flash_kernel<D>, T::kSmemBytes, "attn_bwd_flash_kernel");
  const dim3 grid(static_cast<unsigned>(s.kv_heads), static_cast<unsigned>((s.seq + T::kBc - 1) / T::kBc),
                  static_cast<unsigned>(s.batch));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  attn::attn_bwd_flash_kernel<D><<<grid, T::kThreads, T::kSmemBytes, stream>>>(
      q, k, v, dout, lse, delta, dq_acc, dk, dv, static_cast<int>(s.seq), static_cast<int>(s.heads),
      static_cast<int>(s.kv_heads), scale, scale * attn::kLog2e);
  CUDA_CHECK_LAUNCH("attn_bwd_flash_kernel");
}

}  // namespace

void attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out,
                       float* lse, const AttentionShape& s, cudaStream_t stream) {
  constexpr const char* op = "attention_forward";
  check_shape(s, op);
  check_aligned(q, "q", op);
  check_aligned(k, "k", op);
  check_aligned(v, "v", op);
  check_aligned(out, "out", op);
  check_aligned(lse, "lse", op, alignof(float));
  if (s.head_dim == 64) return flash_forward<64>(q, k, v, out, lse, s, stream);
  if (s.head_dim == 128) return flash_forward<128>(q, k, v, out, lse, s, stream);
  const std::int64_t rows = s.batch * s.seq * s.heads;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.head_dim)));
  attn::attn_fwd_simple_kernel<<<blocks_for(rows, attn::kSimpleWarps), attn::kSimpleWarps * 32, 0, stream>>>(
      q, k, v, out, lse, rows, static_cast<int>(s.seq), static_cast<int>(s.heads), static_cast<int>(s.kv_heads),
      static_cast<int>(s.head_dim), scale);
  CUDA_CHECK_LAUNCH("attn_fwd_simple_kernel");
}

std::size_t attention_backward_workspace_bytes(const AttentionShape& s) {
  check_shape(s, "attention_backward_workspace_bytes");
  return own_attention_backward_workspace_bytes(s.batch, s.seq, s.heads, s.head_dim);  // delta, dQ accumulator
}

void attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* dout, __nv_bfloat16* dq,
                        __nv_bfloat16* dk, __nv_bfloat16* dv, void* workspace, const AttentionShape& s,
                        cudaStream_t stream) {
  constexpr const char* op = "attention_backward";
  check_shape(s, op);
  check_aligned(q, "q", op);
  check_aligned(k, "k", op);
  check_aligned(v, "v", op);
  check_aligned(out, "out", op);
  check_aligned(lse, "lse", op, alignof(float));
  check_aligned(dout, "dout", op);
  check_aligned(dq, "dq", op);
  check_aligned(dk, "dk", op);
  check_aligned(dv, "dv", op);
  check_aligned(workspace, "workspace", op);
  const bool flash = use_flash(s);
  float* delta = static_cast<float*>(workspace);
  float* dq_acc = flash ? reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) + delta_bytes(s)) : nullptr;
  const std::int64_t rows = s.batch * s.seq * s.heads;
  const int seq = static_cast<int>(s.seq), heads = static_cast<int>(s.heads), kv_heads = static_cast<int>(s.kv_heads);
  const int dim = static_cast<int>(s.head_dim);

  attn::attn_bwd_delta_kernel<<<blocks_for(rows, 8), 256, 0, stream>>>(out, dout, delta, dq_acc, rows, seq, heads, dim);
  CUDA_CHECK_LAUNCH("attn_bwd_delta_kernel");

  if (flash) {
    if (dim == 64)
      flash_backward<64>(q, k, v, dout, lse, delta, dq_acc, dk, dv, s, stream);
    else
      flash_backward<128>(q, k, v, dout, lse, delta, dq_acc, dk, dv, s, stream);
    const std::int64_t n = rows * dim;
    const std::int64_t want = (n / 8 + 255) / 256;
    const unsigned int blocks = static_cast<unsigned int>(want < 65536 ? want : 65536);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
    attn::attn_bwd_dq_convert_kernel<<<blocks, 256, 0, stream>>>(dq_acc, dq, n, scale);
    CUDA_CHECK_LAUNCH("attn_bwd_dq_convert_kernel");
    return;
  }

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
  attn::attn_bwd_dq_simple_kernel<<<blocks_for(rows, attn::kSimpleWarps), attn::kSimpleWarps * 32, 0, stream>>>(
      q, k, v, dout, lse, delta, dq, rows, seq, heads, kv_heads, dim, scale);
  CUDA_CHECK_LAUNCH("attn_bwd_dq_simple_kernel");
  const std::int64_t kv_rows = s.batch * s.seq * s.kv_heads;
  attn::attn_bwd_dkdv_simple_kernel<<<blocks_for(kv_rows, attn::kSimpleWarps), attn::kSimpleWarps * 32, 0, stream>>>(
      q, k, v, dout, lse, delta, dk, dv, kv_rows, seq, heads, kv_heads, dim, scale);
  CUDA_CHECK_LAUNCH("attn_bwd_dkdv_simple_kernel");
}

}  // namespace qwen3::cuda
