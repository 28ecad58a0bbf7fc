// One step of the CUDA engine on one rank as priced operations (see step_model.h).
#include "train/step_model.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "model/pipeline_split.h"
#include "model/sequence_layout.h"
#include "model/tensor_parallel.h"
#include "train/buffer_table.h"
#include "train/pipeline_schedule.h"

namespace qwen3 {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::gemm_fwd: return "gemm_fwd";
    case OpKind::gemm_dgrad_f32: return "gemm_dgrad_f32";
    case OpKind::gemm_dgrad_bf16: return "gemm_dgrad_bf16";
    case OpKind::gemm_wgrad: return "gemm_wgrad";
    case OpKind::gemm_wgrad_set: return "gemm_wgrad_set";
    case OpKind::gemm8_fwd: return "gemm8_fwd";
    case OpKind::gemm8_dgrad_f32: return "gemm8_dgrad_f32";
    case OpKind::gemm8_dgrad_bf16: return "gemm8_dgrad_bf16";
    case OpKind::gemm8_wgrad: return "gemm8_wgrad";
    case OpKind::gemm8_wgrad_set: return "gemm8_wgrad_set";
    case OpKind::fp8_amax: return "fp8_amax";
    case OpKind::fp8_cast: return "fp8_cast";
    case OpKind::fp8_cast_t: return "fp8_cast_t";
    case OpKind::fp8_cast_both: return "fp8_cast_both";
    case OpKind::attention_fwd: return "attention_fwd";
    case OpKind::attention_bwd: return "attention_bwd";
    case OpKind::rmsnorm_fwd: return "rmsnorm_fwd";
    case OpKind::rmsnorm_bwd: return "rmsnorm_bwd";
    case OpKind::qk_norm_rope_fwd: return "qk_norm_rope_fwd";
    case OpKind::qk_norm_rope_bwd: return "qk_norm_rope_bwd";
    case OpKind::swiglu_fwd: return "swiglu_fwd";
    case OpKind::swiglu_bwd: return "swiglu_bwd";
    case OpKind::swiglu_bwd_fp8t: return "swiglu_bwd_fp8t";
    case OpKind::swiglu_bwd_fp8g: return "swiglu_bwd_fp8g";
    case OpKind::swiglu_fwd_fp8: return "swiglu_fwd_fp8";
    case OpKind::add_bf16: return "add_bf16";
    case OpKind::embedding_fwd: return "embedding_fwd";
    case OpKind::embedding_bwd: return "embedding_bwd";
    case OpKind::cross_entropy: return "cross_entropy";
    case OpKind::cast_f32_bf16: return "cast_f32_bf16";
    case OpKind::adamw: return "adamw";
    case OpKind::sum_squares: return "sum_squares";
  }
  return "?";
}

bool is_gemm(OpKind k) {
  return (k >= OpKind::gemm_fwd && k <= OpKind::gemm_wgrad_set) || (k >= OpKind::gemm8_fwd && k <= OpKind::gemm8_wgrad_set);
}
bool is_fp8_gemm(OpKind k) { return k >= OpKind::gemm8_fwd && k <= OpKind::gemm8_wgrad_set; }
bool is_attention(OpKind k) { return k == OpKind::attention_fwd || k == OpKind::attention_bwd; }

std::string OpShape::key() const {
  const auto d = [&](int i) { return static_cast<long long>(dims[static_cast<std::size_t>(i)]); };
  char s[96];
  if (is_gemm(kind) || kind == OpKind::qk_norm_rope_fwd || kind == OpKind::qk_norm_rope_bwd)
    std::snprintf(s, sizeof s, "%s %lldx%lld", op_kind_name(kind), d(0), d(1));
  else if (is_attention(kind))
    std::snprintf(s, sizeof s, "%s %lld/%lld/%lld", op_kind_name(kind), d(0), d(1), d(2));
  else if (kind == OpKind::adamw || kind == OpKind::sum_squares)
    std::snprintf(s, sizeof s, "%s", op_kind_name(kind));
  else
    std::snprintf(s, sizeof s, "%s %lld", op_kind_name(kind), d(0));
  return s;
}

