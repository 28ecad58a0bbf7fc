// The backend seam: one object owns a model's weights, gradients and optimizer state on one device and runs
// forward+backward, gradient reduction and the AdamW step. Chosen by name ("cpu", later "cuda") at start-up.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/model_config.h"
#include "dist/communicator.h"
#include "model/cpu_qwen3.h"
#include "model/param_table.h"
#include "model/pipeline_split.h"
#include "model/memory_policy.h"
#include "train/rank_plan.h"

namespace qwen3 {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // applied to 2-D tensors only
};

struct EngineOptions {
  std::uint64_t seed = 1234;
  double init_std = 0.02;
  int local_rank = 0;  // device index on this node
  // The largest micro-batch forward_backward will see: devices size their activation memory from it at start-up.
  std::int64_t max_batch = 1, max_seq = 0;
  // The tensor-parallel group (null or size 1: none). The engine then holds this rank's share of the model
  // (model/tensor_parallel.h); params(), set_weights(), weights() and gradient() still speak of full tensors, and
  // weights()/gradient() are collective over this group (every rank calls them in the same order).
  Communicator* tp_comm = nullptr;
  // Pipeline parallelism: the pipeline group (null or size 1: none), ranks in stage order, and the layers of each
  // stage (empty: the balanced split at max_seq; train/rank_plan.h gives each rank its own). Every stage answers
  // params(), weights() and gradient() for the whole model: collective over this group too.
  Communicator* pp_comm = nullptr;
  std::vector<std::int64_t> stage_layers;
  int micro_batches = 1;  // per optimizer step (a pipeline stage keeps up to min(pp − stage, this) in flight)
  // Data parallelism: the replicas' group (reduce_gradients is called with it). With shard_optimizer the optimizer
  // state is sharded over it (ZeRO-1, a distributed optimizer) and each replica updates its shard, then the weights
  // are all-gathered. CUDA: fp32 master weights and moments sharded, gradients reduce-scattered; CPU: the moments
  // sharded, gradients all-reduced.
  Communicator* dp_comm = nullptr;
  bool shard_optimizer = false;
  // The group the distributed optimizer shards over when given (null: dp_comm): the data-parallel replicas × the
  // context-parallel ranks, which hold the same weights. The engine then sums gradients over its context-parallel
  // ranks inside reduce_gradients (one reduce-scatter over the whole group), which must be called even when
  // dp_comm has one rank.
  Communicator* shard_comm = nullptr;
  // Activation recomputation, offloading of kept layer inputs and of the optimizer (model/memory_policy.h).
  MemoryPolicy recompute;
  // The CPU threads of the host optimizer's pass (recompute.offload_optimizer > 0; 0: OpenMP's default): this rank's
  // share of the node's cores.
  int host_threads = 0;
  // CUDA: cuDNN's fused attention, else the project's own kernels (RunConfig::attention; the memory plan's choice).
  bool cudnn_attention = true;
  // The decoder layers' linear layers in FP8 (--precision fp8; ops/fp8.h): FP8 GEMMs on CUDA, the same casts
  // emulated by the CPU reference.
  bool fp8 = false;
  // --fp8-scaling delayed: the FP8 tensors that their producing kernel writes in FP8 (gate|up's output gradient) are
  // scaled from the previous step's amax of the same tensor, max-reduced over every rank (ops/fp8.h
  // fp8_delayed_scale); reduce_gradients ends each step's history. Else (current) every tensor by its own amax.
  bool fp8_delayed = false;
  // CUDA: SMs kept from the weight-gradient GEMMs that overlap the tensor-parallel collectives (0: none kept), and
  // whether cuBLASLt's candidate algorithms are timed per shape (else its heuristic's first).
  int comm_sm_margin = 0;
  bool gemm_autotune = true;
  // CUDA: tensor-, pipeline- and data-parallel ranks that share a GPU exchange through host memory instead of being
  // refused (--shared-gpu-staging: those layouts checked on a host with fewer GPUs; slow); the op timer
  // (gpu/op_timer.h, --op-times) on.
  bool shared_gpu_staging = false;
  bool op_times = false;
  // Context parallelism: the group that splits each sequence (null or size 1: none). Its ranks hold the same weights;
  // gradients and losses are summed over it.
  Communicator* cp_comm = nullptr;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ParamTable& params() const = 0;
  virtual std::string device_name() const = 0;

  // Weights by Hugging Face name, float32 host copies (for golden checks, checkpoints and tests).
  virtual void set_weights(const std::string& name, const std::vector<float>& values) = 0;
  virtual std::vector<float> weights(const std::string& name) const = 0;
  virtual std::vector<float> gradient(const std::string& name) const = 0;
  // Optimizer state for checkpoints (train/checkpoint.h), by Hugging Face name and full shape, float32: AdamW's first
  // (which = 0) or second (which = 1) moment — collective like weights() — and the optimizer steps taken (its bias
  // correction). Setting takes the full tensor; each rank keeps its part (tensor, pipeline and ZeRO shards).
  virtual std::vector<float> moment(const std::string& name, int which) const = 0;
  virtual void set_moment(const std::string& name, int which, const std::vector<float>& values) = 0;
  virtual std::int64_t optimizer_steps() const = 0;
  virtual void set_optimizer_steps(std::int64_t steps) = 0;

