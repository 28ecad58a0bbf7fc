// Device collectives staged through host memory (see host_staged_collectives.h).
#include "cuda/host_staged_collectives.h"

#include <cuda_bf16.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "cuda/check.h"

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

void HostStagedCollectives::download_bf16(const void* in, std::size_t n, cudaStream_t stream) {
  bits_.resize(n);
  CUDA_CHECK(cudaMemcpyAsync(bits_.data(), in, n * 2, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  a_.resize(n);
  std::transform(bits_.begin(), bits_.end(), a_.begin(), widen);  // exact: every bf16 is a float
}

void HostStagedCollectives::upload_bf16(void* out, std::size_t n, cudaStream_t stream) {
  bits_.resize(n);
  std::transform(b_.begin(), b_.begin() + static_cast<std::ptrdiff_t>(n), bits_.begin(), narrow);
  CUDA_CHECK(cudaMemcpyAsync(out, bits_.data(), n * 2, cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void HostStagedCollectives::all_gather_bf16(const void* in, void* out, std::size_t count, cudaStream_t stream) {
  const auto n = static_cast<std::size_t>(host_.size()) * count;
  download_bf16(in, count, stream);
  b_.resize(n);
  host_.all_gather(a_.data(), b_.data(), count);
  upload_bf16(out, n, stream);
}

void HostStagedCollectives::reduce_scatter_sum_bf16(const void* in, void* out, std::size_t count, cudaStream_t stream) {
  download_bf16(in, static_cast<std::size_t>(host_.size()) * count, stream);
  b_.resize(count);
  host_.reduce_scatter_sum(a_.data(), b_.data(), count);
  upload_bf16(out, count, stream);
}

void HostStagedCollectives::all_reduce_sum(float* data, std::size_t count, cudaStream_t stream) {
  a_.resize(count);
  CUDA_CHECK(cudaMemcpyAsync(a_.data(), data, count * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  host_.all_reduce_sum(a_.data(), count);
  CUDA_CHECK(cudaMemcpyAsync(data, a_.data(), count * sizeof(float), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void HostStagedCollectives::download(const float* in, std::size_t n, cudaStream_t stream) {
  a_.resize(n);
  CUDA_CHECK(cudaMemcpyAsync(a_.data(), in, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void HostStagedCollectives::upload(float* out, std::size_t n, cudaStream_t stream) {
  CUDA_CHECK(cudaMemcpyAsync(out, b_.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void HostStagedCollectives::all_gather(const float* in, float* out, std::size_t count, cudaStream_t stream) {
  download(in, count, stream);
  b_.resize(static_cast<std::size_t>(host_.size()) * count);
  host_.all_gather(a_.data(), b_.data(), count);
  upload(out, b_.size(), stream);
}

void HostStagedCollectives::reduce_scatter_sum(const float* in, float* out, std::size_t count, cudaStream_t stream) {
  download(in, static_cast<std::size_t>(host_.size()) * count, stream);
  b_.resize(count);
  host_.reduce_scatter_sum(a_.data(), b_.data(), count);
  upload(out, count, stream);
}

void HostStagedCollectives::all_reduce_max(float* data, std::size_t count, cudaStream_t stream) {
  download(data, count, stream);
  std::vector<double> wide(a_.begin(), a_.end());  // the host communicator's maximum is fp64 (exact for fp32)
  host_.all_reduce_max(wide.data(), count);
  b_.assign(wide.begin(), wide.end());
  upload(data, count, stream);
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
