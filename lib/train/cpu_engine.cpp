// CPU reference engine (see cpu_engine.h).
#include "train/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "model/init.h"
#include "ops/cpu/adamw.h"

namespace qwen3 {

CpuEngine::CpuEngine(const ModelConfig& cfg, const EngineOptions& opts) : model_(cfg) {
  const auto n = static_cast<std::size_t>(model_.params().total_elements());
  weights_.resize(n);
  grads_.assign(n, 0.0f);
  m_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
  init_weights(model_.params(), opts.seed, opts.init_std, weights_.data());
}

std::string CpuEngine::device_name() const {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return "CPU: " + line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "CPU";
}

void CpuEngine::set_weights(const std::string& name, const std::vector<float>& values) {
  const auto& p = params().find(name);
  if (static_cast<std::int64_t>(values.size()) != p.numel)
    throw InputError("weight '" + name + "' has " + std::to_string(values.size()) + " values, the model expects " +
                     std::to_string(p.numel));
  std::copy(values.begin(), values.end(), weights_.begin() + p.offset);
}

std::vector<float> CpuEngine::weights(const std::string& name) const {
  const auto& p = params().find(name);
  return {weights_.begin() + p.offset, weights_.begin() + p.offset + p.numel};
}

std::vector<float> CpuEngine::gradient(const std::string& name) const {
  const auto& p = params().find(name);
  return {grads_.begin() + p.offset, grads_.begin() + p.offset + p.numel};
}

void CpuEngine::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

cpu::LossSum CpuEngine::forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  return model_.forward_backward(weights_.data(), grads_.data(), mb, grad_scale, logits_out);
}

void CpuEngine::reduce_gradients(Communicator& dp) {
  if (dp.size() > 1) dp.all_reduce_sum(grads_.data(), grads_.size());
}

double CpuEngine::grad_norm() {
  double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static)
  for (std::size_t i = 0; i < grads_.size(); ++i) ss += static_cast<double>(grads_[i]) * grads_[i];
  return std::sqrt(ss);
}

void CpuEngine::optimizer_step(double lr, const AdamWConfig& a, double grad_scale) {
  ++step_;
  for (const auto& p : params().entries()) {
    cpu::AdamWStep s{lr, a.beta1, a.beta2, a.eps, p.decay ? a.weight_decay : 0.0, step_, grad_scale};
    cpu::adamw_step(weights_.data() + p.offset, m_.data() + p.offset, v_.data() + p.offset, grads_.data() + p.offset,
                    p.numel, s);
  }
}

}  // namespace qwen3
