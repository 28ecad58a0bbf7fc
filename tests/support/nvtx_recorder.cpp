// A tiny NVTX injection library for tests: loaded by NVTX through NVTX_INJECTION64_PATH, it records every range push
// and pop of the process, one line each ("push <name>" / "pop"), to the file $QWEN3_NVTX_RECORD.<pid>. Lets a test
// see the ranges a profiler (Nsight Systems) would show, on a machine without one.
#include <nvtx3/nvToolsExt.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

std::FILE* out = nullptr;

int push_a(const char* message) {
  if (out != nullptr) std::fprintf(out, "push %s\n", message != nullptr ? message : "");
  return 0;
}

int pop() {
  if (out != nullptr) std::fprintf(out, "pop\n");
  return 0;
}

void close_record() {
  if (out != nullptr) std::fclose(out);
  out = nullptr;
}

}  // namespace

// NVTX calls this once, at the process's first NVTX call, with its export-table getter. Returns 1 on success.
extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get_export_table) {
  const char* base = std::getenv("QWEN3_NVTX_RECORD");
  if (base == nullptr) return 0;
  const auto* callbacks = static_cast<const NvtxExportTableCallbacks*>(get_export_table(NVTX_ETID_CALLBACKS));
  if (callbacks == nullptr || callbacks->GetModuleFunctionTable == nullptr) return 0;
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &table, &size) == 0 || table == nullptr ||
      size <= NVTX_CBID_CORE_RangePop)
    return 0;
  out = std::fopen((std::string(base) + "." + std::to_string(::getpid())).c_str(), "w");
  if (out == nullptr) return 0;
  std::setvbuf(out, nullptr, _IOLBF, 0);
  std::atexit(close_record);
  *table[NVTX_CBID_CORE_RangePushA] = reinterpret_cast<NvtxFunctionPointer>(&push_a);
  *table[NVTX_CBID_CORE_RangePop] = reinterpret_cast<NvtxFunctionPointer>(&pop);
  return 1;
}
