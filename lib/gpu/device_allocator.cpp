// Category-accounted cudaMalloc allocator (see device_allocator.h).
#include "gpu/device_allocator.h"

#include <cuda_runtime.h>

#include "core/error.h"
#include "gpu/check.h"
#include "io/system_info.h"

namespace qwen3::cuda {
namespace {
std::string gib(std::int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}
}  // namespace

const char* category_name(MemCategory c) {
  static_assert(static_cast<int>(MemCategory::count) == kDeviceCategories, "one category list (core/memory_category.h)");
  return buffer_category_name(static_cast<BufferCategory>(c));
}

DeviceAllocator::~DeviceAllocator() {
  for (auto& b : blocks_) cudaFree(b.ptr);
}

void* DeviceAllocator::allocate(MemCategory category, std::int64_t bytes, const std::string& what) {
  if (bytes <= 0) bytes = 256;
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, static_cast<std::size_t>(bytes));
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free allocation error
    std::size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    int dev = -1;
    cudaGetDevice(&dev);
    throw OutOfMemory("out of GPU memory on " + hostname() + " GPU " + std::to_string(dev) + ": allocating " + gib(bytes) +
                          " for " + category_name(category) + " (" + what + ") with " + gib(total_) + " in use by this run, " +
                          gib(static_cast<std::int64_t>(free_b)) + " free of " + gib(static_cast<std::int64_t>(total_b)),
                      category_name(category), bytes, total_);
  }
  CUDA_CHECK(err);
  CUDA_CHECK(cudaMemset(p, 0, static_cast<std::size_t>(bytes)));
  blocks_.push_back({p, bytes, category});
  by_category_[static_cast<int>(category)] += bytes;
  total_ += bytes;
  peak_ = std::max(peak_, total_);
  return p;
}

}  // namespace qwen3::cuda
