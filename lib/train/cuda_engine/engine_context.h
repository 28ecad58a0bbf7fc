// What every unit of one rank's CUDA engine reads, set up once by the engine: the model and this rank's share of it,
// the main stream, cuBLASLt, the op timer and the flat weight and gradient buffers; and the sizes of one micro-batch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "config/model_config.h"
#include "gpu/gemm.h"
#include "gpu/op_timer.h"
#include "model/param_table.h"
#include "model/pipeline_split.h"
#include "model/tensor_parallel.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/qk_norm_rope.h"

namespace qwen3::cuda {

using bf16 = __nv_bfloat16;

struct EngineContext {
  const ModelConfig& cfg;
  const TpDims& tp;         // this rank's tensor-parallel share
  const StageRange& stage;  // this rank's layers
  const ParamTable& table;  // this rank's tensors: offsets into the flat buffers
  int cp = 1, cp_rank = 0;
  cudaStream_t stream;      // the main stream
  Gemm& gemm;
  OpTimer& timer;
  const bf16* weights;      // [P] bf16 compute copy
  float* grads;             // [P] fp32
  const bf16* W(std::size_t index) const { return weights + table.entries()[index].offset; }
  float* G(std::size_t index) const { return grads + table.entries()[index].offset; }
  void mark(const char* what) const { timer.mark(stream, what); }
};

// The sizes of one micro-batch on this rank. S: its tokens of each sequence (with context parallelism two chunks of
// S_full / (2·cp)); T = B·S rows of every [T, ·] buffer (sequence b at row b·S); Tl = T / tp rows of the residual
// stream (sequence parallelism); widths this rank's shares.
struct MicroDims {
  std::int64_t B, S, S_full, T, Tl, H, I, heads, kv_heads, head_dim, qd, kvd, qkv_dim, V, v0;
  float eps;
  AttentionShape ashape;  // the own attention kernels' shape
  QkShape qshape, kshape; // q and k norm + RoPE (RoPE tables at this rank's positions)
};
// The fp64 value at device address p, once the stream's work so far is done.
double read_scalar(const double* p, cudaStream_t stream);

MicroDims micro_dims(const EngineContext& c, std::int64_t B, std::int64_t S_full, const float* rope_cos,
                     const float* rope_sin);

}  // namespace qwen3::cuda
