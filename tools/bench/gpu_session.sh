#!/usr/bin/env bash
# One GPU-host session over a carried build folder: every test (GPU ones included), the CUDA golden checks, then the
# benchmarks beside the Hugging Face baseline. Logs go under $OUT (or ./gpu-out). Usage: gpu_session.sh [tests|bench|all]
set -uo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"
out="${OUT:-gpu-out}"; mkdir -p "$out"
export QWEN3_BIN_DIR="$PWD/build/bin" QWEN3_TEST_DATA_DIR="$PWD/tests/data" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
if [ "$what" = tests ] || [ "$what" = all ]; then
  build/bin/qwen3_tests --gtest_brief=1 ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$out/unit.log" 2>&1
  echo "unit tests exit $?"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? ran|Failure|rel_error|Expected|Which is" "$out/unit.log" | head -60
  for g in tests/data/qwen3-tiny.h5 tests/data/qwen3-small-untied.h5; do
    build/bin/qwen3-golden-check --golden "$g" --device cuda >"$out/golden-$(basename "$g" .h5).log" 2>&1
    echo "golden $g: exit $?"; grep -E "FAIL|PASS|error" "$out/golden-$(basename "$g" .h5).log" | tail -6
  done
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  tools/bench/bench.sh "$out/bench" "${BENCH_SPECS:-0.6B:4096 1.7B:4096 1.7B:16384}" "${HF_SPECS:-}"
fi
