// Causal GQA attention through cuDNN's fused flash attention (see cudnn_attention.h). The forward and backward
// graphs are the operation patterns cuDNN's fused attention engines recognise, written out with the backend API:
//
//   forward   S = Q·Kᵀ (fp32) → ·scale → causal select → softmax (max, sub, exp, sum, div) → P (bf16) → O = P·V
//             Stats = max + log(sum), the natural-log sum-exp per query row, written to lse.
//   backward  Δ = rowsum(dO∘O) (fp32 workspace); P = exp(S·scale − Stats) under the causal mask;
//             dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P∘(dP − Δ)·scale; dK = dSᵀ·Q; dQ = dS·K (fp32 workspace, then bf16).
//             With GQA, dK and dV come from per-query-head products reduced over each group of heads.
//
// cuDNN sees every tensor as [batch, heads, seq, dim] with explicit strides, so the token-major layouts map onto
// it without copies; Kᵀ and Vᵀ are the same memory with the last two strides swapped.
#include "cuda/cudnn_attention.h"

#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "cuda/check.h"

namespace qwen3::cuda {
namespace {

[[noreturn]] void throw_cudnn_error(cudnnStatus_t st, const char* call, const char* file, int line) {
  std::string msg = std::string("cuDNN ") + cudnnGetErrorString(st) + " (" + std::to_string(static_cast<int>(st)) +
                    ") from " + call + " at " + file + ":" + std::to_string(line);
  char detail[1024] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  if (detail[0] != '\0') msg += ": " + std::string(detail);
  throw InternalError(msg);
}

#define CUDNN_CHECK(call)                                                                                   \
  do {                                                                                                      \
    const cudnnStatus_t qwen3_st_ = (call);                                                                 \
    if (qwen3_st_ != CUDNN_STATUS_SUCCESS) ::qwen3::cuda::throw_cudnn_error(qwen3_st_, #call, __FILE__, __LINE__); \
  } while (0)

std::string last_cudnn_error() {
  char detail[1024] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  return detail;
}

// An owned backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }
  ~Desc() {
    if (d_ != nullptr) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// Unique ids of the tensors the caller (or the workspace) provides; virtual tensors count up from kFirstVirtual.
enum Uid : std::int64_t {
  kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV,
  kScale, kNegInf, kOne,     // by-value scalars
  kSoftmaxSum, kdQAccum,     // fp32 workspace tensors of the backward
  kSeqLenQ, kSeqLenKV,       // int32 [B] sequence lengths of the padding-mask workaround
  kShiftKV, kShiftQ,         // by-value int32 key and query counts of the bottom-right causal diagonal
  kFirstVirtual = 100,
};

using Dims = std::array<std::int64_t, 4>;

// Accumulates the descriptors of one operation graph (kept alive with the plan) and its operations.
class GraphBuilder {
 public:
  cudnnBackendDescriptor_t tensor(std::int64_t uid, cudnnDataType_t type, const Dims& dim, const Dims& stride,
                                  bool is_virtual, bool by_value = false) {
    Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const std::int64_t alignment = 16;
    CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type));
    CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim.data()));
    CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, stride.data()));
    CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
    CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
    if (by_value)
      CUDNN_CHECK(cudnnBackendSetAttribute(t.get(), CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value));
    CUDNN_CHECK(cudnnBackendFinalize(t.get()));
    return keep(std::move(t));
  }
  cudnnBackendDescriptor_t virt(cudnnDataType_t type, const Dims& dim, const Dims& stride) {
    return tensor(next_virtual_++, type, dim, stride, true);
  }
  // A host scalar passed by value at execution ([1,1,1,1], broadcast against anything).
  cudnnBackendDescriptor_t scalar(std::int64_t uid, cudnnDataType_t type) {
    return tensor(uid, type, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x[, b][, t]); b is the second operand, t the selector of BINARY_SELECT (y = t ? x : b).
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t t = nullptr,
                 std::int64_t axis = -1) {
    Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    CUDNN_CHECK(cudnnBackendSetAttribute(pw.get(), CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    CUDNN_CHECK(cudnnBackendSetAttribute(pw.get(), CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision));
    if (axis >= 0)
      CUDNN_CHECK(cudnnBackendSetAttribute(pw.get(), CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis));
    CUDNN_CHECK(cudnnBackendFinalize(pw.get()));
    cudnnBackendDescriptor_t pw_raw = keep(std::move(pw));

    Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw_raw));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &x));
    if (b != nullptr)
      CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    if (t != nullptr)
      CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_TDESC,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &y));
    CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    ops_.push_back(keep(std::move(op)));
  }

  // c = a·b over the last two dimensions (fp32 accumulate), batched over the first two; b's batch dimensions may be
  // smaller by a whole factor (GQA). The overrides, when given, are int32 [B,1,1,1] actual lengths of m, n, k.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
              cudnnBackendDescriptor_t m_override = nullptr, cudnnBackendDescriptor_t n_override = nullptr,
              cudnnBackendDescriptor_t k_override = nullptr) {
    Desc mm(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    CUDNN_CHECK(cudnnBackendSetAttribute(mm.get(), CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
    CUDNN_CHECK(cudnnBackendFinalize(mm.get()));
    cudnnBackendDescriptor_t mm_raw = keep(std::move(mm));

    Desc op(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                         &mm_raw));
    if (m_override != nullptr)
      CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &m_override));
    if (n_override != nullptr)
      CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n_override));
    if (k_override != nullptr)
      CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &k_override));
    CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    ops_.push_back(keep(std::move(op)));
  }

  // y = reduce(x) over every dimension where y is 1 (or a whole factor smaller, for the GQA head groups).
  void reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    Desc red(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    CUDNN_CHECK(cudnnBackendSetAttribute(red.get(), CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE,
                                         1, &mode));
    CUDNN_CHECK(cudnnBackendSetAttribute(red.get(), CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
    CUDNN_CHECK(cudnnBackendFinalize(red.get()));
    cudnnBackendDescriptor_t red_raw = keep(std::move(red));

    Desc op(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &x));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &y));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &red_raw));
    CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    ops_.push_back(keep(std::move(op)));
  }

  // y views x's elements under other dimensions and strides (here: a transpose of the last two).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    Desc op(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &x));
    CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                         1, &y));
    CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    ops_.push_back(keep(std::move(op)));
  }

  const std::vector<cudnnBackendDescriptor_t>& ops() const { return ops_; }
  std::vector<Desc> take() { return std::move(owned_); }

 private:
  cudnnBackendDescriptor_t keep(Desc d) {
    owned_.push_back(std::move(d));
    return owned_.back().get();
  }
  std::vector<Desc> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  std::int64_t next_virtual_ = kFirstVirtual;
};

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

