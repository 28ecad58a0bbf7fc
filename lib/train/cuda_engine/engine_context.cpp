// One micro-batch's sizes on this rank (see engine_context.h).
#include "train/cuda_engine/engine_context.h"

#include "gpu/check.h"

namespace qwen3::cuda {

double read_scalar(const double* p, cudaStream_t stream) {
  double v = 0;
  CUDA_CHECK(cudaMemcpyAsync(&v, p, sizeof v, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return v;
}

MicroDims micro_dims(const EngineContext& c, std::int64_t B, std::int64_t S_full, const float* rope_cos,
                     const float* rope_sin) {
  const auto& t = c.tp;
  const std::int64_t S = S_full / c.cp, T = B * S, hd = c.cfg.head_dim, qkv_dim = t.q_dim + 2 * t.kv_dim;
  const float eps = static_cast<float>(c.cfg.rms_norm_eps), theta = static_cast<float>(c.cfg.rope_theta);
  return {B, S, S_full, T, T / t.size, c.cfg.hidden_size, t.inter, t.heads, t.kv_heads, hd, t.q_dim, t.kv_dim, qkv_dim,
          t.vocab, t.vocab0, eps, AttentionShape{B, S, t.heads, t.kv_heads, hd},
          QkShape{B, S, t.heads, hd, theta, eps, qkv_dim, rope_cos, rope_sin},
          QkShape{B, S, t.kv_heads, hd, theta, eps, qkv_dim, rope_cos, rope_sin}};
}

}  // namespace qwen3::cuda
