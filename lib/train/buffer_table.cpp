// The CUDA engine's buffers as data (see buffer_table.h).
#include "train/buffer_table.h"

#include <algorithm>

#include "core/error.h"
#include "model/sequence_layout.h"  // lse_rows
#include "ops/adamw_chunks.h"
#include "ops/attention_workspace.h"
#include "train/optimizer_segments.h"

namespace qwen3 {
namespace {

// The table being built, with the sizes every part reads.
struct Builder {
  const RankPlan& in;
  std::int64_t attention_workspace_bytes;  // cuDNN's own figure (engine) or estimated_attention_workspace
  std::vector<BufferSpec> out;
  std::int64_t T, Tl, H, I, qd, kvd, V, nh, nkv, chunk;

  int add(Buf id, BufferCategory c, Dtype t, std::int64_t n, const std::string& what, int slot = 0, int layer = -1) {
    out.push_back({id, slot, layer, c, t, n, -1, what});
    return static_cast<int>(out.size()) - 1;
  }
  // An entry that reuses the memory of entry `owner`.
  void share(Buf id, int owner, int slot, int layer) {
    const BufferSpec& o = out[static_cast<std::size_t>(owner)];
    out.push_back({id, slot, layer, o.category, o.dtype, o.elements, owner, o.what});
  }
};

// Weights, gradients and the optimizer: the flat buffers ([padded]; the fp32 state the shard window's part, split
// between the device and pinned host memory by --offload-optimizer).
void add_parameter_state(Builder& b) {
  const auto& in = b.in;
  const std::string of_shard =
      in.shard_parts > 1 ? " (1/" + std::to_string(in.shard_parts) + " shard, distributed optimizer)" : "";
  const std::int64_t dev = in.shard.host_begin(in.recompute.offload_optimizer), host = in.shard.size - dev;
  const std::string on_device = host > 0 ? " on the device" : "";
  b.add(Buf::master_weights, BufferCategory::weights, Dtype::f32, dev, "fp32 master weights" + of_shard + on_device);
  b.add(Buf::compute_weights, BufferCategory::weights, Dtype::bf16, in.shard.padded, "bf16 compute weights");
  b.add(Buf::gradients, BufferCategory::gradients, Dtype::f32, in.shard.padded, "fp32 gradients");
  const std::string moments = "AdamW moments (fp32 m, v)" + of_shard + on_device;
  b.add(Buf::adam_m, BufferCategory::optimizer_state, Dtype::f32, dev, moments);
  b.add(Buf::adam_v, BufferCategory::optimizer_state, Dtype::f32, dev, moments);
  const auto chunks = optimizer_segments(in.local, in.model.num_layers, in.shard, dev).chunks.size();
  b.add(Buf::adamw_chunks, BufferCategory::optimizer_state, Dtype::adamw_chunk, static_cast<std::int64_t>(chunks),
        "AdamW chunk table");
  for (const BufferSpec& s : host_optimizer_buffers(host)) b.out.push_back(s);
}

// The per-layer fields of LayerActs with their element counts (v only for the own attention kernels).
struct LayerField {
  Buf id;
  Dtype dtype;
  std::int64_t elements;
};
std::vector<LayerField> layer_fields(const Builder& b) {
  const auto& in = b.in;
  const std::int64_t T = b.T, Tl = b.Tl, H = b.H;
  std::vector<LayerField> f = {{Buf::qkv, Dtype::bf16, T * (b.qd + 2 * b.kvd)}, {Buf::q, Dtype::bf16, T * b.qd},
                               {Buf::k, Dtype::bf16, T * b.kvd}, {Buf::h_in, Dtype::bf16, T * H},
                               {Buf::h_mid, Dtype::bf16, T * H}};
  if (!in.cudnn_attention) f.push_back({Buf::v, Dtype::bf16, T * b.kvd});
  const std::vector<LayerField> rest = {{Buf::attn, Dtype::bf16, T * b.qd}, {Buf::x_mid, Dtype::bf16, Tl * H},
                                        {Buf::gate_up, Dtype::bf16, T * 2 * b.I}, {Buf::rstd_in, Dtype::f32, Tl},
                                        {Buf::rstd_q, Dtype::f32, T * b.nh}, {Buf::rstd_k, Dtype::f32, T * b.nkv},
                                        {Buf::lse, Dtype::f32, in.max_batch * b.nh * lse_rows(in.max_seq, in.rank.cp)},
                                        {Buf::rstd_mid, Dtype::f32, Tl}};
  f.insert(f.end(), rest.begin(), rest.end());
  return f;
}

bool selective_part(Buf id) { return id == Buf::q || id == Buf::k || id == Buf::h_in || id == Buf::h_mid; }

constexpr const char* kRecomputedLayer = "one layer recomputed in the backward (its input read, its output to scratch)";

// What the plan calls a layer's field: by the layer's recomputation and whether selective recomputation drops it.
std::string layer_label(bool full, bool selective, bool dropped_by_selective) {
  if (full) return kRecomputedLayer;
  if (selective && dropped_by_selective) return "norm outputs and q, k of the layer being recomputed (selective)";
  if (selective) return "layer activations, selective recomputation (inputs, q|k|v, attention, gate|up)";
  return "layer activations (inputs, q|k|v, attention, norms, gate|up)";
}

// The input a layer keeps: its own buffer, or (offloaded) one of two device buffers on the way to or from the host.
void add_layer_input(Builder& b, int slot, int index, int ring[2]) {
  const auto& rc = b.in.recompute;
  const auto A = BufferCategory::activations;
  if (rc.offloaded(index)) {
    int& r = ring[index % 2];
    if (r < 0)
      r = b.add(Buf::offload_ring, A, Dtype::bf16, b.Tl * b.H, "two device buffers for the inputs moving to and from the host",
                index % 2);
    b.share(Buf::x_in, r, slot, index);
  } else {
    b.add(Buf::x_in, A, Dtype::bf16, b.Tl * b.H,
          rc.full(index) ? "layer input (recomputation)" : layer_label(false, rc.selective(index), false), slot, index);
  }
}

// What every layer keeps for its backward (engine: LayerActs), with the recomputation policy's sharing: a fully
// recomputed layer keeps its input, the rest of its fields are one shared layer's (refilled before each backward);
// selective recomputation shares the norm outputs and q, k of one layer.
void add_layer_activations(Builder& b) {
  const auto& in = b.in;
  const auto& rc = in.recompute;
  const auto A = BufferCategory::activations;
  const auto fields = layer_fields(b);
  std::vector<int> full_owner(fields.size(), -1), sel_owner(fields.size(), -1);
  int ring[2] = {-1, -1};
  for (int slot = 0; slot < in.slots; ++slot)
    for (int index = 0; index < in.stage.layers(); ++index) {
      add_layer_input(b, slot, index, ring);
      const bool full = rc.full(index), sel = rc.selective(index);
      for (std::size_t f = 0; f < fields.size(); ++f) {
        const LayerField& x = fields[f];
        const bool shared = full || (sel && selective_part(x.id));
        int& owner = full ? full_owner[f] : sel_owner[f];
        if (shared && owner >= 0) {
          b.share(x.id, owner, slot, index);
          continue;
        }
        const int e = b.add(x.id, A, x.dtype, x.elements, layer_label(full, sel, selective_part(x.id)), slot, index);
        if (shared) owner = e;
      }
    }
  if (rc.full_layers(in.stage.layers()) > 0)
    b.add(Buf::recompute_out, A, Dtype::bf16, b.Tl * b.H, kRecomputedLayer);
  if (in.recompute.offload_inputs && rc.full_layers(in.stage.layers()) > 1) {
    const std::int64_t offloaded = rc.full_layers(in.stage.layers()) - 1;  // every recomputed layer but the stage's first
    b.add(Buf::host_inputs, BufferCategory::host_pinned, Dtype::bf16, in.slots * offloaded * b.Tl * b.H,
          "offloaded layer inputs (pinned host memory)");
  }
}

// A pipeline stage's output (per slot) and the last stage's final norm.
void add_stage_activations(Builder& b) {
  const auto& in = b.in;
  const auto A = BufferCategory::activations;
  if (!in.stage.last)
    for (int slot = 0; slot < in.slots; ++slot)
      b.add(Buf::stage_out, A, Dtype::bf16, b.Tl * b.H, "stage output (sent to the next stage)", slot);
  if (!in.stage.last) return;
  const std::string what = "final hidden state and norm";
  b.add(Buf::x_final, A, Dtype::bf16, b.Tl * b.H, what);
  b.add(Buf::h_final, A, Dtype::bf16, b.T * b.H, what);
  b.add(Buf::rstd_final, A, Dtype::f32, b.Tl, what);
}

// Scratch of one block's forward and backward, the loss, the token ids and the RoPE tables.
void add_step_workspace(Builder& b) {
  const auto& in = b.in;
  const auto W = BufferCategory::workspace;
  const std::int64_t T = b.T, Tl = b.Tl, H = b.H, I = b.I, qd = b.qd, kvd = b.kvd;
  const std::string scratch = "backward scratch (gradients of every block)";
  b.add(Buf::swiglu_scratch, W, Dtype::bf16, T * I, scratch);
  if (in.stage.last) {
    const std::string loss = "logits of one token chunk (" + std::to_string(b.chunk) + " tokens) and per-token loss";
    b.add(Buf::logits, W, Dtype::bf16, b.chunk * b.V, loss);
    b.add(Buf::row_loss, W, Dtype::f32, T, loss);
  }
  b.add(Buf::dres, W, Dtype::f32, Tl * H, scratch);
  b.add(Buf::dh, W, Dtype::f32, T * H, scratch);
  b.add(Buf::dy_bf16, W, Dtype::bf16, T * std::max(H, qd), scratch);
  for (Buf id : {Buf::dattn, Buf::dq}) b.add(id, W, Dtype::bf16, T * qd, scratch);
  for (Buf id : {Buf::dk, Buf::dv}) b.add(id, W, Dtype::bf16, T * kvd, scratch);
  b.add(Buf::dqkv, W, Dtype::bf16, T * (qd + 2 * kvd), scratch);
  b.add(Buf::dact, W, Dtype::bf16, T * I, scratch);
  b.add(Buf::dgate_up, W, Dtype::bf16, T * 2 * I, scratch);
  const std::string rope = "RoPE tables, token ids, labels";
  for (Buf id : {Buf::rope_cos, Buf::rope_sin}) b.add(id, W, Dtype::f32, in.max_seq / in.rank.cp * (in.model.head_dim / 2), rope);
  if (in.stage.first) b.add(Buf::tokens, W, Dtype::i32, T * in.slots, rope);
  if (in.stage.last) b.add(Buf::labels, W, Dtype::i32, T, rope);
}

// Context parallelism: this rank's keys|values, every rank's (rank order, sequence order) and two gradient buffers.
void add_context_parallel(Builder& b) {
  if (b.in.rank.cp < 2) return;
  const std::string what = "context-parallel keys|values of the whole sequence and their gradients (one layer at a time)";
  const std::int64_t kv2 = 2 * b.kvd, cp = b.in.rank.cp;
  b.add(Buf::cp_kv_local, BufferCategory::workspace, Dtype::bf16, b.T * kv2, what);
  for (Buf id : {Buf::cp_kv_ranks, Buf::cp_kv_full, Buf::cp_dkv, Buf::cp_dkv_first})
    b.add(id, BufferCategory::workspace, Dtype::bf16, cp * b.T * kv2, what);
}

// Sequence parallelism (tp > 1): the norm output and reduce-scattered rows [Tl, H], row-parallel partial sums and
// two gathered output gradients [T, H], the reduce-scattered and the gathered fp32 gradient, the vocabulary-parallel
// cross-entropy statistics.
void add_sequence_parallel(Builder& b) {
  const auto& in = b.in;
  if (in.tp.size < 2) return;
  const auto W = BufferCategory::workspace;
  const std::string what = "sequence-parallel buffers";
  const std::int64_t T = b.T, Tl = b.Tl, H = b.H;
  b.add(Buf::sp_h_local, W, Dtype::bf16, Tl * H, what);
  b.add(Buf::sp_partial, W, Dtype::bf16, T * H, what);
  b.add(Buf::sp_sum_local, W, Dtype::bf16, Tl * H, what);
  for (int i = 0; i < 2; ++i) b.add(Buf::sp_dy_gathered, W, Dtype::bf16, T * H, what, i);
  b.add(Buf::sp_dh_local, W, Dtype::f32, Tl * H, what);
  if (in.stage.first) b.add(Buf::sp_dres_full, W, Dtype::f32, T * H, what);
  if (in.stage.last)
    for (Buf id : {Buf::ce_max, Buf::ce_max_global, Buf::ce_sum_exp, Buf::ce_target}) b.add(id, W, Dtype::f32, b.chunk, what);
}

// --precision fp8: each layer's FP8 weights (cast once per optimizer step, kept) or one layer's (cast per layer and
// use: model/memory_policy.h), the scale table, and the casts' scratch: an activation operand, a gradient operand,
// and two transposed gradients (a block's output gradient and the one inside it, both alive until the block's weight
// gradients).
void add_fp8(Builder& b) {
  if (!b.in.fp8) return;
  const Fp8Layout f = fp8_layout(b.in);
  const bool per_layer = b.in.recompute.fp8_weights_per_layer;
  for (int index = 0; index < (per_layer ? 1 : b.in.stage.layers()); ++index)
    b.add(Buf::fp8_weights, BufferCategory::weights, Dtype::byte, f.layer_bytes,
          per_layer ? "FP8 weights (E4M3, and transposed) of the layer running, cast per layer"
                    : "FP8 weights (E4M3, and transposed) of the linear layers",
          0, index);
  const std::string what = "FP8 casts of the GEMMs' activations and gradients, and their scales";
  b.add(Buf::fp8_scales, BufferCategory::workspace, Dtype::f32, f.scale_floats(), what);
  b.add(Buf::fp8_act, BufferCategory::workspace, Dtype::byte, f.act_bytes, what);
  b.add(Buf::fp8_grad, BufferCategory::workspace, Dtype::byte, f.grad_bytes, what);
  for (int slot = 0; slot < 2; ++slot) b.add(Buf::fp8_grad_t, BufferCategory::workspace, Dtype::byte, f.grad_bytes, what, slot);
}

// Attention's backward workspace, the reductions' partials and result, cuBLASLt's workspace.
void add_library_workspace(Builder& b) {
  const auto W = BufferCategory::workspace;
  b.add(Buf::attention_workspace, W, Dtype::byte, b.attention_workspace_bytes,
        b.in.cudnn_attention ? "cuDNN attention workspace" : "attention workspace");
  const std::string what = "reductions and cuBLASLt workspace";
  b.add(Buf::reduce_partials, W, Dtype::f64, kNormBlocks, what);
  b.add(Buf::reduce_result, W, Dtype::f64, 1, what);
  b.add(Buf::gemm_workspace, W, Dtype::byte, kGemmWorkspaceBytes, what);
}

}  // namespace

bool double_buffered(Buf id) {
  return id == Buf::offload_ring || id == Buf::sp_dy_gathered || id == Buf::host_grad_stage ||
         id == Buf::host_weight_stage || id == Buf::fp8_grad_t;
}

std::int64_t dtype_bytes(Dtype t) {
  switch (t) {
    case Dtype::bf16: return 2;
    case Dtype::f32: case Dtype::i32: return 4;
    case Dtype::f64: return 8;
    case Dtype::byte: return 1;
    case Dtype::adamw_chunk: return static_cast<std::int64_t>(sizeof(AdamWChunk));
  }
  return 0;
}

std::int64_t estimated_attention_workspace(const RankPlan& in) {
  const std::int64_t B = in.max_batch, H = in.tp.heads, D = in.model.head_dim;
  if (!in.cudnn_attention) return static_cast<std::int64_t>(own_attention_backward_workspace_bytes(B, in.max_seq, H, D));
  // cuDNN's backward: an fp32 dQ accumulator over the query rows, as much again per key/value row, the query rows'
  // statistics, and 256 bytes of its own. One call per sequence without context parallelism (as many key/value rows
  // as query rows); with it, this rank's two chunks of S / 2cp query rows each, against every key up to the chunk's
  // end: the later chunk (2cp − 1 − r) has (2cp − r) chunks of keys, the most of rank r's two calls. Measured by the
  // engine (cuDNN 9, H100 and H200): 24 single-GPU runs of 2026-12-03 and 2026-12-06, 0.6B to 14B at 1,024 to 32,768
  // tokens, every one exact; the key rows' term fitted on the tiny model at cp 2 (H100, 2026-12-06), then checked on
  // the two recorded 1.7B runs at 131,072 tokens, cp 2, 2 × H200 (docs/prediction.md rows 25, 27): both ranks exact.
  constexpr std::int64_t kCudnnOwnScratch = 256;
  const std::int64_t q_rows = in.rank.cp > 1 ? in.max_seq / (2 * in.rank.cp) : in.max_seq;
  const std::int64_t kv_rows = in.rank.cp > 1 ? q_rows * (2 * in.rank.cp - in.rank.cp_rank) : in.max_seq;
  return 4 * B * H * D * (q_rows + kv_rows) + 4 * B * H * q_rows + kCudnnOwnScratch;
}

std::vector<BufferSpec> host_optimizer_buffers(std::int64_t host) {
  if (host == 0) return {};
  const auto H = BufferCategory::host_pinned;
  const std::string state = "fp32 master weights and AdamW moments on the host (--offload-optimizer)";
  std::vector<BufferSpec> out;
  for (Buf id : {Buf::host_master, Buf::host_adam_m, Buf::host_adam_v}) out.push_back({id, 0, -1, H, Dtype::f32, host, -1, state});
  const std::int64_t piece = std::min(host, kHostAdamWPieceElements);
  const std::string staging = "gradients down, bf16 weights up: the host optimizer's two staging slots";
  for (int slot = 0; slot < 2; ++slot) {
    out.push_back({Buf::host_grad_stage, slot, -1, H, Dtype::f32, piece, -1, staging});
    out.push_back({Buf::host_weight_stage, slot, -1, H, Dtype::bf16, piece, -1, staging});
  }
  return out;
}

Fp8Layout fp8_layout(const RankPlan& rank) {
  return fp8_layout(rank.tp, rank.model.hidden_size, rank.tokens, rank.stage.layers(), rank.slots);
}

std::vector<BufferSpec> buffer_table(const RankPlan& in, std::int64_t attention_workspace_bytes) {
  Builder b{in, attention_workspace_bytes, {}, in.tokens, in.seq_tokens, in.model.hidden_size, in.tp.inter, in.tp.q_dim,
            in.tp.kv_dim, in.tp.vocab, in.tp.heads, in.tp.kv_heads, in.logit_chunk};
  add_parameter_state(b);
  add_fp8(b);
  add_layer_activations(b);
  add_stage_activations(b);
  add_step_workspace(b);
  add_context_parallel(b);
  add_sequence_parallel(b);
  add_library_workspace(b);
  return std::move(b.out);
}

std::vector<std::int64_t> device_bytes_by_category(const std::vector<BufferSpec>& table) {
  std::vector<std::int64_t> out(kDeviceCategories, 0);
  for (const auto& s : table)
    if (s.category != BufferCategory::host_pinned) out[static_cast<std::size_t>(s.category)] += s.bytes();
  return out;
}

std::int64_t host_pinned_bytes(const std::vector<BufferSpec>& table) {
  std::int64_t n = 0;
  for (const auto& s : table)
    if (s.category == BufferCategory::host_pinned) n += s.bytes();
  return n;
}

}  // namespace qwen3
