// Layer activations bound to the buffer table, and the offload of kept inputs (see activations.h).
#include "train/cuda_engine/activations.h"

#include "gpu/check.h"

namespace qwen3::cuda {

LayerActs bind_layer(const DeviceBuffers& b, int slot, int index, const Fp8Layout* fp8) {
  auto h = [&](Buf id) { return b.get<bf16>(id, slot, index); };
  auto f = [&](Buf id) { return b.get<float>(id, slot, index); };
  float* scales = fp8 ? b.get<float>(Buf::fp8_scales) + fp8->input_scale(slot, index) : nullptr;
  return {h(Buf::x_in),    h(Buf::qkv),     h(Buf::q),      h(Buf::k),      h(Buf::v),
          h(Buf::attn),    h(Buf::x_mid),   h(Buf::h_in),   h(Buf::h_mid),  h(Buf::gate_up),
          f(Buf::rstd_in), f(Buf::rstd_q),  f(Buf::rstd_k), f(Buf::lse),    f(Buf::rstd_mid), scales};
}

Scratch bind_scratch(const DeviceBuffers& b) {
  auto h = [&](Buf id) { return b.get<bf16>(id); };
  return {h(Buf::swiglu_scratch), b.get<float>(Buf::dres), b.get<float>(Buf::dh), h(Buf::dy_bf16), h(Buf::dattn),
          h(Buf::dq),             h(Buf::dk),              h(Buf::dv),            h(Buf::dqkv),    h(Buf::dact),
          h(Buf::dgate_up)};
}

Offloader::Offloader(const MemoryPolicy& policy, std::int64_t layers, std::int64_t input_elements, bf16* host_inputs)
    : policy_(policy), elements_(input_elements), host_(host_inputs) {
  if (!policy.offload_inputs || policy.full_layers(layers) < 2) return;
  n_ = policy.full_layers(layers) - 1;
  stream_ = Stream(stream_priorities().least);
  to_host_.resize(2);
  to_device_.resize(2);
  fork_.resize(1);
  for (int i = 0; i < 2; ++i) {  // nothing pending yet
    to_host_[static_cast<std::size_t>(i)].record(stream_);
    to_device_[static_cast<std::size_t>(i)].record(stream_);
  }
}

void Offloader::before_write(std::int64_t next, cudaStream_t st) const {
  if (policy_.offloaded(next)) to_host_[static_cast<std::size_t>(next % 2)].wait_on(st);
}

void Offloader::after_write(int slot, std::int64_t next, const bf16* written, cudaStream_t st) {
  if (!policy_.offloaded(next)) return;  // out to the host while the next layer's forward reads it
  fork(st, stream_, fork_[0]);
  CUDA_CHECK(cudaMemcpyAsync(host_input(slot, next), written, elements_ * sizeof(bf16), cudaMemcpyDeviceToHost, stream_));
  to_host_[static_cast<std::size_t>(next % 2)].record(stream_);
}

void Offloader::end_forward(cudaStream_t st) const {
  if (!active()) return;
  to_host_[0].wait_on(st);
  to_host_[1].wait_on(st);
}

void Offloader::prefetch(int slot, std::int64_t index, bf16* x_in, cudaStream_t st) {
  if (index < 0 || !policy_.offloaded(index)) return;
  fork(st, stream_, fork_[0]);
  CUDA_CHECK(cudaMemcpyAsync(x_in, host_input(slot, index), elements_ * sizeof(bf16), cudaMemcpyHostToDevice, stream_));
  to_device_[static_cast<std::size_t>(index % 2)].record(stream_);
}

void Offloader::wait_input(std::int64_t index, cudaStream_t st) const {
  if (policy_.offloaded(index)) to_device_[static_cast<std::size_t>(index % 2)].wait_on(st);
}

}  // namespace qwen3::cuda
