// Causal GQA attention through cuDNN's fused flash attention (see cudnn_attention.h). The forward and backward
// graphs are the operation patterns cuDNN's fused attention engines recognise, written out with the backend API
// (through gpu/cudnn_graph_builder.h):
//
//   forward   S = Q·Kᵀ (fp32) → ·scale → causal select → softmax (max, sub, exp, sum, div) → P (bf16) → O = P·V
//             Stats = max + log(sum), the natural-log sum-exp per query row, written to lse.
//   backward  Δ = rowsum(dO∘O) (fp32 workspace); P = exp(S·scale − Stats) under the causal mask;
//             dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P∘(dP − Δ)·scale; dK = dSᵀ·Q; dQ = dS·K (fp32 workspace, then bf16).
//             With GQA, dK and dV come from per-query-head products reduced over each group of heads.
//
// cuDNN sees every tensor as [batch, heads, seq, dim] with explicit strides, so the token-major layouts map onto
// it without copies; Kᵀ and Vᵀ are the same memory with the last two strides swapped.
#include "gpu/cudnn_attention.h"

#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/cudnn_graph_builder.h"

namespace qwen3::cuda {
namespace {

using cudnn::Dims;
using cudnn::GraphBuilder;
using cudnn::Tensor;

// Unique ids of the tensors the caller (or the workspace) provides; virtual tensors count up from kFirstVirtual.
enum Uid : std::int64_t {
  kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV,
  kScale, kNegInf, kOne,     // by-value scalars
  kSoftmaxSum, kdQAccum,     // fp32 workspace tensors of the backward
  kSeqLenQ, kSeqLenKV,       // int32 [B] sequence lengths of the padding-mask workaround
  kShiftKV, kShiftQ,         // by-value int32 key and query counts of the bottom-right causal diagonal
  kFirstVirtual = 100,
};

constexpr cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;

// Scores [B,H,S,S_kv] (row-major per head) and per-row statistics [B,H,S,1] (packed; the Stats tensor itself with
// the caller's q_batch_rows between sequences).
struct Layouts {
  Dims scores, scores_stride, scores_t, scores_t_stride, rows, rows_stride, stats_stride;
};
Layouts layouts(const SdpaShape& s) {
  const std::int64_t B = s.batch, H = s.heads, S = s.seq, K = s.keys(), R = s.stats_rows();
  return {{B, H, S, K},     {H * S * K, S * K, K, 1}, {B, H, K, S}, {H * S * K, S * K, 1, K},
          {B, H, S, 1},     {H * S, S, 1, 1},         {H * R, R, 1, 1}};
}

// Token-major memory (`rows` tokens of a sequence, `batch_rows` from one sequence to the next, `row_stride` elements
// per token) as cuDNN's [B, heads, rows, D]; `transposed` gives [B, heads, D, rows] over the same memory.
Dims token_major(const SdpaShape& s, std::int64_t heads, std::int64_t rows, bool transposed = false) {
  return transposed ? Dims{s.batch, heads, s.head_dim, rows} : Dims{s.batch, heads, rows, s.head_dim};
}
Dims token_major_stride(const SdpaShape& s, std::int64_t batch_rows, std::int64_t row_stride, bool transposed = false) {
  return transposed ? Dims{batch_rows * row_stride, s.head_dim, 1, row_stride}
                    : Dims{batch_rows * row_stride, s.head_dim, row_stride, 1};
}
Dims packed_stride(const Dims& d) { return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1}; }

// One attention graph under construction: the builder, the shape and its layouts, the tensors both directions
// read (Q, Kᵀ, Stats, the scale and −inf scalars, created in that order) and the operations on the score matrix.
struct AttentionGraph {
  explicit AttentionGraph(const SdpaShape& shape)
      : s(shape),
        l(layouts(shape)),
        q(query_tensor(kQ, s.q_stride)),
        kt(key_tensor(kK, s.k_stride, true)),
        stats(g.tensor(kStats, f32, l.rows, l.stats_stride, false)),
        scale(g.scalar(kScale, f32)),
        neg_inf(g.scalar(kNegInf, f32)) {}