const char* coll_kind_name(CollKind k) {
  switch (k) {
    case CollKind::all_gather: return "all_gather";
    case CollKind::reduce_scatter: return "reduce_scatter";
    case CollKind::all_reduce: return "all_reduce";
    case CollKind::send_recv: return "send_recv";
  }
  return "?";
}

namespace {

// One layer's four FP8 weight casts (train/cuda_engine/linears.cpp cast_weights): each weight's row-major and/or
// transposed copy (neither: no cast) and, with `amax`, first each weight's amax, the four max-reduced over tensor
// parallelism.
double fp8_weight_cast_time(const RankPlan& rank, OpPricer& p, bool rows, bool cols, bool amax) {
  const OpKind cast = rows && cols ? OpKind::fp8_cast_both : rows ? OpKind::fp8_cast : OpKind::fp8_cast_t;
  double t = amax && rank.tp.size > 1 ? p.collective({CollKind::all_reduce, 4 * kFp8Linears, rank.tp.size}) : 0.0;
  for (const Fp8Weight& w : fp8_layout(rank).weights) {
    if (amax) t += p.compute({OpKind::fp8_amax, w.out, {w.in}});
    if (rows || cols) t += p.compute({cast, w.out, {w.in}});
  }
  return t;
}

// One micro-batch's passes on one pipeline stage's rank, priced: the engine's blocks in the engine's order.
class StageWalk {
 public:
  // writes_grads: the micro-batch's weight gradients are written, not added to (a step's first micro-batch without
  // pipeline stages: param_update.cpp), which their GEMMs do faster.
  // rank: the first rank of the stage (train/rank_plan.h), whose sizes the walk reads.
  StageWalk(const RankPlan& rank, OpPricer& p, bool writes_grads)
      : r_(rank), c_(rank.model), stage_(rank.stage), p_(p), tp_(rank.tp),
        wgrad_(writes_grads ? OpKind::gemm_wgrad_set : OpKind::gemm_wgrad), fp8_(rank.fp8),
        fp8_delayed_(rank.fp8_delayed) {
    cp_ = rank.rank.cp;
    B_ = rank.max_batch, S_ = rank.max_seq;
    T_ = rank.tokens, Tl_ = rank.seq_tokens;  // rows of the GEMMs, rows of the residual stream (sequence parallel)
    H_ = c_.hidden_size;
    qkv_ = tp_.q_dim + 2 * tp_.kv_dim;
  }

  // Forward of one micro-batch: embedding (first stage), layers, head with the loss and its backward (last stage).
  double forward() {
    double t = stage_.first ? embed_forward() : 0.0;
    for (std::int64_t l = 0; l < stage_.layers(); ++l)
      t += weight_casts(true, false) + layer_forward() + offload_exposed(l, HostKind::copy_d2h);
    return t + (stage_.last ? head() : 0.0);
  }

  // Backward of one micro-batch, recomputation included (also added to `recompute`).
  double backward(double& recompute) {
    double t = stage_.last ? 0.0 : op(OpKind::cast_f32_bf16, Tl_, {H_});  // the received gradient's bf16 copy
    if (tp_.size > 1) t += ag(Tl_ * H_ * 2);  // the last block's output gradient, gathered
    for (std::int64_t l = stage_.layers() - 1; l >= 0; --l) {
      double r = 0;
      t += weight_casts(r_.recompute.full(l), true);
      if (r_.recompute.full(l)) r = layer_forward();
      else if (r_.recompute.selective(l)) r = selective();
      recompute += r;
      t += r + layer_backward(l > 0, l < stage_.layers() - 1) + offload_exposed(l, HostKind::copy_h2d);
    }
    return t + (stage_.first ? embed_backward() : 0.0);
  }

