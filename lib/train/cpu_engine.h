// The CPU float32 reference engine: flat fp32 weights, gradients and AdamW moments on the host — with tensor
// parallelism, this rank's shards of them (the collectives go over EngineOptions::tp_comm).
#pragma once
#include "train/engine.h"

namespace qwen3 {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& cfg, const EngineOptions& opts);
  const ParamTable& params() const override { return full_; }
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
  // The full tensor `index` of the full table, assembled from every tensor-parallel rank's shard of `local`.
  std::vector<float> gather_full(std::size_t index, const std::vector<float>& local) const;

  ParamTable full_;                     // Hugging Face names and full shapes
  Communicator* tp_comm_;               // null without tensor parallelism
  std::unique_ptr<Communicator> kv_comm_;  // ranks sharing a replicated KV head (tp > KV heads)
  CpuQwen3 model_;                      // this rank's share; its params() is the local table
  std::vector<ShardSpec> shards_;       // per full-table index
  std::vector<float> weights_, grads_, m_, v_;  // [local total_elements] each, in ParamTable order
  std::vector<std::size_t> tp_replicated_, kv_replicated_;  // indices whose gradients are partial sums
  std::int64_t step_ = 0;
};

}  // namespace qwen3
