// The project's own attention kernels' backward scratch as arithmetic, shared by the kernels (ops/cuda/attention.cu)
// and the memory planner (train/buffer_table.cpp), which has no GPU: delta = rowsum(dout·out) [B, H, S] fp32, and for
// the flash kernels (head_dim 64 or 128) the fp32 dQ accumulator [B, S, H, D]; each piece 256-byte aligned.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qwen3 {

inline constexpr std::size_t kAttentionWorkspaceAlign = 256;

// The flash kernels serve these head sizes; other sizes run the fallback kernels, which need no dQ accumulator.
inline bool attention_uses_flash(std::int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

inline std::size_t attention_workspace_align(std::size_t n) {
  return (n + kAttentionWorkspaceAlign - 1) / kAttentionWorkspaceAlign * kAttentionWorkspaceAlign;
}

// delta's bytes: [batch, heads, seq] fp32.
inline std::size_t attention_delta_bytes(std::int64_t batch, std::int64_t seq, std::int64_t heads) {
  return attention_workspace_align(sizeof(float) * static_cast<std::size_t>(batch * heads * seq));
}

// The whole backward's scratch of the own kernels for q [batch, seq, heads, head_dim].
inline std::size_t own_attention_backward_workspace_bytes(std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                                          std::int64_t head_dim) {
  std::size_t bytes = attention_delta_bytes(batch, seq, heads);
  if (attention_uses_flash(head_dim))
    bytes += attention_workspace_align(sizeof(float) * static_cast<std::size_t>(batch * seq * heads * head_dim));
  return bytes;
}

}  // namespace qwen3