  double exposed_comm() const { return exposed_comm_; }

 private:
  double op(OpKind k, std::int64_t tokens, std::array<std::int64_t, 3> dims) { return p_.compute({k, tokens, dims}); }
  double gemm(OpKind k, std::int64_t tokens, std::int64_t in, std::int64_t out) { return op(k, tokens, {in, out, 0}); }
  double coll(CollKind k, std::int64_t bytes, int group, bool exposed = true) {
    const double t = p_.collective({k, bytes, group});
    if (exposed) exposed_comm_ += t;
    return t;
  }
  // Sequence parallelism: all-gather of [Tl, ·] pieces (bytes of one piece), reduce-scatter of a whole [T, ·] buffer.
  double ag(std::int64_t piece_bytes, bool exposed = true) {
    return coll(CollKind::all_gather, piece_bytes * tp_.size, tp_.size, exposed);
  }
  double rs(std::int64_t whole_bytes, bool exposed = true) {
    return coll(CollKind::reduce_scatter, whole_bytes, tp_.size, exposed);
  }

  // A decoder layer's linear layer as the Linears unit runs it (train/cuda_engine/linears.cpp): bf16 GEMMs, or with
  // --precision fp8 each input's amax (max-reduced over the ranks that split it: `split` by tensor parallelism, and
  // context parallelism) and cast before its FP8 GEMM; each output gradient cast once into both copies; each weight
  // gradient's input cast again, transposed (its amax kept from the forward). An amax its producing kernel took
  // (`produced`: the norms' outputs, SwiGLU's and its gradient, a block's dy from the norm backward below it) costs
  // no pass of its own, only its reduction — over tensor parallelism too, as the producer saw this rank's part.
  double amax_reduce(bool split) {
    return (split && tp_.size > 1 ? coll(CollKind::all_reduce, 4, tp_.size) : 0.0) +
           (cp_ > 1 ? coll(CollKind::all_reduce, 4, cp_) : 0.0);
  }
  // FP8 weight copies cast per layer (model/memory_policy.h): before a layer's forward its row-major ones, before its
  // backward its transposed ones (and the row-major again when the layer is recomputed); none when kept.
  double weight_casts(bool rows, bool cols) {
    if (!fp8_ || !r_.recompute.fp8_weights_per_layer || (!rows && !cols)) return 0.0;
    return fp8_weight_cast_time(r_, p_, rows, cols, false);  // their amaxes once per step (fp8_weight_casts)
  }
  double amax(std::int64_t n, bool split, bool produced) {
    return (produced ? 0.0 : op(OpKind::fp8_amax, T_, {n})) + amax_reduce(split || produced);
  }
  // written_fp8: its producer wrote the FP8 operand (delayed scaling), its amax reduced for the weight gradient
  double linear_fwd(std::int64_t in, std::int64_t out, bool split, bool produced, bool written_fp8 = false) {
    if (!fp8_) return gemm(OpKind::gemm_fwd, T_, in, out);
    if (written_fp8) return amax_reduce(true) + gemm(OpKind::gemm8_fwd, T_, in, out);
    return amax(in, split, produced) + op(OpKind::fp8_cast, T_, {in}) + gemm(OpKind::gemm8_fwd, T_, in, out);
  }
  double grad_cast(std::int64_t out, bool split, bool produced) {
    return fp8_ ? amax(out, split, produced) + op(OpKind::fp8_cast_both, T_, {out}) : 0.0;
  }
  double linear_dgrad(bool f32, std::int64_t in, std::int64_t out) {
    const OpKind k = fp8_ ? (f32 ? OpKind::gemm8_dgrad_f32 : OpKind::gemm8_dgrad_bf16)
                          : (f32 ? OpKind::gemm_dgrad_f32 : OpKind::gemm_dgrad_bf16);
    return gemm(k, T_, in, out);
  }
  // input_t_produced: the input's transposed FP8 copy came from the kernel that recomputed it (no cast).
  double linear_wgrad(std::int64_t in, std::int64_t out, bool input_t_produced = false) {
    if (!fp8_) return gemm(wgrad_, T_, in, out);
    const OpKind k = wgrad_ == OpKind::gemm_wgrad_set ? OpKind::gemm8_wgrad_set : OpKind::gemm8_wgrad;
    return (input_t_produced ? 0.0 : op(OpKind::fp8_cast_t, T_, {in})) + gemm(k, T_, in, out);
  }

