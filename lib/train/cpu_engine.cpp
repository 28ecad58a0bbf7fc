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

// The group the optimizer state is sharded over (gradients are whole on every rank), null without sharding.
Communicator* shard_group(const EngineOptions& o) {
  return o.shard_optimizer ? group_of(o.shard_comm ? o.shard_comm : o.dp_comm) : nullptr;
}

}  // namespace

CpuEngine::CpuEngine(const ModelConfig& cfg, const EngineOptions& opts)
    : tp_comm_(group_of(opts.tp_comm)),
      pp_comm_(group_of(opts.pp_comm)),
      cp_comm_(group_of(opts.cp_comm)),
      shard_comm_(shard_group(opts)),
      plan_(plan_rank(engine_rank_input(cfg, opts, shard_comm_, false))),
      model_(cfg, tp_comm_, &plan_.stage, opts.recompute, cp_comm_, &plan_.local) {
  model_.set_fp8(plan_.fp8, plan_.fp8_delayed);
  const TpDims& d = plan_.tp;
  if (tp_comm_ && d.kv_replicas > 1) kv_comm_ = tp_comm_->split(d.kv_group(), d.rank);
  const StageRange& stage = plan_.stage;
  if (pp_comm_ && cfg.tie_word_embeddings) embed_comm_ = pp_comm_->split(stage.first || stage.last ? 0 : 1, pp_comm_->rank());
  const ParamTable& full = plan_.full;
  for (std::size_t i = 0; i < full.entries().size(); ++i) shards_.push_back(shard_spec(full, i, d));
  const auto n = static_cast<std::size_t>(plan_.local.total_elements());
  weights_.resize(n);
  grads_.assign(n, 0.0f);
  m_.assign(static_cast<std::size_t>(plan_.shard.size), 0.0f);
  v_.assign(m_.size(), 0.0f);
  // The full model's initial values (model/init.h), then this rank's shards: the same weights at every tp size.
  std::vector<float> values(static_cast<std::size_t>(full.total_elements()));
  init_weights(full, opts.seed, opts.init_std, values.data());
  for (std::size_t i = 0; i < full.entries().size(); ++i) {
    const auto& f = full.entries()[i];
    if (plan_.owned[i]) extract_shard(shards_[i], f.shape, values.data() + f.offset, local_data(weights_, i));
  }
}

float* CpuEngine::local_data(std::vector<float>& flat, std::size_t index) const {
  return flat.data() + plan_.local.entries()[index].offset;
}

std::vector<float> CpuEngine::gather_full(std::size_t index, const std::vector<float>& local) const {
  return gather_full(index, local.data() + model_.params().entries()[index].offset);
}

std::vector<float> CpuEngine::gather_full(std::size_t index, const float* part) const {
  const auto& l = plan_.local.entries()[index];
  std::vector<float> out;
  if (!plan_.owned[index])  // another stage's tensor (the same on every tensor-parallel rank of this stage)
    out.assign(static_cast<std::size_t>(plan_.full.entries()[index].numel), 0.0f);
  else if (tp_comm_)
    out = gather_full_tensor(*tp_comm_, model_.config(), plan_.full, index, part, l.numel);
  else
    out.assign(part, part + l.numel);
  if (!pp_comm_) return out;
  if (!plan_.reports[index]) std::fill(out.begin(), out.end(), 0.0f);
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
  const std::size_t i = plan_.full.index_of_full(name, values.size(), "weight");
  if (plan_.owned[i]) extract_shard(shards_[i], plan_.full.entries()[i].shape, values.data(), local_data(weights_, i));
}

std::vector<float> CpuEngine::weights(const std::string& name) const {
  const auto& p = plan_.full.find(name);
  return gather_full(static_cast<std::size_t>(&p - plan_.full.entries().data()), weights_);
}

// The moments cover this replica's ZeRO shard of the local flat table: a tensor's local part is the overlap, zeros
// elsewhere, summed over the data-parallel group (every element in exactly one shard), then gathered like weights.
std::vector<float> CpuEngine::moment(const std::string& name, int which) const {
  const auto& p = plan_.full.find(name);
  const std::size_t i = static_cast<std::size_t>(&p - plan_.full.entries().data());
  const auto& l = plan_.local.entries()[i];
  const std::vector<float>& mv = which == 0 ? m_ : v_;
  std::vector<float> local(static_cast<std::size_t>(l.numel), 0.0f);
  const std::int64_t shard0 = plan_.shard.begin;
  const auto [b, e] = plan_.shard.overlap(l.offset, l.numel);
  if (e > b) std::copy(mv.begin() + (b - shard0), mv.begin() + (e - shard0), local.begin() + (b - l.offset));
  if (shard_comm_) shard_comm_->all_reduce_sum(local.data(), local.size());
  return gather_full(i, local.data());
}

