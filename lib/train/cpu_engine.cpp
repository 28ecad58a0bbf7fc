// CPU reference engine (see cpu_engine.h).
#include "train/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "model/init.h"
#include "ops/cpu/adamw.h"

namespace qwen3 {

CpuEngine::CpuEngine(const ModelConfig& cfg, const EngineOptions& opts)
    : full_(cfg),
      tp_comm_(opts.tp_comm && opts.tp_comm->size() > 1 ? opts.tp_comm : nullptr),
      model_(cfg, tp_comm_) {
  const TpDims& d = model_.tp();
  if (tp_comm_ && d.kv_replicas > 1) kv_comm_ = tp_comm_->split(d.kv_group(), d.rank);
  for (std::size_t i = 0; i < full_.entries().size(); ++i) {
    shards_.push_back(shard_spec(full_, i, d));
    if (shards_.back().dim < 0) tp_replicated_.push_back(i);
  }
  if (kv_comm_)
    for (const auto& l : full_.layers) kv_replicated_.insert(kv_replicated_.end(), {l.k_proj, l.v_proj});
  const auto n = static_cast<std::size_t>(model_.params().total_elements());
  weights_.resize(n);
  grads_.assign(n, 0.0f);
  m_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
  // The full model's initial values (model/init.h), then this rank's shards: the same weights at every tp size.
  std::vector<float> full(static_cast<std::size_t>(full_.total_elements()));
  init_weights(full_, opts.seed, opts.init_std, full.data());
  for (std::size_t i = 0; i < full_.entries().size(); ++i) {
    const auto& f = full_.entries()[i];
    extract_shard(shards_[i], f.shape, full.data() + f.offset, weights_.data() + model_.params().entries()[i].offset);
  }
}

std::vector<float> CpuEngine::gather_full(std::size_t index, const std::vector<float>& local) const {
  const auto& l = model_.params().entries()[index];
  if (!tp_comm_) return {local.begin() + l.offset, local.begin() + l.offset + l.numel};
  return gather_full_tensor(*tp_comm_, model_.config(), full_, index, local.data() + l.offset, l.numel);
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
  const auto& p = full_.find(name);
  if (static_cast<std::int64_t>(values.size()) != p.numel)
    throw InputError("weight '" + name + "' has " + std::to_string(values.size()) + " values, the model expects " +
                     std::to_string(p.numel));
  const std::size_t i = static_cast<std::size_t>(&p - full_.entries().data());
  extract_shard(shards_[i], p.shape, values.data(), weights_.data() + model_.params().entries()[i].offset);
}

std::vector<float> CpuEngine::weights(const std::string& name) const {
  const auto& p = full_.find(name);
  return gather_full(static_cast<std::size_t>(&p - full_.entries().data()), weights_);
}

std::vector<float> CpuEngine::gradient(const std::string& name) const {
  const auto& p = full_.find(name);
  return gather_full(static_cast<std::size_t>(&p - full_.entries().data()), grads_);
}

void CpuEngine::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

cpu::LossSum CpuEngine::forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (!tp_comm_) return model_.forward_backward(weights_.data(), grads_.data(), mb, grad_scale, logits_out);
  // Replicated weights get partial gradients from each rank: reduce this micro-batch's part only (the buffers may
  // already hold earlier micro-batches' sums), over the whole group (norms) or the KV group (replicated K/V).
  const auto& local = model_.params().entries();
  auto take = [&](const std::vector<std::size_t>& idx) {
    std::vector<float> saved;
    for (std::size_t i : idx) {
      float* g = grads_.data() + local[i].offset;
      saved.insert(saved.end(), g, g + local[i].numel);
      std::fill(g, g + local[i].numel, 0.0f);
    }
    return saved;
  };
  auto reduce_and_restore = [&](const std::vector<std::size_t>& idx, const std::vector<float>& saved, Communicator& comm) {
    std::size_t k = 0;
    for (std::size_t i : idx) {
      float* g = grads_.data() + local[i].offset;
      comm.all_reduce_sum(g, static_cast<std::size_t>(local[i].numel));
      for (std::int64_t j = 0; j < local[i].numel; ++j) g[j] += saved[k++];
    }
  };
  const auto saved_tp = take(tp_replicated_), saved_kv = take(kv_replicated_);
  std::vector<float> local_logits;
  const auto loss = model_.forward_backward(weights_.data(), grads_.data(), mb, grad_scale, logits_out ? &local_logits : nullptr);
  reduce_and_restore(tp_replicated_, saved_tp, *tp_comm_);
  if (kv_comm_) reduce_and_restore(kv_replicated_, saved_kv, *kv_comm_);
  if (logits_out) {  // [T, V] from every rank's vocabulary slice [T, V / tp]
    const int t = tp_comm_->size();
    const std::int64_t Vl = model_.tp().vocab, V = Vl * t, T = mb.batch * mb.seq;
    std::vector<double> mine(local_logits.begin(), local_logits.end()), all(mine.size() * static_cast<std::size_t>(t));
    tp_comm_->all_gather(mine.data(), all.data(), mine.size());
    logits_out->assign(static_cast<std::size_t>(T * V), 0.0f);
    for (int r = 0; r < t; ++r)
      for (std::int64_t row = 0; row < T; ++row)
        for (std::int64_t j = 0; j < Vl; ++j)
          (*logits_out)[row * V + r * Vl + j] = static_cast<float>(all[(r * T + row) * Vl + j]);
  }
  return loss;
}

void CpuEngine::reduce_gradients(Communicator& dp) {
  if (dp.size() > 1) dp.all_reduce_sum(grads_.data(), grads_.size());
}

double CpuEngine::grad_norm() {
  // Sharded tensors count on every rank; replicated ones once (tp rank 0, or the first rank of each KV group).
  const auto& local = model_.params().entries();
  const int rank = tp_comm_ ? tp_comm_->rank() : 0;
  double ss = 0;
  for (std::size_t i = 0; i < local.size(); ++i) {
    bool counted = shards_[i].dim >= 0 || rank == 0;
    if (kv_comm_ && std::find(kv_replicated_.begin(), kv_replicated_.end(), i) != kv_replicated_.end())
      counted = kv_comm_->rank() == 0;
    if (!counted) continue;
    const float* g = grads_.data() + local[i].offset;
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (std::int64_t j = 0; j < local[i].numel; ++j) s += static_cast<double>(g[j]) * g[j];
    ss += s;
  }
  if (tp_comm_) tp_comm_->all_reduce_sum(&ss, 1);
  return std::sqrt(ss);
}

void CpuEngine::optimizer_step(double lr, const AdamWConfig& a, double grad_scale) {
  ++step_;
  for (const auto& p : model_.params().entries()) {
    cpu::AdamWStep s{lr, a.beta1, a.beta2, a.eps, p.decay ? a.weight_decay : 0.0, step_, grad_scale};
    cpu::adamw_step(weights_.data() + p.offset, m_.data() + p.offset, v_.data() + p.offset, grads_.data() + p.offset,
                    p.numel, s);
  }
}

}  // namespace qwen3