  double norm_gathered() { return op(OpKind::rmsnorm_fwd, Tl_, {H_}) + (tp_.size > 1 ? ag(Tl_ * H_ * 2) : 0.0); }
  double row_parallel(std::int64_t k, bool produced, bool written_fp8 = false) {
    const double t = linear_fwd(k, H_, true, produced, written_fp8);
    return tp_.size == 1 ? t : t + rs(T_ * H_ * 2) + op(OpKind::add_bf16, Tl_, {H_});
  }
  // The micro-batch's sequences; context parallelism: a rank's share of the causal work (two balanced chunks, priced as
  // 1/cp of the whole sequence's attention) after gathering every rank's keys and values (and, backward, their
  // gradients reduce-scattered back).
  double attention(OpKind k) {
    const double whole = static_cast<double>(B_) * op(k, S_, {tp_.heads, tp_.kv_heads, c_.head_dim});
    if (cp_ == 1) return whole;
    const std::int64_t kv_bytes = T_ * 2 * tp_.kv_dim * 2 * cp_;
    double t = whole / cp_ + coll(CollKind::all_gather, kv_bytes, cp_);
    if (k == OpKind::attention_bwd) t += coll(CollKind::reduce_scatter, kv_bytes, cp_);
    return t;
  }
  double qk_norm_rope(OpKind k) {
    return op(k, T_, {tp_.heads, c_.head_dim}) + op(k, T_, {tp_.kv_heads, c_.head_dim});
  }
  double layer_forward() {
    double t = norm_gathered() + linear_fwd(H_, qkv_, false, true) + qk_norm_rope(OpKind::qk_norm_rope_fwd);
    t += attention(OpKind::attention_fwd) + row_parallel(tp_.q_dim, false);
    // delayed scaling: the SwiGLU forward writes down's E4M3 operand itself (Linears::produce_input_fp8)
    t += norm_gathered() + linear_fwd(H_, 2 * tp_.inter, false, true) +
         op(fp8_delayed_ ? OpKind::swiglu_fwd_fp8 : OpKind::swiglu_fwd, T_, {tp_.inter});
    return t + row_parallel(tp_.inter, true, fp8_delayed_);
  }
  double selective() { return norm_gathered() + qk_norm_rope(OpKind::qk_norm_rope_fwd) + norm_gathered(); }
  // The weight gradients; with tensor parallelism, beside them on the comm stream, the input gradient's
  // reduce-scatter, the norm's backward and the next block's all-gather (sequence_parallel.cpp block_tail), which
  // slow the GEMMs while they run (the calibration's measured slowdown with NCCL's SMs held).
  double block_tail(double wgrads, bool more) {
    const double norm = op(OpKind::rmsnorm_bwd, Tl_, {H_});
    if (tp_.size == 1) return wgrads + norm;
    const double side = rs(T_ * H_ * 4, false) + norm + (more ? ag(Tl_ * H_ * 2, false) : 0.0);
    // While the collectives run, their blocks hold SMs the GEMMs would use: the overlapped part of the GEMMs slows.
    wgrads += std::min(wgrads, side) * (p_.gemm_slowdown_beside_collectives() - 1.0);
    exposed_comm_ += std::max(0.0, side - wgrads);
    return std::max(wgrads, side);
  }
  // dy_produced: the layer's output gradient came from the norm backward of the layer above on this stage (not from
  // the head or the next stage).
  double layer_backward(bool more, bool dy_produced) {
    const std::int64_t I = tp_.inter;
    // FP8: the SwiGLU backward writes down's transposed input itself (qwen3_blocks.cpp, Linears::produce_input_t),
    // and with delayed scaling gate|up's two gradient operands too, without their cast (Linears::produce_grad_fp8:
    // the steps after the first, which the walk prices)
    const OpKind swiglu = !fp8_ ? OpKind::swiglu_bwd : fp8_delayed_ ? OpKind::swiglu_bwd_fp8g : OpKind::swiglu_bwd_fp8t;
    double t = grad_cast(H_, false, dy_produced) + linear_dgrad(false, I, H_) + op(swiglu, T_, {I}) +
               (fp8_delayed_ ? 0.0 : grad_cast(2 * I, true, true)) + linear_dgrad(true, H_, 2 * I);
    t += block_tail(linear_wgrad(I, H_, true) + linear_wgrad(H_, 2 * I), true);
    t += grad_cast(H_, false, true) + linear_dgrad(false, tp_.q_dim, H_) + attention(OpKind::attention_bwd);
    t += qk_norm_rope(OpKind::qk_norm_rope_bwd) + grad_cast(qkv_, true, false) + linear_dgrad(true, H_, qkv_);
    return t + block_tail(linear_wgrad(tp_.q_dim, H_) + linear_wgrad(H_, qkv_), more);
  }
  double embed_forward() {
    const double t = op(OpKind::embedding_fwd, T_, {H_, tp_.vocab});
    return tp_.size == 1 ? t : t + rs(T_ * H_ * 2);
  }
  double embed_backward() {
    const double t = op(OpKind::embedding_bwd, T_, {H_, tp_.vocab});
    return tp_.size == 1 ? t : t + coll(CollKind::all_gather, T_ * H_ * 4, tp_.size);
  }
  // Final norm; the output projection and the loss in chunks of tokens, forward and backward; the loss read back; the
  // final norm's backward (lm_head.cpp).
  double head() {
    double t = norm_gathered();
    const std::int64_t chunk = r_.logit_chunk;
    for (std::int64_t t0 = 0; t0 < T_; t0 += chunk) {
      const std::int64_t tc = std::min(chunk, T_ - t0);
      t += gemm(OpKind::gemm_fwd, tc, H_, tp_.vocab) + op(OpKind::cross_entropy, tc, {tp_.vocab});
      if (tp_.size > 1)  // row max, sum of exponentials, target logit
        for (int i = 0; i < 3; ++i) t += coll(CollKind::all_reduce, tc * 4, tp_.size);
      t += gemm(OpKind::gemm_dgrad_f32, tc, H_, tp_.vocab) + gemm(t0 > 0 ? OpKind::gemm_wgrad : wgrad_, tc, H_, tp_.vocab);
    }
    t += p_.sync();
    if (tp_.size > 1) t += rs(T_ * H_ * 4);
    return t + op(OpKind::rmsnorm_bwd, Tl_, {H_});
  }
  // An offloaded layer input is copied out during the forward and back during the backward on a side stream; only
  // what the copy takes beyond the layer's forward compute shows.
  double offload_exposed(std::int64_t l, HostKind direction) {
    if (!r_.recompute.offloaded(l)) return 0;
    const double copy = p_.host(direction, static_cast<double>(Tl_ * H_ * 2));
    const double saved = exposed_comm_;
    const double compute = layer_forward();
    exposed_comm_ = saved;
    return std::max(0.0, copy - compute);
  }