// x where query row (+ key count − query count: the diagonal aligned bottom-right, when those are given) >= key
// column, else -inf: the causal mask of cuDNN's fused attention pattern.
cudnnBackendDescriptor_t causal_mask(GraphBuilder& g, const Layouts& l, cudnnBackendDescriptor_t x,
                                     cudnnBackendDescriptor_t neg_inf, cudnnBackendDescriptor_t keys = nullptr,
                                     cudnnBackendDescriptor_t queries = nullptr) {
  auto row = g.virt(CUDNN_DATA_INT32, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, x, nullptr, row, nullptr, 2);
  if (keys != nullptr) {
    auto plus_keys = g.virt(CUDNN_DATA_INT32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_ADD, CUDNN_DATA_INT32, row, keys, plus_keys, nullptr, 3);
    auto shifted = g.virt(CUDNN_DATA_INT32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_INT32, plus_keys, queries, shifted, nullptr, 3);
    row = shifted;
  }
  auto col = g.virt(CUDNN_DATA_INT32, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, x, nullptr, col, nullptr, 3);
  auto keep = g.virt(CUDNN_DATA_BOOLEAN, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, keep);
  auto y = g.virt(CUDNN_DATA_FLOAT, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, neg_inf, y, keep);
  return y;
}

// x where row < seq_len_q[b] and column < seq_len_kv[b], else -inf.
cudnnBackendDescriptor_t padding_mask(GraphBuilder& g, const Layouts& l, cudnnBackendDescriptor_t x,
                                      cudnnBackendDescriptor_t neg_inf, cudnnBackendDescriptor_t seq_q,
                                      cudnnBackendDescriptor_t seq_kv) {
  auto row = g.virt(CUDNN_DATA_INT32, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, x, nullptr, row, nullptr, 2);
  auto col = g.virt(CUDNN_DATA_INT32, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, x, nullptr, col, nullptr, 3);
  auto row_in = g.virt(CUDNN_DATA_BOOLEAN, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, row, seq_q, row_in);
  auto col_in = g.virt(CUDNN_DATA_BOOLEAN, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, col, seq_kv, col_in);
  auto inside = g.virt(CUDNN_DATA_BOOLEAN, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, CUDNN_DATA_BOOLEAN, row_in, col_in, inside);
  auto y = g.virt(CUDNN_DATA_FLOAT, l.scores, l.scores_stride);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, neg_inf, y, inside);
  return y;
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