  virtual void zero_grad() = 0;
  // Accumulates d(loss·grad_scale)/dw into the gradients; returns the summed loss and the tokens it counted.
  virtual cpu::LossSum forward_backward(const MicroBatch& mb, double grad_scale,
                                        std::vector<float>* logits_out = nullptr) = 0;
  // Sums gradients over the data-parallel communicator; with fp8_delayed also ends the step's FP8 amax history
  // (this step's amaxes, max-reduced over dp and the tensor- and context-parallel groups, scale the next step's).
  virtual void reduce_gradients(Communicator& dp) = 0;
  // Global L2 norm of the (reduced) gradients.
  virtual double grad_norm() = 0;
  // One AdamW step at learning rate lr; every gradient is first multiplied by grad_scale (clipping). A device engine
  // may return before the update has run (it overlaps the next forward); the next call that needs it waits.
  virtual void optimizer_step(double lr, const AdamWConfig& adamw, double grad_scale) = 0;
  // Pipeline parallelism (EngineOptions::pp_comm): one stage's forward of micro-batch `micro` of the step (the last
  // stage also computes the loss, returned; {0, 0} elsewhere) and its backward. The schedule (train/pipeline_run.h)
  // moves the stage-boundary tensors between them with boundary() buffers.
  // logits_out (last stage only): as forward_backward's.
  virtual cpu::LossSum stage_forward(int micro, const MicroBatch& mb, double grad_scale,
                                     std::vector<float>* logits_out = nullptr);
  virtual void stage_backward(int micro);
  // The buffer of one stage-boundary tensor of micro-batch `micro` (tokens: the micro-batch's), in the memory the
  // pipeline communicator transfers from (host for MPI, device for NCCL): the stage's input and output activations,
  // and the gradients of its output and input.
  enum class Boundary { input, output, output_grad, input_grad };
  virtual Communicator::Transfer boundary(Boundary which, int micro, std::int64_t tokens);
  // The communicator the boundary transfers go over (the pipeline group, device side where the engine has one).
  virtual Communicator* pipeline_comm() { return nullptr; }
  // Micro-batches this stage can hold in flight (its activation slots, from EngineOptions::micro_batches).
  virtual int pipeline_slots() const { return 1; }
  // Waits for the last pipeline operation's device work, so that its time can be taken (nothing on the CPU).
  virtual void synchronize_pipeline() {}
  // Waits for all work the engine has queued (step timings end here).
  virtual void synchronize() {}
  // Bytes this engine holds on its device (0 where the tracer measures the process instead).
  virtual std::int64_t device_bytes_in_use() const = 0;
  // The device's memory in use by every process (total − free, as the driver reports it: what nvidia-smi counts as
  // used, less what the driver reserves); -1 where there is no device. Safe from any thread.
  virtual std::int64_t device_used_bytes() const { return -1; }
  // Those bytes by category (weights, gradients, optimizer_state, activations, workspace); empty on the CPU.
  virtual std::vector<std::pair<std::string, std::int64_t>> device_bytes_by_category() const { return {}; }
  // Pinned host bytes the engine holds: offloaded layer inputs, the optimizer state on the host (EngineOptions::recompute).
  virtual std::int64_t host_pinned_bytes() const { return 0; }
  // Ranks the optimizer state is sharded over (1: none). The CUDA engine shards over data × context-parallel ranks,
  // but over the data-parallel ones only where the context-parallel ranks share a GPU (host-staged exchange).
  virtual int optimizer_shards() const { return 1; }
  // The CPU's own time in the host optimizer (--offload-optimizer): seconds its AdamW passes took per optimizer step so
  // far, and the elements a step updates on the host; empty and 0 where no part of the optimizer is on the host.
  struct HostOptimizerTimes {
    std::vector<double> step_cpu_s;
    std::int64_t elements = 0;
  };
  virtual HostOptimizerTimes host_optimizer_times() { return {}; }
};

// Registry: "cpu" always; other names answer with the list of backends built into this binary.
std::unique_ptr<Engine> make_engine(const std::string& device, const ModelConfig& cfg, const EngineOptions& opts);

// A group of more than one rank, else null: both engines treat a group of one as none.
inline Communicator* group_of(Communicator* c) { return c && c->size() > 1 ? c : nullptr; }

// An engine's rank, for its RankPlan (train/rank_plan.h): its place in the groups of `opts`, the optimizer sharded over
// `shards` (null: not sharded), the micro-batch shape, stages, memory policy and attention of `opts`, the backend's
// layout rules (cuda_rules). Both engines plan themselves through it.
RankPlanInput engine_rank_input(const ModelConfig& cfg, const EngineOptions& opts, Communicator* shards, bool cuda_rules);
std::vector<std::string> available_devices();  // built into this binary
// Why a built backend cannot run on this host ("" when it can): e.g. no NVIDIA driver, no visible GPU.
std::string device_unusable_reason(const std::string& device);
// The built backends that can run here (--list-devices).
std::vector<std::string> usable_devices();
// Throws UsageError "--device cuda: no usable GPU ...: <reason>" when the backend cannot run on this host.
void require_usable_device(const std::string& device);
// Total memory of the device a rank with this node-local index drives (0 on the CPU); checks the device is usable.
std::int64_t device_memory_bytes(const std::string& device, int local_rank);

}  // namespace qwen3
