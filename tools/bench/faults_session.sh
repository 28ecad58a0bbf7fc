#!/usr/bin/env bash
# Issue 30 on a GPU host, over a carried build folder: the GPU tests (multi-rank layouts through the shared-GPU staging
# mode), the fault-injection tests, and the CUDA run's own ends — a normal run, a diverging one, a checkpoint that
# refuses infinite weights, two runs on one --out. Logs under $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu-out}"; mkdir -p "$out"
export QWEN3_BIN_DIR="$PWD/build/bin" QWEN3_TEST_DATA_DIR="$PWD/tests/data" NCCL_NVLS_ENABLE=0 QWEN3_SHARED_GPU_STAGING=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
B=build/bin
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
filter="Cuda*:Cudnn*:Nccl*:*/Cuda*:*/Cudnn*:*/Nccl*:*Gpu.*:*.Cuda*:*.Nccl*:Faults*"
timeout 420 $B/qwen3_tests --gtest_brief=1 --gtest_filter="$filter" >"$out/tests.log" 2>&1
echo "gpu + fault tests exit $?"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? ran|Failure" "$out/tests.log" | head -40
d="$out/runs"; mkdir -p "$d"
$B/qwen3-dataset synthetic --out "$d/data.h5" --vocab-size 512 --lengths 128,256 --documents 64 --seed 3 >/dev/null
run() { local name=$1; shift; $B/qwen3-pretrain --device cuda --model tiny --data "$d/data.h5" --seq-len 256 --global-batch 4 "$@" --out "$d/$name.h5" >"$d/$name.log" 2>&1; echo "$name: exit $? | $($B/qwen3-results "$d/$name.h5" 2>&1 | sed -n '2p;3p' | cut -c1-150 | tr '\n' '|')"; }
run ok --steps 20
run diverged --steps 200 --lr 1e6 --save "$d/ck-div" --save-interval 2
echo "  latest: $(cat "$d/ck-div/latest" 2>/dev/null)"
run infinite --steps 3 --warmup-steps 0 --lr 1e39 --save "$d/ck-inf" --save-interval 1
echo "  ck-inf: $(ls "$d/ck-inf" 2>/dev/null | tr '\n' ' ')"
( run first --steps 400 ) & sleep 8
$B/qwen3-pretrain --device cuda --model tiny --data "$d/data.h5" --seq-len 256 --global-batch 4 --steps 2 \
  --out "$d/first.h5" --overwrite >"$d/second.log" 2>&1; echo "second on first.h5: exit $? | $(tail -1 "$d/second.log")"
wait
# The demo's GPU path (tools/bootstrap.sh demo on a one-GPU node).
mpirun -np 1 -x NCCL_NVLS_ENABLE=0 $B/qwen3-pretrain --config inputs/demo.ini --device cuda --global-batch 8 \
  --data "$d/data.h5" --out "$d/demo.h5" >"$d/demo.log" 2>&1; echo "demo: exit $? | $(tail -1 "$d/demo.log")"
tar czf "$out/runs.tgz" -C "$out" runs --exclude='*.h5' --exclude='ck-*' 2>/dev/null