  // A bf16 tensor the caller binds: token-major queries (heads, seq, q_rows) or keys (kv_heads, keys, kv_rows).
  Tensor query_tensor(Uid uid, std::int64_t row_stride) {
    return g.tensor(uid, bf16, token_major(s, s.heads, s.seq), token_major_stride(s, s.q_rows(), row_stride), false);
  }
  Tensor key_tensor(Uid uid, std::int64_t row_stride, bool transposed = false) {
    return g.tensor(uid, bf16, token_major(s, s.kv_heads, s.keys(), transposed),
                    token_major_stride(s, s.kv_rows(), row_stride, transposed), false);
  }
  // The bottom-right diagonal's key and query counts as by-value scalars (context parallelism: more keys than queries).
  void shift_by_value() {
    shift_keys = g.scalar(kShiftKV, CUDNN_DATA_INT32);
    shift_queries = g.scalar(kShiftQ, CUDNN_DATA_INT32);
  }

  // y = mode(x[, b]) as a new virtual tensor shaped like the scores, of `type` (also the compute precision).
  Tensor scores_op(cudnnPointwiseMode_t mode, Tensor x, Tensor b = nullptr, cudnnDataType_t type = f32,
                   std::int64_t axis = -1) {
    const Tensor y = g.virt(type, l.scores, l.scores_stride);
    g.pointwise(mode, type, x, b, y, nullptr, axis);
    return y;
  }
  // y = reduce(x) over each row of the scores: a new virtual fp32 [B,H,S,1].
  Tensor row_reduce(cudnnReduceTensorOp_t mode, Tensor x) {
    const Tensor y = g.virt(f32, l.rows, l.rows_stride);
    g.reduction(mode, x, y);
    return y;
  }
  // Q·Kᵀ·scale, with the matmul's m and n overridden by the padding mask's lengths when given.
  Tensor scaled_scores(Tensor m_override = nullptr, Tensor n_override = nullptr) {
    const Tensor scores = g.virt(f32, l.scores, l.scores_stride);
    g.matmul(q, kt, scores, m_override, n_override);
    return scores_op(CUDNN_POINTWISE_MUL, scores, scale);
  }
  // x where keep, else -inf.
  Tensor keep_or_neg_inf(Tensor x, Tensor keep) {
    const Tensor y = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, x, neg_inf, y, keep);
    return y;
  }
  Tensor causal_mask(Tensor x);
  Tensor padding_mask(Tensor x, Tensor seq_q, Tensor seq_kv);

  const SdpaShape& s;
  const Layouts l;
  GraphBuilder g{kFirstVirtual};
  const Tensor q, kt, stats, scale, neg_inf;
  Tensor shift_keys = nullptr, shift_queries = nullptr;  // the bottom-right diagonal's shift, when more keys than queries
};

// x where query row (+ key count − query count: the diagonal aligned bottom-right, when a shift is set) >= key
// column, else -inf: the causal mask of cuDNN's fused attention pattern.
Tensor AttentionGraph::causal_mask(Tensor x) {
  Tensor row = scores_op(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, CUDNN_DATA_INT32, 2);
  if (shift_keys != nullptr) {
    const Tensor plus_keys = scores_op(CUDNN_POINTWISE_ADD, row, shift_keys, CUDNN_DATA_INT32, 3);
    row = scores_op(CUDNN_POINTWISE_SUB, plus_keys, shift_queries, CUDNN_DATA_INT32, 3);
  }
  const Tensor col = scores_op(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, CUDNN_DATA_INT32, 3);
  return keep_or_neg_inf(x, scores_op(CUDNN_POINTWISE_CMP_GE, row, col, CUDNN_DATA_BOOLEAN));
}

// x where row < seq_len_q[b] and column < seq_len_kv[b], else -inf.
Tensor AttentionGraph::padding_mask(Tensor x, Tensor seq_q, Tensor seq_kv) {
  const Tensor row = scores_op(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, CUDNN_DATA_INT32, 2);
  const Tensor col = scores_op(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, CUDNN_DATA_INT32, 3);
  const Tensor row_in = scores_op(CUDNN_POINTWISE_CMP_LT, row, seq_q, CUDNN_DATA_BOOLEAN);
  const Tensor col_in = scores_op(CUDNN_POINTWISE_CMP_LT, col, seq_kv, CUDNN_DATA_BOOLEAN);
  return keep_or_neg_inf(x, scores_op(CUDNN_POINTWISE_LOGICAL_AND, row_in, col_in, CUDNN_DATA_BOOLEAN));
}

