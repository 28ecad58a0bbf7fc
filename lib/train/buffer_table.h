// Every buffer one rank of the CUDA engine allocates, as data (after llm.c's fill_in_activation_sizes): a function
// of (model, layout, recomputation policy) lists each device and pinned-host buffer with its category, name,
// element count and type, and which other entry's memory it reuses. The engine allocates from this table and binds
// its pointers to it (train/cuda/device_buffers.h); the memory planner (train/memory_plan.h) sums the same table.
// Nothing here needs a GPU.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/memory_category.h"
#include "model/param_table.h"
#include "model/pipeline_split.h"
#include "model/recompute.h"
#include "model/shard_window.h"
#include "model/tensor_parallel.h"

namespace qwen3 {

enum class Dtype { bf16, f32, f64, i32, byte, adamw_chunk };
std::int64_t dtype_bytes(Dtype t);

// The buffers. Per layer (LayerActs of the engine): x_in … rstd_mid; per slot: stage_out, tokens; double buffers
// (slot 0 / 1): offload_ring, sp_dy_gathered, the host optimizer's staging. The fp32 state covers this rank's shard
// window, its device part [0, host_begin) on the device, the rest in pinned host memory. Shapes: T this rank's tokens of the largest micro-batch, Tl = T / tp
// (sequence parallelism), widths this rank's tensor-parallel shares.
enum class Buf {
  master_weights, compute_weights, gradients, adam_m, adam_v, adamw_chunks,  // [device part], [padded] ×2, [device part] ×2
  host_master, host_adam_m, host_adam_v, host_grad_stage, host_weight_stage,  // --offload-optimizer: [host part] ×3, 2 slots
  x_in, qkv, q, k, v, attn, x_mid, h_in, h_mid, gate_up,                     // per layer, bf16 (see LayerActs)
  rstd_in, rstd_q, rstd_k, lse, rstd_mid,                                    // per layer, fp32
  offload_ring, host_inputs, recompute_out, stage_out,                       // recomputation, offload, pipeline
  x_final, h_final, rstd_final,                                              // last stage: final norm
  swiglu_scratch, logits, row_loss,                                          // [T, I], [chunk, V], [T]
  dres, dh, dy_bf16, dattn, dq, dk, dv, dqkv, dact, dgate_up,                // backward scratch
  rope_cos, rope_sin, tokens, labels,                                        // [S / cp, hd / 2] ×2, [slots·T], [T]
  cp_kv_local, cp_kv_ranks, cp_kv_full, cp_dkv, cp_dkv_first,                // context parallelism
  sp_h_local, sp_partial, sp_sum_local, sp_dy_gathered, sp_dh_local, sp_dres_full,  // sequence parallelism
  ce_max, ce_max_global, ce_sum_exp, ce_target,                              // vocabulary-parallel loss [chunk]
  attention_workspace, reduce_partials, reduce_result, gemm_workspace,
};

// A buffer of two slots used in turn (offload_ring, sp_dy_gathered, the host optimizer's staging), not one per
// micro-batch in flight.
bool double_buffered(Buf id);

struct BufferSpec {
  Buf id;
  int slot = 0;    // micro-batch slot, or which of a double buffer (0 otherwise)
  int layer = -1;  // the stage's layer index (0 = its first), -1 when not per layer
  BufferCategory category;
  Dtype dtype;
  std::int64_t elements;
  int shares = -1;   // the entry whose memory this one uses (-1: allocated on its own)
  std::string what;  // what the allocator and the plan call it
  std::int64_t bytes() const { return shares < 0 ? elements * dtype_bytes(dtype) : 0; }
};

// One rank's engine, as the table needs it.
struct BufferTableInput {
  ModelConfig model;
  TpDims tp;               // this rank's tensor-parallel share
  StageRange stage;        // this rank's layers
  std::optional<ParamTable> table;  // this rank's tensors: the flat buffers' layout (required)
  int slots = 1;           // micro-batches in flight on this stage
  std::int64_t max_batch = 1, max_seq = 0;
  int cp = 1;
  RecomputePolicy recompute;
  bool cudnn = true;        // cuDNN fused attention (v is read inside q|k|v); the own kernels copy v out
  ShardWindow shard;        // the distributed optimizer's window (whole without it)
  int shard_parts = 1;      // ranks the optimizer state is sharded over
  std::int64_t attention_workspace_bytes = 0;  // cuDNN's own figure (engine) or estimated_attention_workspace
};

// Where one rank sits in its layout, as the CUDA engine sees it.
struct RankLayout {
  int tp = 1, tp_rank = 0;
  int cp = 1, cp_rank = 0;
  int pp = 1, pp_rank = 0;
  StageRange stage;            // the rank's layers (the whole model without pipeline parallelism)
  int micro_batches = 1;       // per step and data-parallel replica
  int shards = 1, shard_rank = 0;  // the distributed optimizer's group (1: no sharding)
};
// The parameters a rank holds: its tensor-parallel share (K/V heads replicated where tp exceeds them, norms whole) of
// its pipeline stage's tensors — the table the engines allocate and the step model counts.
ParamTable rank_param_table(const ModelConfig& model, const TpDims& tp, const StageRange& stage);
// The engine's table input for that rank: its tensor-parallel share, its stage's tensors, the micro-batches it keeps in
// flight (train/pipeline_schedule.h), its ZeRO-1 window (float4-aligned shards). attention_workspace_bytes is left 0.
BufferTableInput rank_buffer_input(const ModelConfig& model, const RankLayout& rank, std::int64_t max_batch,
                                   std::int64_t max_seq, const RecomputePolicy& recompute, bool cudnn);

// The table, in allocation order (persistent state, activations, workspaces). The caller has checked the layout
// (model/sequence_layout.h): the engine with the CUDA rules, --plan of a CPU run with the CPU's.
std::vector<BufferSpec> buffer_table(const BufferTableInput& in);
// The host optimizer's entries for `host` elements of the shard on the host (pinned: fp32 master weights and moments,
// two staging slots each way); none for 0. Part of buffer_table; qwen3-calibrate times the host AdamW on them.
std::vector<BufferSpec> host_optimizer_buffers(std::int64_t host);

// cuBLASLt's workspace (the engine's, and qwen3-calibrate's).
inline constexpr std::int64_t kGemmWorkspaceBytes = 64ll << 20;

// Tokens of one output-projection chunk: the bf16 logits of a chunk stay within 2 GiB.
std::int64_t logit_chunk_tokens(std::int64_t tokens, std::int64_t vocab);
// The attention backward's workspace as the planner estimates it (cuDNN: its workspace and an fp32 dQ accumulator,
// about B·heads·S·head_dim·4 each, and row sums; the own kernels: row sums and the dQ accumulator). With context
// parallelism S is one chunk (two calls per layer).
std::int64_t estimated_attention_workspace(const BufferTableInput& in);
// The device bytes of the table by category (kDeviceCategories entries), and its pinned host bytes.
std::vector<std::int64_t> device_bytes_by_category(const std::vector<BufferSpec>& table);
std::int64_t host_pinned_bytes(const std::vector<BufferSpec>& table);

}  // namespace qwen3
