// The CPU float32 reference engine: flat fp32 weights, gradients and AdamW moments on the host — with tensor
// parallelism, this rank's shards of them (the collectives go over EngineOptions::tp_comm); with pipeline
// parallelism one stage, which holds, runs, reduces and updates only the tensors its layers use (with tied embeddings
// the first and last stages each hold the embedding and sum its gradient). What the rank holds — tables, ownership,
// the optimizer's window, micro-batches in flight — is its RankPlan (train/rank_plan.h), as for the CUDA engine.
#pragma once
#include <map>
#include <utility>

#include "train/engine.h"
#include "train/rank_plan.h"

namespace qwen3 {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& cfg, const EngineOptions& opts);
  const ParamTable& params() const override { return plan_.full; }
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
  int pipeline_slots() const override { return plan_.slots; }

 private:
  // The full tensor `index` of the full table, assembled from every tensor-parallel rank's shard of `local` and,
  // with pipeline parallelism, from the stage that reports it.
  std::vector<float> gather_full(std::size_t index, const std::vector<float>& local) const;
  std::vector<float> gather_full(std::size_t index, const float* part) const;  // part: this rank's [numel] of it
  float* local_data(std::vector<float>& flat, std::size_t index) const;       // tensor `index` in a flat buffer
  // Partial gradients summed once per step, when they are first read after the last micro-batch: replicated
  // weights over the tensor-parallel group (norms) or KV group, the tied embedding over the first and last stages.
  // Reading ends the accumulation: another micro-batch needs zero_grad first.
  void finish_gradients() const;
  void begin_micro_batch();
  // [T, V] logits from every tensor-parallel rank's vocabulary slice [T, V / tp] (collective over the group).
  void assemble_logits(const std::vector<float>& local, const MicroBatch& mb, std::vector<float>& out) const;
  // With context parallelism: this rank's loss is its tokens' share; the sum over the group.
  cpu::LossSum whole_loss(cpu::LossSum local) const;

  Communicator* tp_comm_;               // null without tensor parallelism
  Communicator* pp_comm_;               // null without pipeline parallelism
  Communicator* cp_comm_;               // null without context parallelism
  // Distributed optimizer (ZeRO-1) over the data-parallel replicas (× the context-parallel ranks with
  // EngineOptions::shard_comm), null without it: this rank's AdamW moments cover plan_.shard of the flat buffers; it
  // updates them, then every rank's are all-gathered.
  Communicator* shard_comm_;
  RankPlan plan_;                       // what this rank holds and does
  std::unique_ptr<Communicator> kv_comm_;  // ranks sharing a replicated KV head (tp > KV heads)
  std::unique_ptr<Communicator> embed_comm_;  // tied embeddings over pp > 1: the first and last stages
  CpuQwen3 model_;                      // this rank's share, over plan_.local's flat layout
  std::vector<ShardSpec> shards_;       // per full-table index
  std::vector<float> weights_, m_, v_;  // [plan_.local total_elements] weights in ParamTable order; moments [shard.size]
  mutable std::vector<float> grads_;    // (summed in place by finish_gradients)
  enum class Partial { clean, accumulating, reduced };
  mutable Partial partial_ = Partial::clean;
  std::map<std::pair<int, int>, CpuQwen3::Activations> boundary_;  // (Boundary, slot) → stage-boundary tensor
  std::int64_t step_ = 0;
};

}  // namespace qwen3
