#!/usr/bin/env bash
# Call 24 (one GPU): 8B at 8,192 and 4,096 tokens (global batch 32, --recompute auto): bf16 and fp8 of the branch
# delayed-scaling (RUNS, default "bf16 fp8-delayed"), STEPS (3) steps each; then, on an H200, qwen3-calibrate --base
# for 8B (the FP8 kernels calibration/h200.json lacks) if time is left.
set -u
T0=$(date +%s); stage() { echo "### $(( $(date +%s) - T0 )) s: $*"; }
finish() { stage done; cd "$OUT" && tar -cf - --exclude="*.h5" s8 c q17 2>/dev/null | xz -T8 > logs.tar.xz; tar -cf - $(find s8 q17 -name '*.h5' 2>/dev/null) | xz -T8 > results.tar.xz; ls -la "$OUT"; }
trap finish EXIT
mkdir -p "$OUT/c"; [ -x build/bin/qwen3-pretrain ] && [ ! -d build/gpubin ] || { tar xJf build/gpubin-ds.tar.xz -C build && rm -rf build/bin && mv build/gpubin build/bin; }
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
stage 8B
STEPS=${STEPS:-3} RUNS="${RUNS:-bf16 fp8-delayed}" timeout ${SPEED_S:-400} tools/bench/fp8_probe.sh "$OUT/s8" "${SPECS:-8B:8192:32 8B:4096:32}"
stage calibrate
kind=h100-80gb; nvidia-smi | grep -q H200 && kind=h200
left=$(( 575 - ($(date +%s) - T0) )); [ "$left" -gt 30 ] && timeout "$left" build/bin/qwen3-calibrate --base calibration/$kind.json --models 8B --lengths 4096,8192 --tp 1 --out "$OUT/c/$kind.json" > "$OUT/c/calibrate.log" 2>&1; echo "calibrate exit $?"; tail -1 "$OUT/c/calibrate.log"
stage quality
left=$(( 585 - ($(date +%s) - T0) )); [ "$left" -gt 60 ] && FP8_FLAGS="--fp8-scaling delayed" LR=3e-4 WARMUP=20 CONCURRENT=1 OUT="$OUT/q17" timeout "$left" tools/bench/fp8_session.sh quality inputs/1.7B-v512.ini; ls "$OUT/q17"