void CpuEngine::set_moment(const std::string& name, int which, const std::vector<float>& values) {
  const std::size_t i = plan_.full.index_of_full(name, values.size(), "moment of");
  if (!plan_.owned[i]) return;  // another stage's
  const auto& l = plan_.local.entries()[i];
  std::vector<float> local(static_cast<std::size_t>(l.numel));
  extract_shard(shards_[i], plan_.full.entries()[i].shape, values.data(), local.data());
  std::vector<float>& mv = which == 0 ? m_ : v_;
  const std::int64_t shard0 = plan_.shard.begin;
  const auto [b, e] = plan_.shard.overlap(l.offset, l.numel);
  if (e > b) std::copy(local.begin() + (b - l.offset), local.begin() + (e - l.offset), mv.begin() + (b - shard0));
}

std::vector<float> CpuEngine::gradient(const std::string& name) const {
  finish_gradients();
  const auto& p = plan_.full.find(name);
  return gather_full(static_cast<std::size_t>(&p - plan_.full.entries().data()), grads_);
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
  const auto& local = plan_.local.entries();
  auto reduce = [&](const std::vector<std::size_t>& idx, Communicator& comm) {
    for (std::size_t i : idx) comm.all_reduce_sum(grads_.data() + local[i].offset, static_cast<std::size_t>(local[i].numel));
  };
  if (tp_comm_) reduce(plan_.gradients.tp_replicated, *tp_comm_);
  if (kv_comm_) reduce(plan_.gradients.kv_replicated, *kv_comm_);
  if (embed_comm_ && (plan_.stage.first || plan_.stage.last)) reduce({plan_.full.embed}, *embed_comm_);
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
  const int slot = micro % plan_.slots;
  auto* in = plan_.stage.first ? nullptr : &boundary_[{static_cast<int>(Boundary::input), slot}];
  auto* out = plan_.stage.last ? nullptr : &boundary_[{static_cast<int>(Boundary::output), slot}];
  std::vector<float> local_logits;
  const auto loss = model_.forward(slot, weights_.data(), grads_.data(), mb, grad_scale, in, out,
                                   logits_out && plan_.stage.last ? &local_logits : nullptr);
  if (logits_out && plan_.stage.last) assemble_logits(local_logits, mb, *logits_out);
  return plan_.stage.last ? whole_loss(loss) : loss;
}

void CpuEngine::stage_backward(int micro) {
  if (!pp_comm_) throw InternalError("CPU engine: stage_backward without pipeline parallelism");
  const int slot = micro % plan_.slots;
  auto* dy = plan_.stage.last ? nullptr : &boundary_[{static_cast<int>(Boundary::output_grad), slot}];
  auto* dx = plan_.stage.first ? nullptr : &boundary_[{static_cast<int>(Boundary::input_grad), slot}];
  model_.backward(slot, weights_.data(), grads_.data(), dy, dx);
}

Communicator::Transfer CpuEngine::boundary(Boundary which, int micro, std::int64_t tokens) {
  auto& v = boundary_[{static_cast<int>(which), micro % plan_.slots}];
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
  model_.end_fp8_step(&dp);
}

double CpuEngine::grad_norm() {
  // Each tensor's gradient counted once (model/gradient_ownership.h); with pipeline parallelism each stage counts what
  // it reports, and the stages' sums are added.
  finish_gradients();
  const auto& local = plan_.local.entries();
  double ss = 0;
  for (std::size_t i = 0; i < local.size(); ++i) {
    if (!plan_.gradients.counted[i]) continue;
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
  const auto& entries = plan_.local.entries();
  const std::int64_t shard0 = plan_.shard.begin, shard_n = plan_.shard.size;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const auto [b, end] = plan_.shard.overlap(e.offset, e.numel);  // (another stage's tensors hold no elements)
    if (end <= b) continue;  // outside this replica's shard
    ParamInfo p = e;  // the part in the shard: weights and gradients at flat offsets, moments at shard offsets
    p.offset = b;
    p.numel = end - b;
    cpu::AdamWStep s{lr, a.beta1, a.beta2, a.eps, p.decay ? a.weight_decay : 0.0, step_, grad_scale};
    cpu::adamw_step(weights_.data() + p.offset, m_.data() + (p.offset - shard0), v_.data() + (p.offset - shard0),
                    grads_.data() + p.offset, p.numel, s);
  }
  if (!shard_comm_) return;
  // Every replica's updated shard to every replica (the last shard padded).
  const auto n = static_cast<std::int64_t>(weights_.size());
  std::vector<float> mine(static_cast<std::size_t>(shard_n), 0.0f), all(mine.size() * static_cast<std::size_t>(shard_comm_->size()));
  if (shard0 < n) std::copy(weights_.begin() + shard0, weights_.begin() + std::min(n, shard0 + shard_n), mine.begin());
  shard_comm_->all_gather(mine.data(), all.data(), mine.size());
  std::copy(all.begin(), all.begin() + n, weights_.begin());
}

}  // namespace qwen3