// The forward graph: O = softmax(causal(Q·Kᵀ·scale))·V, Stats = max + log(sum) of each score row.
void build_forward(AttentionGraph& a) {
  GraphBuilder& g = a.g;
  const SdpaShape& s = a.s;
  const Tensor v = a.key_tensor(kV, s.v_stride);
  const Tensor o = a.query_tensor(kO, s.o_stride);
  if (s.keys() != s.seq) a.shift_by_value();
  const Tensor masked = a.causal_mask(a.scaled_scores());
  const Tensor row_max = a.row_reduce(CUDNN_REDUCE_TENSOR_MAX, masked);
  const Tensor shifted = a.scores_op(CUDNN_POINTWISE_SUB, masked, row_max);
  const Tensor e = a.scores_op(CUDNN_POINTWISE_EXP, shifted);
  const Tensor row_sum = a.row_reduce(CUDNN_REDUCE_TENSOR_ADD, e);
  const Tensor log_sum = g.virt(f32, a.l.rows, a.l.rows_stride);
  g.pointwise(CUDNN_POINTWISE_LOG, f32, row_sum, nullptr, log_sum);
  g.pointwise(CUDNN_POINTWISE_ADD, f32, row_max, log_sum, a.stats);
  const Tensor probs = g.virt(bf16, a.l.scores, a.l.scores_stride);  // P enters the second matmul in bf16
  g.pointwise(CUDNN_POINTWISE_DIV, f32, e, row_sum, probs);
  g.matmul(probs, v, o);
}

// cuDNN up to 9.15 needs an explicit padding mask (with actual lengths S and S_kv) when a length is not a multiple of
// 128; cuDNN's own frontend adds the same workaround, and shifts a bottom-right diagonal by those lengths.
bool needs_padding_mask(const SdpaShape& s) {
  return (s.seq % 128 != 0 || s.keys() % 128 != 0) && cudnnGetVersion() <= 91500;
}