  const RankPlan& r_;
  const ModelConfig& c_;
  StageRange stage_;
  OpPricer& p_;
  TpDims tp_;
  int cp_ = 1;
  std::int64_t B_ = 1, S_ = 0, T_ = 0, Tl_ = 0, H_ = 0, qkv_ = 0;
  OpKind wgrad_;  // the kind of the micro-batch's weight-gradient GEMMs (a long head's later chunks add to the first)
  bool fp8_ = false, fp8_delayed_ = false;
  double exposed_comm_ = 0;
};

// After the last micro-batch: the gradients' reduction (main stream), the gradient norm (read back), then AdamW on a
// side stream — the device's part and the host's (gradients down in fp32, the CPU's AdamW, bf16 weights up, pipelined
// piece by piece) — which the next forward waits for segment by segment: first the device's, then (the window's
// tail) the host's; on the device only the calibration's measured share of the overlap is hidden. Returns {exposed
// reduction, exposed optimizer}.
// The parameters and the optimizer's window are the rank's as the engines hold them (train/rank_plan.h).
std::pair<double, double> after_backward(const PlannedRun& in, const RankPlan& rank, double forward, OpPricer& p) {
  const int cp = rank.rank.cp;
  const StageRange& range = rank.stage;
  const std::int64_t params = rank.local.total_elements();
  const int shards = rank.shard_parts;
  const std::int64_t own = rank.shard.size;
  double reduce = 0, gather = 0;
  if (shards > 1) {  // the distributed optimizer: gradients reduce-scattered; bf16 weights gathered on the side stream
    reduce = p.collective({CollKind::reduce_scatter, params * 4, shards});
    gather = p.collective({CollKind::all_gather, params * 2, shards});
  } else {  // every rank the whole sums
    if (in.dp > 1) reduce += p.collective({CollKind::all_reduce, params * 4, in.dp});
    if (cp > 1) reduce += p.collective({CollKind::all_reduce, params * 4, cp});
  }
  // Tied embeddings over a pipeline: the first stage's embedding and the last's output projection are one tensor, its
  // fp32 gradient summed between the two before the norm (param_update.cpp finish_replicated_grads).
  if (in.pp > 1 && in.model.tie_word_embeddings && (range.first || range.last))
    reduce += p.collective({CollKind::all_reduce, in.model.vocab_size * in.model.hidden_size / in.tp * 4, 2});
  const double norm = p.compute({OpKind::sum_squares, own, {}}) + p.sync();
  const double f_host = std::clamp(in.recompute.offload_optimizer, 0.0, 1.0);
  const double host_n = static_cast<double>(own) * f_host;
  const auto device_n = static_cast<std::int64_t>(static_cast<double>(own) - host_n);
  const double device = (device_n > 0 ? p.compute({OpKind::adamw, device_n, {}}) : 0.0) + gather;
  const double host = host_n > 0 ? std::max({p.host(HostKind::copy_d2h, 4 * host_n), p.host(HostKind::cpu_adamw, host_n),
                                             p.host(HostKind::copy_h2d, 2 * host_n)})
                                  : 0.0;
  // The next forward's device part overlaps the optimizer; on the device the two share SMs and memory bandwidth, so
  // only the measured share of the overlapped time is hidden; the host's part runs beside it on the CPU. Each forward
  // segment waits for its own AdamW segment, so the first (the embedding's, at the front of the first stage) has no
  // forward beside it; a sharded optimizer's forward waits for all of it, gathered (param_update.cpp).
  const double window = forward * (1.0 - f_host);
  const std::int64_t rows = in.micro_batch * in.seq_len / cp;  // the forward GEMMs' rows (tensor parallel: all of them)
  const std::int64_t first_segment =
      shards > 1 ? device_n : range.first ? std::min(device_n, in.model.vocab_size * in.model.hidden_size / in.tp) : 0;
  const double overlappable =
      device_n > 0 ? device * static_cast<double>(device_n - first_segment) / static_cast<double>(device_n) : 0.0;
  const double device_exposed = device - p.optimizer_hidden_share(rows) * std::min(overlappable, window);
  return {reduce, norm + std::max({0.0, device_exposed, host - window})};
}

// --precision fp8, once per step, in the first forward: with kept copies each layer's four weights cast (their amaxes,
// both copies); cast per layer, only their amaxes (each use's cast: StageWalk::weight_casts).
double fp8_weight_casts(const RankPlan& rank, OpPricer& p) {
  if (!rank.fp8) return 0.0;
  const bool kept = !rank.recompute.fp8_weights_per_layer;
  double t = 0.0;  // layer by layer, so that the priced operations list every layer's casts
  for (std::int64_t l = 0; l < rank.stage.layers(); ++l) t += fp8_weight_cast_time(rank, p, kept, kept, true);
  return t;
}

// One end of a transfer in a 1F1B exchange: the link (activation or gradient, micro-batch, the lower stage of the pair)
// and which end posts it (0 the lower stage, 1 the upper) — the other end is its partner.
struct LinkEnd {
  int gradient, micro, lower, end;
};

// The transfer ends stage s posts at an exchange.
std::vector<LinkEnd> link_ends(const PipeOp& op, int s) {
  std::vector<LinkEnd> ends;
  if (op.send_fwd >= 0) ends.push_back({0, op.send_fwd, s, 0});
  if (op.recv_fwd >= 0) ends.push_back({0, op.recv_fwd, s - 1, 1});
  if (op.send_bwd >= 0) ends.push_back({1, op.send_bwd, s - 1, 1});
  if (op.recv_bwd >= 0) ends.push_back({1, op.recv_bwd, s, 0});
  return ends;
}

// The engine's blocking exchanges as a rendezvous: each end posts its transfers when its stage reaches the exchange;
// a transfer ends when both ends have posted, plus its own time, and the exchange when all of its transfers have.
class Rendezvous {
 public:
  Rendezvous(double activation_transfer, double gradient_transfer)
      : activation_(activation_transfer), gradient_(gradient_transfer) {}
  // When stage s's exchange `op`, reached at t, ends; none while a partner has not reached its side.
  std::optional<double> exchange(const PipeOp& op, int s, double t) {
    const std::vector<LinkEnd> ends = link_ends(op, s);
    for (const LinkEnd& l : ends) posted_.try_emplace({l.gradient, l.micro, l.lower, l.end}, t);
    double done = t;
    for (const LinkEnd& l : ends) {
      const auto other = posted_.find({l.gradient, l.micro, l.lower, 1 - l.end});
      if (other == posted_.end()) return std::nullopt;
      done = std::max(done, std::max(t, other->second) + (l.gradient ? gradient_ : activation_));
    }
    return done;
  }

