// CPU reference engine (see cpu_engine.h).
#include "train/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "model/init.h"
#include "ops/cpu/adamw.h"
#include "train/pipeline_schedule.h"

namespace qwen3 {

namespace {
StageRange whole_model(const ModelConfig& c) { return {0, c.num_layers, true, true}; }
}  // namespace

CpuEngine::CpuEngine(const ModelConfig& cfg, const EngineOptions& opts)
    : full_(cfg),
      tp_comm_(opts.tp_comm && opts.tp_comm->size() > 1 ? opts.tp_comm : nullptr),
      pp_comm_(opts.pp_comm && opts.pp_comm->size() > 1 ? opts.pp_comm : nullptr),
      cp_comm_(opts.cp_comm && opts.cp_comm->size() > 1 ? opts.cp_comm : nullptr),
      stage_(pp_comm_ ? opts.stage : whole_model(cfg)),
      model_(cfg, tp_comm_, &stage_, opts.recompute, cp_comm_) {
  const TpDims& d = model_.tp();
  if (tp_comm_ && d.kv_replicas > 1) kv_comm_ = tp_comm_->split(d.kv_group(), d.rank);
  if (pp_comm_ && cfg.tie_word_embeddings) embed_comm_ = pp_comm_->split(stage_.first || stage_.last ? 0 : 1, pp_comm_->rank());
  if (pp_comm_) slots_ = in_flight(pp_comm_->rank(), pp_comm_->size(), std::max(1, opts.micro_batches));
  for (std::size_t i = 0; i < full_.entries().size(); ++i) {
    shards_.push_back(shard_spec(full_, i, d));
    if (shards_.back().dim < 0) tp_replicated_.push_back(i);
  }
  if (kv_comm_)
    for (const auto& l : full_.layers) kv_replicated_.insert(kv_replicated_.end(), {l.k_proj, l.v_proj});
  // What this stage uses: its layers, the embedding (first stage; with tied embeddings also the last), the final
  // norm and output projection (last stage). The first stage reports a tied embedding.
  owned_ = stage_tensors(full_, stage_);
  reports_ = owned_;
  if (cfg.tie_word_embeddings && !stage_.first) reports_[full_.embed] = false;
  const auto n = static_cast<std::size_t>(model_.params().total_elements());
  shard_n_ = static_cast<std::int64_t>(n);
  Communicator* shard_group = opts.shard_comm ? opts.shard_comm : opts.dp_comm;  // (gradients are whole on every rank)
  if (shard_group && shard_group->size() > 1 && opts.shard_optimizer) {
    shard_comm_ = shard_group;
    shard_n_ = (shard_n_ + shard_comm_->size() - 1) / shard_comm_->size();
    shard0_ = shard_n_ * shard_comm_->rank();
  }
  weights_.resize(n);
  grads_.assign(n, 0.0f);
  m_.assign(static_cast<std::size_t>(shard_n_), 0.0f);
  v_.assign(static_cast<std::size_t>(shard_n_), 0.0f);
  // The full model's initial values (model/init.h), then this rank's shards: the same weights at every tp size.
  std::vector<float> full(static_cast<std::size_t>(full_.total_elements()));
  init_weights(full_, opts.seed, opts.init_std, full.data());
  for (std::size_t i = 0; i < full_.entries().size(); ++i) {
    const auto& f = full_.entries()[i];
    extract_shard(shards_[i], f.shape, full.data() + f.offset, weights_.data() + model_.params().entries()[i].offset);
  }
}

std::vector<float> CpuEngine::gather_full(std::size_t index, const std::vector<float>& local) const {
  return gather_full(index, local.data() + model_.params().entries()[index].offset);
}

std::vector<float> CpuEngine::gather_full(std::size_t index, const float* part) const {
  const auto& l = model_.params().entries()[index];
  std::vector<float> out = tp_comm_ ? gather_full_tensor(*tp_comm_, model_.config(), full_, index, part, l.numel)
                                    : std::vector<float>(part, part + l.numel);
  if (!pp_comm_) return out;
  if (!reports_[index]) std::fill(out.begin(), out.end(), 0.0f);
  pp_comm_->all_reduce_sum(out.data(), out.size());  // one stage reports each tensor, the others add zeros
  return out;
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
  const std::size_t i = full_.index_of_full(name, values.size(), "weight");
  extract_shard(shards_[i], full_.entries()[i].shape, values.data(), weights_.data() + model_.params().entries()[i].offset);
}

std::vector<float> CpuEngine::weights(const std::string& name) const {
  const auto& p = full_.find(name);
  return gather_full(static_cast<std::size_t>(&p - full_.entries().data()), weights_);
}

// The moments cover this replica's ZeRO shard of the local flat table: a tensor's local part is the overlap, zeros
// elsewhere, summed over the data-parallel group (every element in exactly one shard), then gathered like weights.
std::vector<float> CpuEngine::moment(const std::string& name, int which) const {
  const auto& p = full_.find(name);
  const std::size_t i = static_cast<std::size_t>(&p - full_.entries().data());
  const auto& l = model_.params().entries()[i];
  const std::vector<float>& mv = which == 0 ? m_ : v_;
  std::vector<float> local(static_cast<std::size_t>(l.numel), 0.0f);
  const std::int64_t b = std::max(l.offset, shard0_), e = std::min(l.offset + l.numel, shard0_ + shard_n_);
  if (e > b) std::copy(mv.begin() + (b - shard0_), mv.begin() + (e - shard0_), local.begin() + (b - l.offset));
  if (shard_comm_) shard_comm_->all_reduce_sum(local.data(), local.size());
  return gather_full(i, local.data());
}

void CpuEngine::set_moment(const std::string& name, int which, const std::vector<float>& values) {
  const std::size_t i = full_.index_of_full(name, values.size(), "moment of");
  const auto& l = model_.params().entries()[i];
  std::vector<float> local(static_cast<std::size_t>(l.numel));
  extract_shard(shards_[i], full_.entries()[i].shape, values.data(), local.data());
  std::vector<float>& mv = which == 0 ? m_ : v_;
  const std::int64_t b = std::max(l.offset, shard0_), e = std::min(l.offset + l.numel, shard0_ + shard_n_);
  if (e > b) std::copy(local.begin() + (b - l.offset), local.begin() + (e - l.offset), mv.begin() + (b - shard0_));
}

std::vector<float> CpuEngine::gradient(const std::string& name) const {
  finish_gradients();
  const auto& p = full_.find(name);
  return gather_full(static_cast<std::size_t>(&p - full_.entries().data()), grads_);
}

void CpuEngine::zero_grad() {
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  partial_ = Partial::clean;
}

void CpuEngine::begin_micro_batch() {
  if (partial_ == Partial::reduced)
    throw InternalError("CPU engine: a micro-batch after the gradients were read needs zero_grad first");
  partial_ = Partial::accumulating;
}

void CpuEngine::finish_gradients() const {
  if (partial_ != Partial::accumulating) return;
  partial_ = Partial::reduced;
  const auto& local = model_.params().entries();
  auto reduce = [&](const std::vector<std::size_t>& idx, Communicator& comm) {
    for (std::size_t i : idx) comm.all_reduce_sum(grads_.data() + local[i].offset, static_cast<std::size_t>(local[i].numel));
  };
  if (tp_comm_) reduce(tp_replicated_, *tp_comm_);
  if (kv_comm_) reduce(kv_replicated_, *kv_comm_);
  if (embed_comm_ && (stage_.first || stage_.last)) reduce({full_.embed}, *embed_comm_);
  if (cp_comm_) cp_comm_->all_reduce_sum(grads_.data(), grads_.size());  // every cp rank's tokens' share
}

cpu::LossSum CpuEngine::forward_backward(const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (pp_comm_) throw InternalError("CPU engine: a pipeline stage runs stage_forward/stage_backward");
  begin_micro_batch();
  std::vector<float> local_logits;
  const auto loss = model_.forward_backward(weights_.data(), grads_.data(), mb, grad_scale, logits_out ? &local_logits : nullptr);
  if (logits_out) assemble_logits(local_logits, mb, *logits_out);
  return whole_loss(loss);
}

cpu::LossSum CpuEngine::whole_loss(cpu::LossSum local) const {
  if (!cp_comm_) return local;
  double pair[2] = {local.sum, static_cast<double>(local.count)};
  cp_comm_->all_reduce_sum(pair, 2);
  return {pair[0], static_cast<std::int64_t>(pair[1])};
}

void CpuEngine::assemble_logits(const std::vector<float>& local, const MicroBatch& mb, std::vector<float>& out) const {
  // Vocabulary slices over the tensor-parallel group: [T, V / tp] each → [T, V] (T this rank's tokens).
  const int t = tp_comm_ ? tp_comm_->size() : 1, cp = cp_comm_ ? cp_comm_->size() : 1;
  const std::int64_t Vl = model_.tp().vocab, V = Vl * t, S = mb.seq / cp, T = mb.batch * S;
  std::vector<float> rows = local;
  if (t > 1) {
    std::vector<double> mine(local.begin(), local.end()), all(mine.size() * static_cast<std::size_t>(t));
    tp_comm_->all_gather(mine.data(), all.data(), mine.size());
    rows.assign(static_cast<std::size_t>(T * V), 0.0f);
    for (int r = 0; r < t; ++r)
      for (std::int64_t row = 0; row < T; ++row)
        for (std::int64_t j = 0; j < Vl; ++j) rows[row * V + r * Vl + j] = static_cast<float>(all[(r * T + row) * Vl + j]);
  }
  if (cp == 1) {
    out = std::move(rows);
    return;
  }
  out = context_parallel_gather(*cp_comm_, rows, mb.batch, S, V);  // every rank's chunks, in sequence order
}

cpu::LossSum CpuEngine::stage_forward(int micro, const MicroBatch& mb, double grad_scale, std::vector<float>* logits_out) {
  if (!pp_comm_) throw InternalError("CPU engine: stage_forward without pipeline parallelism");
  begin_micro_batch();
  const int slot = micro % slots_;
  auto* in = stage_.first ? nullptr : &boundary_[{static_cast<int>(Boundary::input), slot}];
  auto* out = stage_.last ? nullptr : &boundary_[{static_cast<int>(Boundary::output), slot}];
  std::vector<float> local_logits;
  const auto loss = model_.forward(slot, weights_.data(), grads_.data(), mb, grad_scale, in, out,
                                   logits_out && stage_.last ? &local_logits : nullptr);
  if (logits_out && stage_.last) assemble_logits(local_logits, mb, *logits_out);
  return stage_.last ? whole_loss(loss) : loss;
}

void CpuEngine::stage_backward(int micro) {
  if (!pp_comm_) throw InternalError("CPU engine: stage_backward without pipeline parallelism");
  const int slot = micro % slots_;
  auto* dy = stage_.last ? nullptr : &boundary_[{static_cast<int>(Boundary::output_grad), slot}];
  auto* dx = stage_.first ? nullptr : &boundary_[{static_cast<int>(Boundary::input_grad), slot}];
  model_.backward(slot, weights_.data(), grads_.data(), dy, dx);
}

Communicator::Transfer CpuEngine::boundary(Boundary which, int micro, std::int64_t tokens) {
  auto& v = boundary_[{static_cast<int>(which), micro % slots_}];
  const auto n = static_cast<std::size_t>(model_.boundary_elements(tokens));
  if (which == Boundary::input || which == Boundary::output_grad) v.resize(n);  // received into
  if (v.size() != n) throw InternalError("pipeline boundary tensor sent before it was computed");
  Communicator::Transfer t;
  t.data = v.data();
  t.bytes = n * sizeof(cpu::act_t);
  return t;
}

void CpuEngine::reduce_gradients(Communicator& dp) {
  finish_gradients();
  if (dp.size() > 1) dp.all_reduce_sum(grads_.data(), grads_.size());
}

double CpuEngine::grad_norm() {
  // Sharded tensors count on every rank; replicated ones once (tp rank 0, or the first rank of each KV group).
  // With pipeline parallelism each stage counts what it reports, and the stages' sums are added.
  finish_gradients();
  const auto& local = model_.params().entries();
  const int rank = tp_comm_ ? tp_comm_->rank() : 0;
  double ss = 0;
  for (std::size_t i = 0; i < local.size(); ++i) {
    if (!reports_[i]) continue;
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
  if (pp_comm_) pp_comm_->all_reduce_sum(&ss, 1);
  return std::sqrt(ss);
}

void CpuEngine::optimizer_step(double lr, const AdamWConfig& a, double grad_scale) {
  finish_gradients();
  ++step_;
  const auto& entries = model_.params().entries();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (!owned_[i]) continue;  // another pipeline stage's tensor
    const auto& e = entries[i];
    const std::int64_t b = std::max(e.offset, shard0_), end = std::min(e.offset + e.numel, shard0_ + shard_n_);
    if (end <= b) continue;  // outside this replica's shard
    ParamInfo p = e;  // the part in the shard: weights and gradients at flat offsets, moments at shard offsets
    p.offset = b;
    p.numel = end - b;
    cpu::AdamWStep s{lr, a.beta1, a.beta2, a.eps, p.decay ? a.weight_decay : 0.0, step_, grad_scale};
    cpu::adamw_step(weights_.data() + p.offset, m_.data() + (p.offset - shard0_), v_.data() + (p.offset - shard0_),
                    grads_.data() + p.offset, p.numel, s);
  }
  if (!shard_comm_) return;
  // Every replica's updated shard to every replica (the last shard padded).
  const auto n = static_cast<std::int64_t>(weights_.size());
  std::vector<float> mine(static_cast<std::size_t>(shard_n_), 0.0f), all(mine.size() * static_cast<std::size_t>(shard_comm_->size()));
  if (shard0_ < n) std::copy(weights_.begin() + shard0_, weights_.begin() + std::min(n, shard0_ + shard_n_), mine.begin());
  shard_comm_->all_gather(mine.data(), all.data(), mine.size());
  std::copy(all.begin(), all.begin() + n, weights_.begin());
}

}  // namespace qwen3
