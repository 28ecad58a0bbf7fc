// The cuDNN backend (graph) C API in small owned pieces: checked calls, owned descriptors, a builder that spells an
// operation graph out operation by operation (tensors, pointwise, matmul, reduction, reshape), the choice of an engine
// (heuristics, then the fallback list) into a finalized execution plan, and its execution. Nothing here knows
// attention; gpu/cudnn_attention.cpp writes its graphs with it. Compiled only when cuDNN is found.
#pragma once
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace qwen3::cuda::cudnn {

[[noreturn]] void throw_cudnn_error(cudnnStatus_t st, const char* call, const char* file, int line);
// cuDNN's description of its last error ("" when none).
std::string last_error();

}  // namespace qwen3::cuda::cudnn

#define CUDNN_CHECK(call)                                                                                         \
  do {                                                                                                            \
    const cudnnStatus_t qwen3_st_ = (call);                                                                       \
    if (qwen3_st_ != CUDNN_STATUS_SUCCESS) ::qwen3::cuda::cudnn::throw_cudnn_error(qwen3_st_, #call, __FILE__, __LINE__); \
  } while (0)

namespace qwen3::cuda::cudnn {

using Tensor = cudnnBackendDescriptor_t;  // a finalized tensor descriptor, owned by the GraphBuilder that made it
using Dims = std::array<std::int64_t, 4>;

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

// Accumulates the descriptors of one operation graph (kept alive with the plan) and its operations. Tensors the
// caller binds at execution carry the caller's unique ids; virtual ones count up from first_virtual_uid.
class GraphBuilder {
 public:
  explicit GraphBuilder(std::int64_t first_virtual_uid) : next_virtual_(first_virtual_uid) {}

  Tensor tensor(std::int64_t uid, cudnnDataType_t type, const Dims& dim, const Dims& stride, bool is_virtual,
                bool by_value = false);
  Tensor virt(cudnnDataType_t type, const Dims& dim, const Dims& stride) {
    return tensor(next_virtual_++, type, dim, stride, true);
  }
  // A host scalar passed by value at execution ([1,1,1,1], broadcast against anything).
  Tensor scalar(std::int64_t uid, cudnnDataType_t type) { return tensor(uid, type, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }

  // y = mode(x[, b][, t]); b is the second operand, t the selector of BINARY_SELECT (y = t ? x : b).
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, Tensor x, Tensor b, Tensor y,
                 Tensor t = nullptr, std::int64_t axis = -1);
  // c = a·b over the last two dimensions (fp32 accumulate), batched over the first two; b's batch dimensions may be
  // smaller by a whole factor (GQA). The overrides, when given, are int32 [B,1,1,1] actual lengths of m, n, k.
  void matmul(Tensor a, Tensor b, Tensor c, Tensor m_override = nullptr, Tensor n_override = nullptr,
              Tensor k_override = nullptr);
  // y = reduce(x) over every dimension where y is 1 (or a whole factor smaller, for the GQA head groups).
  void reduction(cudnnReduceTensorOp_t mode, Tensor x, Tensor y);
  // y views x's elements under other dimensions and strides (e.g. a transpose of the last two).
  void reshape(Tensor x, Tensor y);

  const std::vector<cudnnBackendDescriptor_t>& ops() const { return ops_; }
  std::vector<Desc> take() { return std::move(owned_); }

 private:
  using Attribute = std::pair<cudnnBackendAttributeName_t, cudnnBackendDescriptor_t>;
  // Finalizes d and keeps it alive with the graph.
  cudnnBackendDescriptor_t keep_finalized(Desc d);
  // An operation of `type` with these descriptor-valued attributes, in order (a null one, optional, left unset),
  // finalized and added to the graph.
  void add_operation(cudnnBackendDescriptorType_t type, std::initializer_list<Attribute> attributes);
  std::vector<Desc> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  std::int64_t next_virtual_;
};

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
// first whose execution plan finalizes. Throws InternalError naming the graph (`what`) when none does.
Finalized finalize_plan(cudnnHandle_t handle, GraphBuilder& g, const std::string& what);

// Runs plan `exec` on `stream` with the tensors `uids` bound to `pointers` (device buffers, or host scalars for
// by-value tensors).
void execute(cudnnHandle_t handle, cudnnBackendDescriptor_t exec, const std::vector<std::int64_t>& uids,
             const std::vector<void*>& pointers, void* workspace, cudaStream_t stream);

}  // namespace qwen3::cuda::cudnn