 private:
  double activation_, gradient_;
  std::map<std::tuple<int, int, int, int>, double> posted_;  // (gradient?, micro, lower stage, end) → when posted
};

// Runs stage s's operations from `next` on, its clock at `t`, until one waits for a partner; whether any ran.
bool advance_stage(const std::vector<PipeOp>& list, std::size_t& next, double& t, double forward, double backward,
                   double per_op, int s, Rendezvous& rendezvous) {
  const std::size_t from = next;
  for (; next < list.size(); ++next) {
    const PipeOp& op = list[next];
    if (op.kind != PipeOp::exchange) {
      t += (op.kind == PipeOp::forward ? forward : backward) + per_op;
      continue;
    }
    const std::optional<double> done = rendezvous.exchange(op, s, t);
    if (!done) break;
    t = *done + per_op;
  }
  return next > from;
}

// One stage's micro-batch, the mean over the step's m: without pipeline stages the first writes the weight gradients
// and the other m − 1 add to them (each kind walked once); a pipeline's stages add in every one (their gradients are
// zeroed before the step).
struct StagePasses {
  double forward = 0, backward = 0, recompute = 0, exposed_comm = 0;
};
StagePasses stage_passes(const RankPlan& rank, std::int64_t m, OpPricer& pricer) {
  auto walk = [&](bool writes_grads) {
    StageWalk w(rank, pricer, writes_grads);
    StagePasses p;
    p.forward = w.forward(), p.backward = w.backward(p.recompute), p.exposed_comm = w.exposed_comm();
    return p;
  };
  if (rank.rank.pp > 1) return walk(false);
  const StagePasses first = walk(true);
  if (m == 1) return first;
  const StagePasses rest = walk(false);
  const double n = static_cast<double>(m);
  auto mean = [&](double a, double b) { return (a + (n - 1) * b) / n; };
  return {mean(first.forward, rest.forward), mean(first.backward, rest.backward),
          mean(first.recompute, rest.recompute), mean(first.exposed_comm, rest.exposed_comm)};
}

}  // namespace

