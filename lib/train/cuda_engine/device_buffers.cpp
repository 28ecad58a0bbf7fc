// The buffer table allocated (see device_buffers.h).
#include "train/cuda_engine/device_buffers.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace qwen3::cuda {
namespace {

// Pinned host memory starts zeroed, as the device allocator's does (the host optimizer's moments rely on it); in
// parallel: tens of GiB.
void zero_host(void* p, std::int64_t bytes) {
  constexpr std::int64_t kBlock = 64ll << 20;
  auto* b = static_cast<char*>(p);
#pragma omp parallel for schedule(static)
  for (std::int64_t at = 0; at < bytes; at += kBlock) std::memset(b + at, 0, static_cast<std::size_t>(std::min(kBlock, bytes - at)));
}

}  // namespace

DeviceBuffers::DeviceBuffers(const std::vector<BufferSpec>& table, DeviceAllocator& alloc) {
  std::vector<void*> ptr(table.size(), nullptr);
  for (std::size_t i = 0; i < table.size(); ++i) {
    const BufferSpec& s = table[i];
    std::string what = s.what;
    if (s.layer >= 0) what += " (layer " + std::to_string(s.layer) + " of the stage, slot " + std::to_string(s.slot) + ")";
    if (s.shares >= 0) {
      ptr[i] = ptr[static_cast<std::size_t>(s.shares)];
    } else if (s.category == BufferCategory::host_pinned) {
      if (cudaHostAlloc(&ptr[i], static_cast<std::size_t>(s.bytes()), cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        throw UsageError("could not pin " + std::to_string(s.bytes() >> 20) + " MiB of host memory for " +
                         s.what);
      }
      host_.push_back(ptr[i]);
      host_pinned_bytes_ += s.bytes();
      zero_host(ptr[i], s.bytes());
    } else if (s.elements > 0) {
      ptr[i] = alloc.allocate(static_cast<MemCategory>(s.category), s.bytes(), what);
    }
    by_key_[{s.id, s.slot, s.layer}] = {ptr[i], s.bytes()};
  }
}

DeviceBuffers::~DeviceBuffers() {
  for (void* p : host_) cudaFreeHost(p);
}

void* DeviceBuffers::find(Buf id, int slot, int layer) const {
  const auto it = by_key_.find({id, slot, layer});
  return it == by_key_.end() ? nullptr : it->second.first;
}

std::int64_t DeviceBuffers::bytes(Buf id, int slot, int layer) const {
  const auto it = by_key_.find({id, slot, layer});
  return it == by_key_.end() ? 0 : it->second.second;
}

}  // namespace qwen3::cuda