// A finalized execution plan and every descriptor it was built from (kept alive alongside it).
struct Finalized {
  Finalized() = default;
  Finalized(Finalized&&) = default;
  Finalized& operator=(Finalized&&) = default;
  ~Finalized() {  // the plan first, then what it was built from
    while (!descriptors.empty()) descriptors.pop_back();
  }
  std::vector<Desc> descriptors;  // tensors and operations, then graph, engine config, execution plan
  cudnnBackendDescriptor_t exec = nullptr;
  std::size_t workspace = 0;
};

// Finalizes the operation graph, asks heuristics mode A, then the fallback list, for engine configs and keeps the
// first whose execution plan finalizes. Throws InternalError naming the graph when none does.
Finalized finalize_plan(cudnnHandle_t handle, GraphBuilder& g, const std::string& what) {
  Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  const auto& ops = g.ops();
  CUDNN_CHECK(cudnnBackendSetAttribute(graph.get(), CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                       static_cast<std::int64_t>(ops.size()), ops.data()));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  CUDNN_CHECK(cudnnBackendSetAttribute(graph.get(), CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
#pragma GCC diagnostic pop
  if (const cudnnStatus_t st = cudnnBackendFinalize(graph.get()); st != CUDNN_STATUS_SUCCESS)
    throw InternalError("cuDNN does not support the " + what + " graph (operation graph finalize: " +
                        cudnnGetErrorString(st) + ": " + last_cudnn_error() + ")");

  std::string refusals;
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "fallback";
    Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendDescriptor_t graph_raw = graph.get();
    CUDNN_CHECK(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph_raw));
    CUDNN_CHECK(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    if (const cudnnStatus_t st = cudnnBackendFinalize(heur.get()); st != CUDNN_STATUS_SUCCESS) {
      refusals += std::string(" ") + mode_name + ": " + cudnnGetErrorString(st) + ";";
      continue;
    }
    std::int64_t count = 0;
    CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                         &count, nullptr));
    std::vector<Desc> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (std::int64_t i = 0; i < count; ++i) {
      configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(configs.back().get());
    }
    std::int64_t got = 0;
    if (count > 0)
      CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                           count, &got, raw.data()));
    if (got == 0) refusals += std::string(" ") + mode_name + ": no engine configs;";
    for (std::int64_t i = 0; i < got; ++i) {
      Desc exec(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      CUDNN_CHECK(cudnnBackendSetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
#pragma GCC diagnostic pop
      CUDNN_CHECK(cudnnBackendSetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw[i]));
      if (const cudnnStatus_t st = cudnnBackendFinalize(exec.get()); st != CUDNN_STATUS_SUCCESS) {
        refusals += std::string(" ") + mode_name + " config " + std::to_string(i) + ": " + cudnnGetErrorString(st) +
                    " " + last_cudnn_error() + ";";
        continue;
      }
      std::int64_t workspace = 0;
      CUDNN_CHECK(cudnnBackendGetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                           nullptr, &workspace));
      Finalized f;
      f.descriptors = g.take();
      f.exec = exec.get();
      f.workspace = static_cast<std::size_t>(workspace);
      f.descriptors.push_back(std::move(graph));
      f.descriptors.push_back(std::move(configs[static_cast<std::size_t>(i)]));
      f.descriptors.push_back(std::move(exec));
      return f;
    }
  }
  throw InternalError("cuDNN has no engine for the " + what + " graph;" + refusals);
}
}  // namespace

