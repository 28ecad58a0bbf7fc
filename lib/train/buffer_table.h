// Every buffer one rank of the CUDA engine allocates, as data (after llm.c's fill_in_activation_sizes): a function
// of the rank's plan (train/rank_plan.h: model, layout, recomputation policy, attention kind) lists each device and
// pinned-host buffer with its category, name, element count and type, and which other entry's memory it reuses. The engine allocates from this table and binds
// its pointers to it (train/cuda/device_buffers.h); the memory planner (train/memory_plan.h) sums the same table.
// Nothing here needs a GPU.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/memory_category.h"
#include "model/fp8_layout.h"
#include "train/rank_plan.h"

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
  fp8_weights, fp8_scales, fp8_act, fp8_grad, fp8_grad_t,                    // --precision fp8 (model/fp8_layout.h)
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

// --precision fp8's layout of this rank (its stage's layers, its tokens and micro-batches in flight).
Fp8Layout fp8_layout(const RankPlan& rank);

// The table of one rank (train/rank_plan.h, which has checked its layout), in allocation order (persistent state,
// activations, workspaces). attention_workspace_bytes: cuDNN's own figure (the engine) or
// estimated_attention_workspace (the planner).
std::vector<BufferSpec> buffer_table(const RankPlan& rank, std::int64_t attention_workspace_bytes);
// The host optimizer's entries for `host` elements of the shard on the host (pinned: fp32 master weights and moments,
// two staging slots each way); none for 0. Part of buffer_table; qwen3-calibrate times the host AdamW on them.
std::vector<BufferSpec> host_optimizer_buffers(std::int64_t host);

// cuBLASLt's workspace (the engine's, and qwen3-calibrate's).
inline constexpr std::int64_t kGemmWorkspaceBytes = 64ll << 20;

// The attention backward's workspace as the planner computes it without a GPU: the own kernels' exactly
// (ops/attention_workspace.h), cuDNN's by its measured rule (buffer_table.cpp), for the rank's context-parallel chunks.
std::int64_t estimated_attention_workspace(const RankPlan& rank);
// The device bytes of the table by category (kDeviceCategories entries), and its pinned host bytes.
std::vector<std::int64_t> device_bytes_by_category(const std::vector<BufferSpec>& table);
std::int64_t host_pinned_bytes(const std::vector<BufferSpec>& table);

}  // namespace qwen3
