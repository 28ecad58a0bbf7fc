// Where a buffer's bytes count, for the device allocator, the buffer table, the memory plan and the results file:
// the device categories, then pinned host memory (not on the device).
#pragma once

namespace qwen3 {

enum class BufferCategory { weights, gradients, optimizer_state, activations, workspace, host_pinned };
inline constexpr int kDeviceCategories = 5;  // the device categories: every one before host_pinned

// "weights", "gradients", "optimizer_state", "activations", "workspace", "host_pinned".
inline const char* buffer_category_name(BufferCategory c) {
  switch (c) {
    case BufferCategory::weights: return "weights";
    case BufferCategory::gradients: return "gradients";
    case BufferCategory::optimizer_state: return "optimizer_state";
    case BufferCategory::activations: return "activations";
    case BufferCategory::workspace: return "workspace";
    case BufferCategory::host_pinned: return "host_pinned";
  }
  return "unknown";
}

}  // namespace qwen3