double pipeline_makespan(const std::vector<double>& forward, const std::vector<double>& backward, int micro_batches,
                         double activation_transfer, double gradient_transfer, double per_op) {
  const auto p = forward.size();
  std::vector<std::vector<PipeOp>> ops(p);
  for (std::size_t s = 0; s < p; ++s) ops[s] = one_f_one_b(static_cast<int>(s), static_cast<int>(p), micro_batches);
  Rendezvous rendezvous(activation_transfer, gradient_transfer);
  std::vector<std::size_t> next(p, 0);
  std::vector<double> clock(p, 0.0);
  for (bool moved = true; moved;) {  // each stage as far as its partners let it, until none can move
    moved = false;
    for (std::size_t s = 0; s < p; ++s) {
      const int stage = static_cast<int>(s);
      moved |= advance_stage(ops[s], next[s], clock[s], forward[s], backward[s], per_op, stage, rendezvous);
    }
  }
  for (std::size_t s = 0; s < p; ++s)
    if (next[s] < ops[s].size())
      throw InternalError("pipeline_makespan: the 1F1B schedule did not complete (stage " + std::to_string(s) + ")");
  return *std::max_element(clock.begin(), clock.end());
}

StepTime walk_step(const PlannedRun& in, OpPricer& pricer) {
  const ModelConfig& c = in.model;
  const int cp = std::max(1, in.cp);
  StepTime out;
  out.micro_batches = std::max<std::int64_t>(1, in.micro_batches);
  double slowest = 0, tail = 0;
  std::vector<double> forwards, backwards;
  for (int s = 0; s < in.pp; ++s) {
    PlannedRun stage = in;
    stage.stage = s;
    const RankPlan rank = planned_rank(stage);  // checks the layout as the planner does
    const StagePasses pass = stage_passes(rank, out.micro_batches, pricer);
    const double f = pass.forward, b = pass.backward;
    forwards.push_back(f), backwards.push_back(b);
    if (f + b > slowest)
      slowest = f + b, out.forward = f, out.backward = b, out.recompute = pass.recompute, out.exposed_comm = pass.exposed_comm;
    const auto [reduce, after] = after_backward(in, rank, f, pricer);
    const double optimizer = after + fp8_weight_casts(rank, pricer);
    if (reduce + optimizer > tail) tail = reduce + optimizer, out.data_parallel = reduce, out.optimizer = optimizer;
  }
  // 1F1B as the engine runs it (pipeline_run.cpp): each stage's operations in one_f_one_b's order, every exchange a
  // blocking group of sends and receives (bf16 activations forward, fp32 gradients back) that ends when both ends of
  // each transfer have posted it, and the stream synchronised after every operation (a host round trip each). The
  // step's pipeline part is what that takes beyond the slowest stage's m passes.
  if (in.pp > 1) {
    const std::int64_t rows = in.micro_batch * in.seq_len / cp / in.tp;
    const double activation = pricer.collective({CollKind::send_recv, rows * c.hidden_size * 2, 2}),
                 gradient = pricer.collective({CollKind::send_recv, rows * c.hidden_size * 4, 2});
    const double makespan = pipeline_makespan(forwards, backwards, static_cast<int>(out.micro_batches), activation,
                                              gradient, pricer.sync());
    out.pipeline = std::max(0.0, makespan - static_cast<double>(out.micro_batches) * slowest);
  }
  out.step = static_cast<double>(out.micro_batches) * slowest + out.pipeline + out.data_parallel + out.optimizer;
  return out;
}

}  // namespace qwen3