// Device int32 [2][B]: the padding mask's lengths, S for every sequence's queries, then S_kv for its keys.
std::int32_t* upload_sequence_lengths(const SdpaShape& s) {
  std::vector<std::int32_t> lens(static_cast<std::size_t>(2 * s.batch), static_cast<std::int32_t>(s.seq));
  std::fill(lens.begin() + s.batch, lens.end(), static_cast<std::int32_t>(s.keys()));
  std::int32_t* device = nullptr;
  CUDA_CHECK(cudaMalloc(&device, lens.size() * sizeof(std::int32_t)));
  CUDA_CHECK(cudaMemcpy(device, lens.data(), lens.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // a pageable copy may still be in flight; the plans run on other streams
  return device;
}

// The backward's lengths: the padding mask's int32 [B,1,1,1] tensors (null without it).
struct Lengths {
  Tensor seq_q = nullptr, seq_kv = nullptr;
};

// out = a·b over every query head (the gradient of keys or values); with GQA computed per query head, then summed
// over each kv head's group.
void kv_gradient(AttentionGraph& ag, Tensor a, Tensor b, Tensor out, const Lengths& len) {
  const SdpaShape& s = ag.s;
  if (s.heads == s.kv_heads) {
    ag.g.matmul(a, b, out, len.seq_kv, nullptr, len.seq_q);
    return;
  }
  const Dims full = token_major(s, s.heads, s.keys());  // per query head, before the GQA group sum
  const Tensor per_query_head = ag.g.virt(bf16, full, packed_stride(full));
  ag.g.matmul(a, b, per_query_head, len.seq_kv, nullptr, len.seq_q);
  ag.g.reduction(CUDNN_REDUCE_TENSOR_ADD, per_query_head, out);
}

// P = exp(Q·Kᵀ·scale − Stats) under the (padding and) causal mask, recomputed from the forward's statistics.
Tensor recomputed_probabilities(AttentionGraph& a, const Lengths& len) {
  const Tensor scaled = a.scaled_scores(len.seq_q, len.seq_kv);
  Tensor shifted = a.scores_op(CUDNN_POINTWISE_SUB, scaled, a.stats);
  if (len.seq_q != nullptr) shifted = a.padding_mask(shifted, len.seq_q, len.seq_kv);
  return a.scores_op(CUDNN_POINTWISE_EXP, a.causal_mask(shifted));
}

// The backward graph (see the top of this file); `pad`: with the padding mask (needs_padding_mask).
void build_backward(AttentionGraph& a, bool pad) {
  GraphBuilder& g = a.g;
  const SdpaShape& s = a.s;
  const Tensor vt = a.key_tensor(kV, s.v_stride, true);  // Vᵀ
  const Tensor o = a.query_tensor(kO, s.o_stride), dout = a.query_tensor(kdO, s.o_stride);
  const Tensor dq = a.query_tensor(kdQ, s.q_stride);
  const Tensor dk = a.key_tensor(kdK, s.k_stride), dv = a.key_tensor(kdV, s.v_stride);
  const Tensor one = g.scalar(kOne, f32);
  const Tensor softmax_sum = g.tensor(kSoftmaxSum, f32, a.l.rows, a.l.rows_stride, false);
  const Dims dq_dims = token_major(s, s.heads, s.seq);
  const Tensor dq_accum = g.tensor(kdQAccum, f32, dq_dims, packed_stride(dq_dims), false);
  Lengths len;
  if (pad) {
    const Dims d{s.batch, 1, 1, 1}, st{1, 1, 1, 1};
    len.seq_q = g.tensor(kSeqLenQ, CUDNN_DATA_INT32, d, st, false);
    len.seq_kv = g.tensor(kSeqLenKV, CUDNN_DATA_INT32, d, st, false);
  }
  if (s.keys() != s.seq && pad) a.shift_keys = len.seq_kv, a.shift_queries = len.seq_q;
  if (s.keys() != s.seq && !pad) a.shift_by_value();

  // Δ = rowsum(dO∘O)
  const Tensor dout_o = g.virt(f32, token_major(s, s.heads, s.seq), token_major_stride(s, s.q_rows(), s.o_stride));
  g.pointwise(CUDNN_POINTWISE_MUL, f32, dout, o, dout_o);
  const Tensor delta = a.row_reduce(CUDNN_REDUCE_TENSOR_ADD, dout_o);
  g.pointwise(CUDNN_POINTWISE_MUL, f32, delta, one, softmax_sum);

  const Tensor probs = recomputed_probabilities(a, len);
  // dV = Pᵀ·dO (summed over each group's query heads with GQA)
  const Tensor probs_t = g.virt(bf16, a.l.scores_t, a.l.scores_t_stride);
  g.reshape(probs, probs_t);
  kv_gradient(a, probs_t, dout, dv, len);

  // dS = P∘(dO·Vᵀ − Δ)·scale
  const Tensor dprobs = g.virt(f32, a.l.scores, a.l.scores_stride);
  g.matmul(dout, vt, dprobs, len.seq_q, len.seq_kv);
  const Tensor centered = a.scores_op(CUDNN_POINTWISE_SUB, dprobs, softmax_sum);
  const Tensor weighted = a.scores_op(CUDNN_POINTWISE_MUL, centered, probs);
  const Tensor dscores = a.scores_op(CUDNN_POINTWISE_MUL, weighted, a.scale);

  // dK = dSᵀ·Q (group-summed with GQA)
  const Tensor dscores_t = g.virt(bf16, a.l.scores_t, a.l.scores_t_stride);
  g.reshape(dscores, dscores_t);
  kv_gradient(a, dscores_t, a.q, dk, len);

  // dQ = dS·K, accumulated in fp32 workspace, then rounded into dq
  const Tensor k = g.virt(bf16, token_major(s, s.kv_heads, s.keys()), token_major_stride(s, s.kv_rows(), s.k_stride));
  g.reshape(a.kt, k);
  g.matmul(dscores, k, dq_accum, len.seq_q, nullptr, len.seq_kv);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, f32, dq_accum, nullptr, dq);
}

std::string describe(const SdpaShape& s) {
  return "B=" + std::to_string(s.batch) + " S=" + std::to_string(s.seq) +
         (s.keys() != s.seq ? " S_kv=" + std::to_string(s.keys()) : "") + " H=" + std::to_string(s.heads) +
         " KVH=" + std::to_string(s.kv_heads) + " D=" + std::to_string(s.head_dim) +
         " strides q/k/v/o=" + std::to_string(s.q_stride) + "/" + std::to_string(s.k_stride) + "/" +
         std::to_string(s.v_stride) + "/" + std::to_string(s.o_stride);
}

void check_shape(const SdpaShape& s) {
  const bool ok = s.batch > 0 && s.seq > 0 && s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0 &&
                  s.head_dim > 0 && s.head_dim % 8 == 0 && s.head_dim <= 256 && s.q_stride % 8 == 0 &&
                  s.k_stride % 8 == 0 && s.v_stride % 8 == 0 && s.o_stride % 8 == 0 &&
                  s.q_stride >= s.heads * s.head_dim && s.o_stride >= s.heads * s.head_dim &&
                  s.k_stride >= s.kv_heads * s.head_dim && s.v_stride >= s.kv_heads * s.head_dim &&
                  s.keys() >= s.seq && s.q_rows() >= s.seq && s.kv_rows() >= s.keys() &&
                  s.stats_rows() >= s.seq &&
                  s.keys() <= std::numeric_limits<std::int32_t>::max();
  if (!ok)
    throw InternalError("cuDNN attention: unsupported shape " + describe(s) +
                        " (needs heads % kv_heads == 0, head_dim % 8 == 0 and <= 256, row strides multiples of 8 "
                        "covering their heads, at least as many keys as queries)");
}

void check_aligned(const void* p, const char* name) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
    throw InternalError(std::string("cuDNN attention: ") + name + " is not 16-byte aligned");
}

