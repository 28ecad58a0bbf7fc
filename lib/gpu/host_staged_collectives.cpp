// Device collectives staged through host memory (see host_staged_collectives.h).
#include "gpu/host_staged_collectives.h"

#include <cuda_bf16.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "gpu/check.h"

namespace qwen3::cuda {
namespace {
float widen(std::uint16_t bits) {
  const std::uint32_t w = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}
std::uint16_t narrow(float f) {  // round to nearest even, as __float2bfloat16_rn
  const __nv_bfloat16 b = __float2bfloat16_rn(f);
  std::uint16_t bits;
  std::memcpy(&bits, &b, sizeof bits);
  return bits;
}
}  // namespace

void HostStagedCollectives::download(const void* in, std::size_t n, bool bf16, cudaStream_t stream) {
  a_.resize(n);
  if (bf16) bits_.resize(n);
  CUDA_CHECK(cudaMemcpyAsync(bf16 ? static_cast<void*>(bits_.data()) : static_cast<void*>(a_.data()), in,
                             n * (bf16 ? 2 : sizeof(float)), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (bf16) std::transform(bits_.begin(), bits_.end(), a_.begin(), widen);  // exact: every bf16 is a float
}

void HostStagedCollectives::upload(void* out, std::size_t n, bool bf16, cudaStream_t stream) {
  if (bf16) {
    bits_.resize(n);
    std::transform(b_.begin(), b_.begin() + static_cast<std::ptrdiff_t>(n), bits_.begin(), narrow);
  }
  CUDA_CHECK(cudaMemcpyAsync(out, bf16 ? static_cast<const void*>(bits_.data()) : static_cast<const void*>(b_.data()),
                             n * (bf16 ? 2 : sizeof(float)), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void HostStagedCollectives::gather(const void* in, void* out, std::size_t count, bool bf16, cudaStream_t stream) {
  download(in, count, bf16, stream);
  b_.resize(static_cast<std::size_t>(host_.size()) * count);
  host_.all_gather(a_.data(), b_.data(), count);
  upload(out, b_.size(), bf16, stream);
}

void HostStagedCollectives::scatter(const void* in, void* out, std::size_t count, bool bf16, cudaStream_t stream) {
  download(in, static_cast<std::size_t>(host_.size()) * count, bf16, stream);
  b_.resize(count);
  host_.reduce_scatter_sum(a_.data(), b_.data(), count);
  upload(out, count, bf16, stream);
}

void HostStagedCollectives::all_gather_bf16(const void* in, void* out, std::size_t count, cudaStream_t stream) {
  gather(in, out, count, true, stream);
}
void HostStagedCollectives::reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count, cudaStream_t stream) {
  scatter(in, out, count, true, stream);
}
void HostStagedCollectives::all_gather(const float* in, float* out, std::size_t count, cudaStream_t stream) {
  gather(in, out, count, false, stream);
}
void HostStagedCollectives::reduce_scatter_sum(const float* in, float* out, std::size_t count, cudaStream_t stream) {
  scatter(in, out, count, false, stream);
}

void HostStagedCollectives::all_reduce_sum(float* data, std::size_t count, cudaStream_t stream) {
  download(data, count, false, stream);
  host_.all_reduce_sum(a_.data(), count);
  b_ = a_;
  upload(data, count, false, stream);
}

void HostStagedCollectives::all_reduce_max(float* data, std::size_t count, cudaStream_t stream) {
  download(data, count, false, stream);
  std::vector<double> wide(a_.begin(), a_.end());  // the host communicator's maximum is fp64 (exact for fp32)
  host_.all_reduce_max(wide.data(), count);
  b_.assign(wide.begin(), wide.end());
  upload(data, count, false, stream);
}

void HostStagedCollectives::exchange(const std::vector<Communicator::Transfer>& transfers, cudaStream_t stream) {
  CUDA_CHECK(cudaStreamSynchronize(stream));  // what the sends carry is written
  std::vector<std::vector<char>> staged(transfers.size());
  std::vector<Communicator::Transfer> host = transfers;
  for (std::size_t i = 0; i < transfers.size(); ++i) {
    staged[i].resize(transfers[i].bytes);
    host[i].data = staged[i].data();
    if (transfers[i].send && transfers[i].bytes > 0)
      CUDA_CHECK(cudaMemcpy(staged[i].data(), transfers[i].data, transfers[i].bytes, cudaMemcpyDeviceToHost));
  }
  host_.exchange(host);
  for (std::size_t i = 0; i < transfers.size(); ++i)
    if (!transfers[i].send && transfers[i].bytes > 0)
      CUDA_CHECK(cudaMemcpyAsync(transfers[i].data, staged[i].data(), transfers[i].bytes, cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));  // landed before the stream's next reader (and before staged goes)
}

std::string shared_gpu(Communicator& group, int device) {
  char bus[64] = {0}, host[256] = {0};
  CUDA_CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, device));
  gethostname(host, sizeof host - 1);
  std::vector<std::string> all = group.all_gather(std::string(host) + "/" + bus);
  std::sort(all.begin(), all.end());
  const auto twice = std::adjacent_find(all.begin(), all.end());
  return twice == all.end() ? std::string() : *twice;
}

}  // namespace qwen3::cuda
