// Golden check: reproduce Hugging Face's own numbers (any file of the qwen3-golden schema, tests/data/README.md)
// on a backend — logits, loss, every gradient, the weights after one AdamW step, and five training losses.
#pragma once
#include <string>
#include <vector>

#include "config/model_config.h"
#include "dist/communicator.h"

namespace qwen3 {

struct GoldenRow {
  std::string quantity;  // "logits", "loss", "grad model.norm.weight", "after_step …", "train loss 3"
  double rel_error;      // ‖out − ref‖ / ‖ref‖
  double tolerance;
  bool pass() const { return rel_error <= tolerance; }
};

struct GoldenReport {
  ModelConfig config;
  std::string generator;
  std::vector<GoldenRow> rows;
  bool pass() const;
};

// Relative-error bounds per kind of quantity. float32 backends: 1e-5 everywhere. bf16-mixed backends: the bounds that
// Hugging Face's own bf16-mixed training (torch.autocast, fp32 master weights) meets on the same files, rounded up —
// measured with tools/golden/hf_bf16_error.py (docs/golden.md has the figures).
struct GoldenTolerance {
  double forward;     // logits and the first loss
  double gradients;   // every d loss / d weight
  double after_step;  // weights after one AdamW step
  double losses;      // the training losses
  static GoldenTolerance uniform(double t) { return {t, t, t, t}; }
  static GoldenTolerance fp32() { return uniform(1e-5); }
  static GoldenTolerance bf16() { return {1.5e-2, 5e-2, 1e-2, 1e-2}; }
  static GoldenTolerance for_device(const std::string& device) { return device == "cpu" ? fp32() : bf16(); }
  // --precision fp8 on either device (docs/golden.md: what the CPU's emulated casts and the GPU measured).
  static GoldenTolerance fp8() { return {kFp8Forward, kFp8Gradients, kFp8AfterStep, kFp8Losses}; }
  static constexpr double kFp8Forward = 0.2, kFp8Gradients = 0.6, kFp8AfterStep = 0.03, kFp8Losses = 0.02;
};

// Reads /config of a golden file into a ModelConfig (Hugging Face defaults where a key is absent).
ModelConfig read_golden_config(const std::string& path);

// The groups a parallel check runs over (dist/groups.h); null or size 1: none. With data parallelism the file's
// batch is split between the replicas (its sequences must divide by dp) and their gradients summed; with pipeline
// parallelism the batch is one micro-batch through the stages (the balanced split).
struct GoldenParallel {
  Communicator* tp = nullptr;
  Communicator* cp = nullptr;  // context parallelism: each sequence split over it
  Communicator* pp = nullptr;
  Communicator* dp = nullptr;
  Communicator* dp_cp = nullptr;  // dp × cp: the distributed optimizer's shards with context parallelism
  double offload_optimizer = 0;   // CUDA: the fraction of the optimizer state on the host (--offload-optimizer)
  bool cudnn_attention = true;    // CUDA: cuDNN's fused attention, else the own kernels (--attention)
  bool shared_gpu_staging = false;  // CUDA: ranks sharing a GPU staged through host memory (--shared-gpu-staging)
  bool fp8 = false;                 // --precision fp8 (either device: the CPU reference emulates the casts)
  bool fp8_delayed = false;         // --fp8-scaling delayed: each training step's history ended as training does
};

// Runs the whole check on `device`. Throws InputError for a file that does not follow the schema. In parallel every
// rank runs the check collectively and compares the same gathered tensors.
// local_rank: this rank's index on its node (the GPU it drives).
// init_from_hf: take the weights from that Hugging Face checkpoint folder instead of the file's /weights (its
// config.json must describe the same model).
GoldenReport run_golden_check(const std::string& path, const std::string& device, const GoldenTolerance& tolerance,
                              const GoldenParallel& parallel = {}, int local_rank = 0,
                              const std::string& init_from_hf = "");

// Relative error ‖a − b‖ / ‖b‖ in double (‖a‖ when b is all zeros).
double relative_error(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace qwen3