struct CudnnAttention::Plan {
  Finalized finalized;
  std::size_t softmax_sum_offset = 0, dq_accum_offset = 0;  // backward: fp32 tensors after cuDNN's own workspace
  std::size_t total_workspace = 0;
  // By-value scalars: the variant pack points at these.
  float scale = 0, neg_inf = -std::numeric_limits<float>::infinity(), one = 1;
  std::int32_t keys = 0, queries = 0;  // the bottom-right diagonal's shift (context parallelism), when by value
  std::int32_t* seq_lens = nullptr;  // device [2][B] lengths for the padding-mask workaround, or null
  ~Plan() {
    if (seq_lens != nullptr) cudaFree(seq_lens);
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
  const Layouts l = layouts(s);
  const std::int64_t H = s.heads, KVH = s.kv_heads, S = s.seq, K = s.keys(), QR = s.q_rows(), KR = s.kv_rows();
  const bool shifted_diagonal = K != S;  // context parallelism: the queries are the last S of K positions
  p->keys = static_cast<std::int32_t>(K);
  p->queries = static_cast<std::int32_t>(S);
  GraphBuilder g;
  const auto bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;

  auto q = g.tensor(kQ, bf16, token_major(s, H, S), token_major_stride(s, QR, s.q_stride), false);
  auto kt = g.tensor(kK, bf16, token_major(s, KVH, K, true), token_major_stride(s, KR, s.k_stride, true), false);  // Kᵀ
  auto stats = g.tensor(kStats, f32, l.rows, l.stats_stride, false);
  auto scale = g.scalar(kScale, f32);
  auto neg_inf = g.scalar(kNegInf, f32);
  cudnnBackendDescriptor_t shift_keys = nullptr, shift_queries = nullptr;  // by value unless the padding lengths serve

  if (!backward) {
    auto v = g.tensor(kV, bf16, token_major(s, KVH, K), token_major_stride(s, KR, s.v_stride), false);
    auto o = g.tensor(kO, bf16, token_major(s, H, S), token_major_stride(s, QR, s.o_stride), false);
    if (shifted_diagonal) shift_keys = g.scalar(kShiftKV, CUDNN_DATA_INT32), shift_queries = g.scalar(kShiftQ, CUDNN_DATA_INT32);
    auto scores = g.virt(f32, l.scores, l.scores_stride);
    g.matmul(q, kt, scores);
    auto scaled = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_MUL, f32, scores, scale, scaled);
    auto masked = causal_mask(g, l, scaled, neg_inf, shift_keys, shift_queries);
    auto row_max = g.virt(f32, l.rows, l.rows_stride);
    g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, row_max);
    auto shifted = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_SUB, f32, masked, row_max, shifted);
    auto e = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_EXP, f32, shifted, nullptr, e);
    auto row_sum = g.virt(f32, l.rows, l.rows_stride);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, row_sum);
    auto log_sum = g.virt(f32, l.rows, l.rows_stride);
    g.pointwise(CUDNN_POINTWISE_LOG, f32, row_sum, nullptr, log_sum);
    g.pointwise(CUDNN_POINTWISE_ADD, f32, row_max, log_sum, stats);
    auto probs = g.virt(bf16, l.scores, l.scores_stride);  // P enters the second matmul in bf16
    g.pointwise(CUDNN_POINTWISE_DIV, f32, e, row_sum, probs);
    g.matmul(probs, v, o);
    p->finalized = finalize_plan(handle_, g, "causal attention forward (" + describe(s) + ")");
    p->total_workspace = p->finalized.workspace;
  } else {
    auto vt = g.tensor(kV, bf16, token_major(s, KVH, K, true), token_major_stride(s, KR, s.v_stride, true), false);  // Vᵀ
    auto o = g.tensor(kO, bf16, token_major(s, H, S), token_major_stride(s, QR, s.o_stride), false);
    auto dout = g.tensor(kdO, bf16, token_major(s, H, S), token_major_stride(s, QR, s.o_stride), false);
    auto dq = g.tensor(kdQ, bf16, token_major(s, H, S), token_major_stride(s, QR, s.q_stride), false);
    auto dk = g.tensor(kdK, bf16, token_major(s, KVH, K), token_major_stride(s, KR, s.k_stride), false);
    auto dv = g.tensor(kdV, bf16, token_major(s, KVH, K), token_major_stride(s, KR, s.v_stride), false);
    auto one = g.scalar(kOne, f32);
    auto softmax_sum = g.tensor(kSoftmaxSum, f32, l.rows, l.rows_stride, false);
    const Dims dq_dims = token_major(s, H, S);
    auto dq_accum = g.tensor(kdQAccum, f32, dq_dims, packed_stride(dq_dims), false);

    // cuDNN up to 9.15 needs an explicit padding mask (with actual lengths S and S_kv) when a length is not a
    // multiple of 128; cuDNN's own frontend adds the same workaround, and shifts a bottom-right diagonal by those
    // lengths.
    const bool pad = (S % 128 != 0 || K % 128 != 0) && cudnnGetVersion() <= 91500;
    cudnnBackendDescriptor_t seq_q = nullptr, seq_kv = nullptr;
    if (pad) {
      const Dims d{s.batch, 1, 1, 1}, st{1, 1, 1, 1};
      seq_q = g.tensor(kSeqLenQ, CUDNN_DATA_INT32, d, st, false);
      seq_kv = g.tensor(kSeqLenKV, CUDNN_DATA_INT32, d, st, false);
      std::vector<std::int32_t> lens(static_cast<std::size_t>(2 * s.batch), static_cast<std::int32_t>(S));
      std::fill(lens.begin() + s.batch, lens.end(), static_cast<std::int32_t>(K));
      CUDA_CHECK(cudaMalloc(&p->seq_lens, lens.size() * sizeof(std::int32_t)));
      CUDA_CHECK(cudaMemcpy(p->seq_lens, lens.data(), lens.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaDeviceSynchronize());  // a pageable copy may still be in flight; the plans run on other streams
    }
    if (shifted_diagonal && pad) shift_keys = seq_kv, shift_queries = seq_q;
    if (shifted_diagonal && !pad) shift_keys = g.scalar(kShiftKV, CUDNN_DATA_INT32), shift_queries = g.scalar(kShiftQ, CUDNN_DATA_INT32);

    // Δ = rowsum(dO∘O)
    auto dout_o = g.virt(f32, token_major(s, H, S), token_major_stride(s, QR, s.o_stride));
    g.pointwise(CUDNN_POINTWISE_MUL, f32, dout, o, dout_o);
    auto delta = g.virt(f32, l.rows, l.rows_stride);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, dout_o, delta);
    g.pointwise(CUDNN_POINTWISE_MUL, f32, delta, one, softmax_sum);

    // P = exp(Q·Kᵀ·scale − Stats), masked
    auto scores = g.virt(f32, l.scores, l.scores_stride);
    g.matmul(q, kt, scores, seq_q, seq_kv);
    auto scaled = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_MUL, f32, scores, scale, scaled);
    auto shifted = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_SUB, f32, scaled, stats, shifted);
    if (pad) shifted = padding_mask(g, l, shifted, neg_inf, seq_q, seq_kv);
    auto masked = causal_mask(g, l, shifted, neg_inf, shift_keys, shift_queries);
    auto probs = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_EXP, f32, masked, nullptr, probs);

    // dV = Pᵀ·dO (summed over each group's query heads with GQA)
    auto probs_t = g.virt(bf16, l.scores_t, l.scores_t_stride);
    g.reshape(probs, probs_t);
    const Dims full = token_major(s, H, K);  // per query head, before the GQA group sum
    // out = a·b over every query head; with GQA computed per query head, then summed over each kv head's group.
    auto matmul_kv_grad = [&](auto a, auto b, auto out) {
      if (H == KVH) {
        g.matmul(a, b, out, seq_kv, nullptr, seq_q);
        return;
      }
      auto per_query_head = g.virt(bf16, full, packed_stride(full));
      g.matmul(a, b, per_query_head, seq_kv, nullptr, seq_q);
      g.reduction(CUDNN_REDUCE_TENSOR_ADD, per_query_head, out);
    };
    matmul_kv_grad(probs_t, dout, dv);

    // dS = P∘(dO·Vᵀ − Δ)·scale
    auto dprobs = g.virt(f32, l.scores, l.scores_stride);
    g.matmul(dout, vt, dprobs, seq_q, seq_kv);
    auto centered = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_SUB, f32, dprobs, softmax_sum, centered);
    auto weighted = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_MUL, f32, centered, probs, weighted);
    auto dscores = g.virt(f32, l.scores, l.scores_stride);
    g.pointwise(CUDNN_POINTWISE_MUL, f32, weighted, scale, dscores);

    // dK = dSᵀ·Q (group-summed with GQA)
    auto dscores_t = g.virt(bf16, l.scores_t, l.scores_t_stride);
    g.reshape(dscores, dscores_t);
    matmul_kv_grad(dscores_t, q, dk);

    // dQ = dS·K, accumulated in fp32 workspace, then rounded into dq
    auto k = g.virt(bf16, token_major(s, KVH, K), token_major_stride(s, KR, s.k_stride));
    g.reshape(kt, k);
    g.matmul(dscores, k, dq_accum, seq_q, nullptr, seq_kv);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, f32, dq_accum, nullptr, dq);

    p->finalized = finalize_plan(handle_, g, "causal attention backward (" + describe(s) + ")");
    const std::size_t rows = static_cast<std::size_t>(s.batch * H * S);
    p->softmax_sum_offset = align_up(p->finalized.workspace);
    p->dq_accum_offset = align_up(p->softmax_sum_offset + rows * sizeof(float));
    p->total_workspace = p->dq_accum_offset + rows * static_cast<std::size_t>(s.head_dim) * sizeof(float);
  }
  return *plans_.emplace(key, std::move(p)).first->second;
}

