// The cuDNN backend graph API in owned pieces (see cudnn_graph_builder.h).
#include "gpu/cudnn_graph_builder.h"

#include "core/error.h"

namespace qwen3::cuda::cudnn {

void throw_cudnn_error(cudnnStatus_t st, const char* call, const char* file, int line) {
  std::string msg = std::string("cuDNN ") + cudnnGetErrorString(st) + " (" + std::to_string(static_cast<int>(st)) +
                    ") from " + call + " at " + file + ":" + std::to_string(line);
  const std::string detail = last_error();
  if (!detail.empty()) msg += ": " + detail;
  throw InternalError(msg);
}

std::string last_error() {
  char detail[1024] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  return detail;
}

cudnnBackendDescriptor_t GraphBuilder::keep_finalized(Desc d) {
  CUDNN_CHECK(cudnnBackendFinalize(d.get()));
  owned_.push_back(std::move(d));
  return owned_.back().get();
}

void GraphBuilder::add_operation(cudnnBackendDescriptorType_t type, std::initializer_list<Attribute> attributes) {
  Desc op(type);
  for (const auto& [name, value] : attributes)
    if (value != nullptr) CUDNN_CHECK(cudnnBackendSetAttribute(op.get(), name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value));
  ops_.push_back(keep_finalized(std::move(op)));
}

Tensor GraphBuilder::tensor(std::int64_t uid, cudnnDataType_t type, const Dims& dim, const Dims& stride,
                            bool is_virtual, bool by_value) {
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
  return keep_finalized(std::move(t));
}

void GraphBuilder::pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, Tensor x, Tensor b, Tensor y,
                             Tensor t, std::int64_t axis) {
  Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  CUDNN_CHECK(cudnnBackendSetAttribute(pw.get(), CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
  CUDNN_CHECK(cudnnBackendSetAttribute(pw.get(), CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision));
  if (axis >= 0) CUDNN_CHECK(cudnnBackendSetAttribute(pw.get(), CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis));
  const cudnnBackendDescriptor_t pw_raw = keep_finalized(std::move(pw));

  add_operation(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, {{CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw_raw},
                                                             {CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x},
                                                             {CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b},  // optional
                                                             {CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t},  // optional
                                                             {CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y}});
}

void GraphBuilder::matmul(Tensor a, Tensor b, Tensor c, Tensor m_override, Tensor n_override, Tensor k_override) {
  Desc mm(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  CUDNN_CHECK(cudnnBackendSetAttribute(mm.get(), CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
  const cudnnBackendDescriptor_t mm_raw = keep_finalized(std::move(mm));

  add_operation(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, {{CUDNN_ATTR_OPERATION_MATMUL_ADESC, a},
                                                           {CUDNN_ATTR_OPERATION_MATMUL_BDESC, b},
                                                           {CUDNN_ATTR_OPERATION_MATMUL_CDESC, c},
                                                           {CUDNN_ATTR_OPERATION_MATMUL_DESC, mm_raw},
                                                           {CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_override},
                                                           {CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_override},
                                                           {CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_override}});
}

void GraphBuilder::reduction(cudnnReduceTensorOp_t mode, Tensor x, Tensor y) {
  Desc red(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  CUDNN_CHECK(cudnnBackendSetAttribute(red.get(), CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1,
                                       &mode));
  CUDNN_CHECK(cudnnBackendSetAttribute(red.get(), CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
  const cudnnBackendDescriptor_t red_raw = keep_finalized(std::move(red));

  add_operation(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, {{CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x},
                                                              {CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y},
                                                              {CUDNN_ATTR_OPERATION_REDUCTION_DESC, red_raw}});
}

void GraphBuilder::reshape(Tensor x, Tensor y) {
  add_operation(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, {{CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x},
                                                            {CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y}});
}

namespace {

// The operation graph of g's operations, finalized; InternalError naming `what` when cuDNN refuses it.
Desc operation_graph(cudnnHandle_t handle, const GraphBuilder& g, const std::string& what) {
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
                        cudnnGetErrorString(st) + ": " + last_error() + ")");
  return graph;
}

// The engine configs heuristics `mode` proposes for a graph, best first (none, and why into refusals, when it
// proposes none), kept beside the heuristics descriptor they came from.
struct EngineConfigs {
  Desc heuristics{CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR};
  std::vector<Desc> configs;  // the first `got` filled in
  std::int64_t got = 0;
};
EngineConfigs engine_configs(cudnnBackendDescriptor_t graph, cudnnBackendHeurMode_t mode, const char* mode_name,
                             std::string& refusals) {
  EngineConfigs proposed;
  const cudnnBackendDescriptor_t heur = proposed.heuristics.get();
  CUDNN_CHECK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                       1, &graph));
  CUDNN_CHECK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
  if (const cudnnStatus_t st = cudnnBackendFinalize(heur); st != CUDNN_STATUS_SUCCESS) {
    refusals += std::string(" ") + mode_name + ": " + cudnnGetErrorString(st) + ";";
    return proposed;
  }
  std::int64_t count = 0;
  CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                       &count, nullptr));
  std::vector<Desc>& configs = proposed.configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (std::int64_t i = 0; i < count; ++i) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    raw.push_back(configs.back().get());
  }
  std::int64_t& got = proposed.got;
  if (count > 0)
    CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                         &got, raw.data()));
  if (got == 0) refusals += std::string(" ") + mode_name + ": no engine configs;";
  return proposed;
}

}  // namespace

Finalized finalize_plan(cudnnHandle_t handle, GraphBuilder& g, const std::string& what) {
  Desc graph = operation_graph(handle, g, what);
  std::string refusals;
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "fallback";
    EngineConfigs proposed = engine_configs(graph.get(), mode, mode_name, refusals);
    for (std::int64_t i = 0; i < proposed.got; ++i) {
      Desc exec(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      cudnnBackendDescriptor_t config = proposed.configs[static_cast<std::size_t>(i)].get();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      CUDNN_CHECK(cudnnBackendSetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
#pragma GCC diagnostic pop
      CUDNN_CHECK(cudnnBackendSetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &config));
      if (const cudnnStatus_t st = cudnnBackendFinalize(exec.get()); st != CUDNN_STATUS_SUCCESS) {
        refusals += std::string(" ") + mode_name + " config " + std::to_string(i) + ": " + cudnnGetErrorString(st) +
                    " " + last_error() + ";";
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
      f.descriptors.push_back(std::move(proposed.configs[static_cast<std::size_t>(i)]));
      f.descriptors.push_back(std::move(exec));
      return f;
    }
  }
  throw InternalError("cuDNN has no engine for the " + what + " graph;" + refusals);
}

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

}  // namespace qwen3::cuda::cudnn
