// Device memory through plain cudaMalloc, accounted by category. Running out of memory throws OutOfMemory naming the
// category, the request and what was in use, so the results file can record it (status "oom", exit code 5).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/memory_category.h"

namespace qwen3::cuda {

// The device categories of core/memory_category.h, in its order (the allocator's bytes by category).
enum class MemCategory { weights, gradients, optimizer_state, activations, workspace, count };
const char* category_name(MemCategory c);

class DeviceAllocator {
 public:
  DeviceAllocator() = default;
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // Zero-filled, 256-byte aligned. Throws OutOfMemory (never returns null).
  void* allocate(MemCategory category, std::int64_t bytes, const std::string& what);
  template <typename T>
  T* allocate(MemCategory category, std::int64_t count, const std::string& what) {
    return static_cast<T*>(allocate(category, count * static_cast<std::int64_t>(sizeof(T)), what));
  }

  std::int64_t bytes_in_use() const { return total_; }
  std::int64_t bytes_in_use(MemCategory c) const { return by_category_[static_cast<int>(c)]; }
  std::int64_t peak_bytes() const { return peak_; }

 private:
  struct Block {
    void* ptr;
    std::int64_t bytes;
    MemCategory category;
  };
  std::vector<Block> blocks_;
  std::array<std::int64_t, static_cast<int>(MemCategory::count)> by_category_{};
  std::int64_t total_ = 0, peak_ = 0;
};

}  // namespace qwen3::cuda
