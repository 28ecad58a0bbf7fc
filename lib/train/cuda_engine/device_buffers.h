// The buffer table (train/buffer_table.h) made real on one GPU: every entry allocated through the accounting
// allocator (device) or cudaHostAlloc (pinned host), all zeroed, each shared entry bound to its owner's memory, and typed
// pointers looked up by (buffer, slot, layer). Nothing else in the engine allocates.
#pragma once
#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "gpu/device_allocator.h"
#include "train/buffer_table.h"

namespace qwen3::cuda {

class DeviceBuffers {
 public:
  // Allocates every entry of `table` in its order. Throws OutOfMemory (device) or UsageError (pinned host memory).
  DeviceBuffers(const std::vector<BufferSpec>& table, DeviceAllocator& alloc);
  ~DeviceBuffers();
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;

  // The buffer (id, slot, layer), or null when the table has no such entry (e.g. v with cuDNN attention).
  template <typename T>
  T* get(Buf id, int slot = 0, int layer = -1) const {
    return static_cast<T*>(find(id, slot, layer));
  }
  // Its bytes (0 when absent or shared).
  std::int64_t bytes(Buf id, int slot = 0, int layer = -1) const;
  std::int64_t host_pinned_bytes() const { return host_pinned_bytes_; }

 private:
  void* find(Buf id, int slot, int layer) const;
  std::map<std::tuple<Buf, int, int>, std::pair<void*, std::int64_t>> by_key_;
  std::vector<void*> host_;
  std::int64_t host_pinned_bytes_ = 0;
};

}  // namespace qwen3::cuda
