// The CPU float32 reference engine: flat fp32 weights, gradients and AdamW moments on the host — with tensor
// parallelism, this rank's shards of them (the collectives go over EngineOptions::tp_comm); with pipeline
// parallelism one stage, which runs, reduces and updates only the tensors its layers use (the buffers keep the
// whole table's layout; with tied embeddings the first and last stages each hold the embedding and sum its gradient).
#pragma once
#include <map>
#include <utility>

#include "train/engine.h"

namespace qwen3 {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& cfg, const EngineOptions& opts);
  const ParamTable& params() const override { return full_; }
  std::string device_name() const override;
  void set_weights(const std::string& name, const std::vector<float>& values) override;
  std::vector<float> weights(const std::string& name) const override;
  std::vector<float> moment(const std::string& name, int which) const override;
  void set_moment(const std::string& name, int which, const std::vector<float>& values) override;
  std::int64_t optimizer_steps() const override { return step_; }
  void set_optimizer_steps(std::int64_t steps) override { step_ = steps; }
  std::vector<float> gradient(const std::string& name) const override;
  void zero_grad() override;
  cpu::LossSum forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  void reduce_gradients(Communicator& dp) override;
  double grad_norm() override;
  void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale) override;
  std::int64_t device_bytes_in_use() const override { return 0; }
  cpu::LossSum stage_forward(int micro, const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) override;
  void stage_backward(int micro) override;
  Communicator::Transfer boundary(Boundary which, int micro, std::int64_t tokens) override;
  Communicator* pipeline_comm() override { return pp_comm_; }
  int pipeline_slots() const override { return slots_; }

 private:
  // The full tensor `index` of the full table, assembled from every tensor-parallel rank's shard of `local` and,
  // with pipeline parallelism, from the stage that reports it.
  std::vector<float> gather_full(std::size_t index, const std::vector<float>& local) const;
  std::vector<float> gather_full(std::size_t index, const float* part) const;  // part: this rank's [numel] of it
  // Partial gradients summed once per step, when they are first read after the last micro-batch: replicated
  // weights over the tensor-parallel group (norms) or KV group, the tied embedding over the first and last stages.
  // Reading ends the accumulation: another micro-batch needs zero_grad first.
  void finish_gradients() const;
  void begin_micro_batch();
  // [T, V] logits from every tensor-parallel rank's vocabulary slice [T, V / tp] (collective over the group).
  void assemble_logits(const std::vector<float>& local, const MicroBatch& mb, std::vector<float>& out) const;
  // With context parallelism: this rank's loss is its tokens' share; the sum over the group.
  cpu::LossSum whole_loss(cpu::LossSum local) const;

  ParamTable full_;                     // Hugging Face names and full shapes
  Communicator* tp_comm_;               // null without tensor parallelism
  Communicator* pp_comm_;               // null without pipeline parallelism
  Communicator* cp_comm_;               // null without context parallelism
  StageRange stage_;                    // this rank's layers (all without pipeline parallelism)
  std::unique_ptr<Communicator> kv_comm_;  // ranks sharing a replicated KV head (tp > KV heads)
  std::unique_ptr<Communicator> embed_comm_;  // tied embeddings over pp > 1: the first and last stages
  CpuQwen3 model_;                      // this rank's share; its params() is the local table
  std::vector<ShardSpec> shards_;       // per full-table index
  std::vector<bool> owned_, reports_;   // per index: this stage uses (and updates) it; this stage's copy is reported
  std::vector<float> weights_, m_, v_;  // [local total_elements] weights in ParamTable order; moments [shard_n_]
  mutable std::vector<float> grads_;    // (summed in place by finish_gradients)
  std::vector<std::size_t> tp_replicated_, kv_replicated_;  // indices whose gradients are partial sums
  enum class Partial { clean, accumulating, reduced };
  mutable Partial partial_ = Partial::clean;
  int slots_ = 1;  // pipeline: micro-batches in flight on this stage
  // Distributed optimizer (ZeRO-1) over the data-parallel replicas (× the context-parallel ranks with
  // EngineOptions::shard_comm): this rank's AdamW moments cover flat elements [shard0_, shard0_ + shard_n_) (of
  // size · shard_n_, padded); it updates them, then every rank's are all-gathered.
  Communicator* shard_comm_ = nullptr;
  std::int64_t shard0_ = 0, shard_n_ = 0;
  std::map<std::pair<int, int>, CpuQwen3::Activations> boundary_;  // (Boundary, slot) → stage-boundary tensor
  std::int64_t step_ = 0;
};

}  // namespace qwen3