std::size_t CudnnAttention::workspace_bytes(const SdpaShape& shape) {
  return std::max(plan(shape, false).total_workspace, plan(shape, true).total_workspace);
}

namespace {
void execute(cudnnHandle_t handle, cudnnBackendDescriptor_t exec, const std::vector<std::int64_t>& uids,
             const std::vector<void*>& pointers, void* workspace, cudaStream_t stream) {
  CUDNN_CHECK(cudnnSetStream(handle, stream));
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  CUDNN_CHECK(cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                       static_cast<std::int64_t>(uids.size()), uids.data()));
  CUDNN_CHECK(cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                                       static_cast<std::int64_t>(pointers.size()), pointers.data()));
  CUDNN_CHECK(cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                       &workspace));
  CUDNN_CHECK(cudnnBackendFinalize(pack.get()));
  CUDNN_CHECK(cudnnBackendExecute(handle, exec, pack.get()));
}
}  // namespace

void CudnnAttention::forward(const void* q, const void* k, const void* v, void* o, float* lse, const SdpaShape& shape,
                             void* workspace, cudaStream_t stream) {
  Plan& p = plan(shape, false);
  const std::pair<const void*, const char*> operands[] = {{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}, {lse, "lse"}};
  for (const auto& [ptr, name] : operands) check_aligned(ptr, name);
  if (p.total_workspace > 0) check_aligned(workspace, "workspace");
  std::vector<std::int64_t> uids{kQ, kK, kV, kO, kStats, kScale, kNegInf};
  std::vector<void*> ptrs{const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), o, lse, &p.scale,
                          &p.neg_inf};
  if (shape.keys() != shape.seq) {
    uids.insert(uids.end(), {kShiftKV, kShiftQ});
    ptrs.insert(ptrs.end(), {&p.keys, &p.queries});
  }
  execute(handle_, p.finalized.exec, uids, ptrs, workspace, stream);
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
  if (p.seq_lens != nullptr) {
    uids.insert(uids.end(), {kSeqLenQ, kSeqLenKV});
    ptrs.insert(ptrs.end(), {p.seq_lens, p.seq_lens + shape.batch});
  } else if (shape.keys() != shape.seq) {
    uids.insert(uids.end(), {kShiftKV, kShiftQ});
    ptrs.insert(ptrs.end(), {&p.keys, &p.queries});
  }
  execute(handle_, p.finalized.exec, uids, ptrs, workspace, stream);
}

}  // namespace qwen3::cuda