std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

}  // namespace

struct CudnnAttention::Plan {
  cudnn::Finalized finalized;
  std::size_t softmax_sum_offset = 0, dq_accum_offset = 0;  // backward: fp32 tensors after cuDNN's own workspace
  std::size_t total_workspace = 0;
  // By-value scalars: the variant pack points at these.
  float scale = 0, neg_inf = -std::numeric_limits<float>::infinity(), one = 1;
  std::int32_t keys = 0, queries = 0;  // the bottom-right diagonal's shift (context parallelism), when by value
  std::int32_t* seq_lens = nullptr;  // device [2][B] lengths for the padding-mask workaround, or null
  ~Plan() {
    if (seq_lens != nullptr) cudaFree(seq_lens);
  }
  // Binds what the masks read: the padding mask's lengths when the graph has it, else the bottom-right diagonal's
  // shift by value when there are more keys than queries.
  void bind_masks(const SdpaShape& shape, std::vector<std::int64_t>& uids, std::vector<void*>& ptrs) {
    if (seq_lens != nullptr) {
      uids.insert(uids.end(), {kSeqLenQ, kSeqLenKV});
      ptrs.insert(ptrs.end(), {seq_lens, seq_lens + shape.batch});
    } else if (shape.keys() != shape.seq) {
      uids.insert(uids.end(), {kShiftKV, kShiftQ});
      ptrs.insert(ptrs.end(), {&keys, &queries});
    }
  }
};

CudnnAttention::CudnnAttention() {
  cudnnHandle_t h = nullptr;
  CUDNN_CHECK(cudnnCreate(&h));
  handle_ = h;
}

CudnnAttention::~CudnnAttention() {
  plans_.clear();
  if (handle_ != nullptr) cudnnDestroy(handle_);
}

bool CudnnAttention::available() {
  static const bool ok = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      cudaGetLastError();  // leave no sticky error for later calls
      return false;
    }
    cudnnHandle_t h = nullptr;
    if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) return false;
    cudnnDestroy(h);
    return true;
  }();
  return ok;
}

