// The CPU float32 reference engine: flat fp32 weights, gradients and AdamW moments on the host.
#pragma once
#include "train/engine.h"

namespace qwen3 {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& cfg, const EngineOptions& opts);
  const ParamTable& params() const override { return model_.params(); }
  std::string device_name() const override;
  void set_weights(const std::string& name, const std::vector<float>& values) override;
  std::vector<float> weights(const std::string& name) const override;
  std::vector<float> gradient(const std::string& name) const override;
  void zero_grad() override;
  cpu::LossSum forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  void reduce_gradients(Communicator& dp) override;
  double grad_norm() override;
  void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale) override;
  std::int64_t device_bytes_in_use() const override { return 0; }

 private:
  CpuQwen3 model_;
  std::vector<float> weights_, grads_, m_, v_;  // [total_elements] each, in ParamTable order
  std::int64_t step_ = 0;
};

}  // namespace qwen3
