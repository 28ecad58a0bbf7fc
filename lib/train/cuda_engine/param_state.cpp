// The flat parameter state: storage, exchange with the host, initialisation (see param_state.h).
#include "train/cuda_engine/param_state.h"

#include "core/error.h"
#include "gpu/check.h"
#include "model/init_stream.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/init.h"
#include "train/optimizer_segments.h"

namespace qwen3::cuda {

ParamState::ParamState(const EngineContext& ctx, const ParamTable& full, std::vector<bool> owned,
                       std::vector<bool> reports, const ParamGroups& groups, bool zero1, const ShardWindow& shard,
                       const DeviceBuffers& buffers, OpTimer& timer, const OptimizerOnHost& on_host)
    : ctx_(ctx), full_(full), owned_(std::move(owned)), reports_(std::move(reports)), groups_(groups),
      ownership_(gradient_ownership(full, ctx.tp, reports_)), zero1_(zero1), shard_(shard), timer_(timer),
      w_(buffers.get<float>(Buf::master_weights)), g_(buffers.get<float>(Buf::gradients)),
      m_(buffers.get<float>(Buf::adam_m)), v_(buffers.get<float>(Buf::adam_v)), host_begin_(shard.host_begin(on_host.fraction)),
      wb_(buffers.get<bf16>(Buf::compute_weights)), chunks_(buffers.get<AdamWChunk>(Buf::adamw_chunks)),
      partial_(buffers.get<double>(Buf::reduce_partials)), scalar_(buffers.get<double>(Buf::reduce_result)),
      opt_stream_(stream_priorities().least) {
  const auto& table = ctx.table;
  // The fused q|k|v and gate|up GEMMs rely on these weights (and gradients) being adjacent in the flat buffers.
  for (const auto& p : table.layers) {
    const auto& e = table.entries();
    QWEN3_ASSERT(e[p.k_proj].offset == e[p.q_proj].offset + e[p.q_proj].numel &&
                     e[p.v_proj].offset == e[p.k_proj].offset + e[p.k_proj].numel &&
                     e[p.up_proj].offset == e[p.gate_proj].offset + e[p.gate_proj].numel,
                 "q|k|v and gate|up weights must be adjacent in the parameter table");
  }
  setup_optimizer(buffers, on_host.threads);
  // Gradients no GEMM overwrites (norm weights, an untied embedding: scatter-added) are zeroed by zero_grad(); the
  // GEMM-written ones are overwritten by the first backward after it (β = 0). A pipeline stage's micro-batches
  // interleave: it zeroes all.
  std::vector<bool> gemm_written(table.entries().size(), false);
  for (const auto& p : table.layers)
    for (std::size_t i : {p.q_proj, p.k_proj, p.v_proj, p.o_proj, p.gate_proj, p.up_proj, p.down_proj}) gemm_written[i] = true;
  gemm_written[table.lm_head] = true;  // the output projection's GEMM runs before the embedding's scatter-add
  if (table.lm_head != table.embed) gemm_written[table.embed] = false;
  for (std::size_t i = 0; i < gemm_written.size(); ++i)
    if ((!gemm_written[i] || groups_.pp) && table.entries()[i].numel > 0) zeroed_by_memset_.push_back(i);
  CUDA_CHECK(cudaMemset(g_, 0, shard_.padded * sizeof(float)));
  CUDA_CHECK(cudaMemset(wb_, 0, shard_.padded * sizeof(bf16)));
}

ParamState::~ParamState() {
  cudaDeviceSynchronize();  // no host-optimizer piece may still run on the host state
}

void ParamState::setup_optimizer(const DeviceBuffers& buffers, int host_threads) {
  const OptimizerSegments seg = optimizer_segments(ctx_.table, ctx_.cfg.num_layers, shard_, host_begin_);
  if (host_begin_ < shard_.size) host_ = std::make_unique<HostOptimizer>(buffers, host_begin_, seg.host, host_threads);
  QWEN3_ASSERT(buffers.bytes(Buf::adamw_chunks) == static_cast<std::int64_t>(seg.chunks.size() * sizeof(AdamWChunk)),
               "the buffer table's AdamW chunk list");
  segments_ = seg.segments;
  segment_done_.resize(segments_.size());
  CUDA_CHECK(cudaMemcpy(chunks_, seg.chunks.data(), seg.chunks.size() * sizeof(AdamWChunk), cudaMemcpyHostToDevice));
}

void ParamState::init_on_device(std::uint64_t seed, double std) {
  // The same values as every other backend (model/init.h), only this rank's shard of each tensor computed (its rows,
  // its columns, or all of a replicated one), on the GPU: the host would take minutes for the larger models.
  CUDA_CHECK(cudaDeviceSynchronize());
  for (std::size_t i = 0; i < full_.entries().size(); ++i) {
    const auto& f = full_.entries()[i];
    if (!owned_[i]) continue;  // another pipeline stage's
    float* out = g_ + ctx_.table.entries()[i].offset;
    const ShardSpec sh = shard_spec(full_, i, ctx_.tp);
    const std::int64_t rows = f.shape.size() < 2 ? 1 : f.shape[0], cols = f.numel / rows;
    const std::int64_t r0 = sh.dim == 0 ? sh.begin : 0, nr = sh.dim == 0 ? sh.count : rows;
    const std::int64_t c0 = sh.dim == 1 ? sh.begin : 0, nc = sh.dim == 1 ? sh.count : cols;
    QWEN3_ASSERT(nr * nc == ctx_.table.entries()[i].numel, "a tensor-parallel shard's size");
    if (f.shape.size() < 2)
      fill(out, nr * nc, 1.0f, ctx_.stream);
    else
      init_normal_block(out, nr, nc, r0, c0, cols, init_stream_start(seed, i), std, ctx_.stream);
  }
  commit(0, ctx_.table.total_elements());
}

void ParamState::upload(const float* values, std::int64_t offset, std::int64_t n) {
  CUDA_CHECK(cudaDeviceSynchronize());  // no optimizer step may still be writing these weights
  CUDA_CHECK(cudaMemcpyAsync(g_ + offset, values, n * sizeof(float), cudaMemcpyHostToDevice, ctx_.stream));
  commit(offset, n);  // ordered after the copy on the same stream
}

void ParamState::commit(std::int64_t offset, std::int64_t n) {
  // From the gradient buffer (unused outside a step): the bf16 copy of all n, the master copy of this rank's shard.
  cast_f32_to_bf16(g_ + offset, wb_ + offset, n, ctx_.stream);
  const auto [b, e] = shard_.overlap(offset, n);
  if (e > b) copy_state(kMaster, b - shard_.begin, e - shard_.begin, g_ + b, true);
  CUDA_CHECK(cudaMemsetAsync(g_ + offset, 0, n * sizeof(float), ctx_.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
}

std::vector<float> ParamState::own_part(std::size_t index, const std::vector<float>& values) const {
  std::vector<float> part(static_cast<std::size_t>(ctx_.table.entries()[index].numel));
  extract_shard(shard_spec(full_, index, ctx_.tp), full_.entries()[index].shape, values.data(), part.data());
  return part;
}

void ParamState::set_weights(const std::string& name, const std::vector<float>& values) {
  const std::size_t index = full_.index_of_full(name, values.size(), "weight");
  if (!owned_[index]) return;  // another pipeline stage's tensor
  const auto& p = ctx_.table.entries()[index];
  upload(own_part(index, values).data(), p.offset, p.numel);
}

void ParamState::set_moment(const std::string& name, int which, const std::vector<float>& values) {
  const std::size_t index = full_.index_of_full(name, values.size(), "moment of");
  if (!owned_[index]) return;  // another pipeline stage's tensor
  const auto& p = ctx_.table.entries()[index];
  std::vector<float> part = own_part(index, values);
  CUDA_CHECK(cudaDeviceSynchronize());  // no optimizer step may still be writing the moments
  const auto [b, e] = shard_.overlap(p.offset, p.numel);
  if (e <= b) return;
  copy_state(which == 0 ? kM : kV, b - shard_.begin, e - shard_.begin, part.data() + (b - p.offset), true);
  CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));  // complete before the optimizer's side stream reads it
}

void ParamState::copy_state(Flat which, std::int64_t lo, std::int64_t hi, float* other, bool to_state) const {
  float* const device[3] = {w_, m_, v_};
  // cudaMemcpyDefault: unified addressing tells host (pinned or not) from device memory.
  auto copy = [&](float* state, std::int64_t from, std::int64_t to) {
    float* o = other + (from - lo);
    const std::size_t bytes = static_cast<std::size_t>(to - from) * sizeof(float);
    CUDA_CHECK(cudaMemcpyAsync(to_state ? state : o, to_state ? o : state, bytes, cudaMemcpyDefault, ctx_.stream));
  };
  if (std::min(hi, host_begin_) > lo) copy(device[which] + lo, lo, std::min(hi, host_begin_));
  if (hi > std::max(lo, host_begin_)) {
    const std::int64_t from = std::max(lo, host_begin_);
    copy(host_->state(which) + (from - host_begin_), from, hi);
  }
}

std::vector<float> ParamState::gradient(const std::string& name) const {
  finish_replicated_grads();
  return download(kGrad, name);
}

std::vector<float> ParamState::download(Flat which, const std::string& name) const {
  const auto& f = full_.find(name);
  const std::size_t index = static_cast<std::size_t>(&f - full_.entries().data());
  const auto& p = ctx_.table.entries()[index];
  std::vector<float> out(static_cast<std::size_t>(p.numel));
  CUDA_CHECK(cudaDeviceSynchronize());  // both streams: a pending optimizer step or memset
  if (owned_[index]) {
    // The master weights and moments (and reduce-scattered gradients) of the distributed optimizer live in shards:
    // each data-parallel rank gives its part, the others add zeros.
    const auto [b, e] = shard_.overlap(p.offset, p.numel);
    if (which != kGrad) {
      if (e > b) copy_state(which, b - shard_.begin, e - shard_.begin, out.data() + (b - p.offset), false);
      CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
      if (zero1_) groups_.shards->all_reduce_sum(out.data(), out.size());
    } else if (!(zero1_ && grads_scattered_)) {
      CUDA_CHECK(cudaMemcpy(out.data(), g_ + p.offset, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
      if (groups_.zero_over_cp) groups_.cp->all_reduce_sum(out.data(), out.size());  // not yet summed over cp
    } else {
      if (e > b) CUDA_CHECK(cudaMemcpy(out.data() + (b - p.offset), g_ + b, (e - b) * sizeof(float), cudaMemcpyDeviceToHost));
      groups_.shards->all_reduce_sum(out.data(), out.size());
    }
    if (groups_.tp) out = gather_full_tensor(*groups_.tp, ctx_.cfg, full_, index, out.data(), p.numel);
  }
  if (!groups_.pp) return out;
  // Pipeline: the stage that reports the tensor gives it, the others add zeros.
  if (!reports_[index]) out.assign(static_cast<std::size_t>(f.numel), 0.0f);
  groups_.pp->all_reduce_sum(out.data(), out.size());
  return out;
}

double ParamState::device_scalar() const { return read_scalar(scalar_, ctx_.stream); }

}  // namespace qwen3::cuda