CudnnAttention::Plan& CudnnAttention::plan(const SdpaShape& s, bool backward) {
  const Key key{backward, {s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.q_stride, s.k_stride, s.v_stride,
                           s.o_stride, s.keys(), s.q_rows(), s.kv_rows(), s.stats_rows()}};
  if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
  check_shape(s);

  auto p = std::make_unique<Plan>();
  p->scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.head_dim)));
  p->keys = static_cast<std::int32_t>(s.keys());
  p->queries = static_cast<std::int32_t>(s.seq);
  AttentionGraph graph(s);
  if (!backward) {
    build_forward(graph);
    p->finalized = cudnn::finalize_plan(handle_, graph.g, "causal attention forward (" + describe(s) + ")");
    p->total_workspace = p->finalized.workspace;
  } else {
    const bool pad = needs_padding_mask(s);
    build_backward(graph, pad);
    if (pad) p->seq_lens = upload_sequence_lengths(s);
    p->finalized = cudnn::finalize_plan(handle_, graph.g, "causal attention backward (" + describe(s) + ")");
    // Δ and the fp32 dQ accumulator follow cuDNN's own workspace.
    const std::size_t rows = static_cast<std::size_t>(s.batch * s.heads * s.seq);
    p->softmax_sum_offset = align_up(p->finalized.workspace);
    p->dq_accum_offset = align_up(p->softmax_sum_offset + rows * sizeof(float));
    p->total_workspace = p->dq_accum_offset + rows * static_cast<std::size_t>(s.head_dim) * sizeof(float);
  }
  return *plans_.emplace(key, std::move(p)).first->second;
}

std::size_t CudnnAttention::workspace_bytes(const SdpaShape& shape) {
  return std::max(plan(shape, false).total_workspace, plan(shape, true).total_workspace);
}

void CudnnAttention::forward(const void* q, const void* k, const void* v, void* o, float* lse, const SdpaShape& shape,
                             void* workspace, cudaStream_t stream) {
  Plan& p = plan(shape, false);
  const std::pair<const void*, const char*> operands[] = {{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}, {lse, "lse"}};
  for (const auto& [ptr, name] : operands) check_aligned(ptr, name);
  if (p.total_workspace > 0) check_aligned(workspace, "workspace");
  std::vector<std::int64_t> uids{kQ, kK, kV, kO, kStats, kScale, kNegInf};
  std::vector<void*> ptrs{const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), o, lse, &p.scale,
                          &p.neg_inf};
  p.bind_masks(shape, uids, ptrs);
  cudnn::execute(handle_, p.finalized.exec, uids, ptrs, workspace, stream);
}

void CudnnAttention::backward(const void* q, const void* k, const void* v, const void* o, const void* dout,
                              const float* lse, void* dq, void* dk, void* dv, const SdpaShape& shape, void* workspace,
                              cudaStream_t stream) {
  Plan& p = plan(shape, true);
  const std::pair<const void*, const char*> operands[] = {{q, "q"},   {k, "k"},     {v, "v"},   {o, "o"},
                                                          {dout, "dout"}, {lse, "lse"}, {dq, "dq"}, {dk, "dk"},
                                                          {dv, "dv"}, {workspace, "workspace"}};
  for (const auto& [ptr, name] : operands) check_aligned(ptr, name);
  auto* ws = static_cast<unsigned char*>(workspace);
  std::vector<std::int64_t> uids{kQ, kK, kV, kO, kdO, kStats, kdQ, kdK, kdV, kScale, kNegInf, kOne, kSoftmaxSum,
                                 kdQAccum};
  std::vector<void*> ptrs{const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), const_cast<void*>(o),
                          const_cast<void*>(dout), const_cast<float*>(lse), dq, dk, dv, &p.scale, &p.neg_inf, &p.one,
                          ws + p.softmax_sum_offset, ws + p.dq_accum_offset};
  p.bind_masks(shape, uids, ptrs);
  cudnn::execute(handle_, p.finalized.exec, uids, ptrs, workspace, stream);
}

}  // namespace qwen3::cuda
