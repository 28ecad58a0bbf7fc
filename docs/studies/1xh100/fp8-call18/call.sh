#!/usr/bin/env bash
# Call 23 (one GPU): the branch delayed-scaling — FP8 tests, golden checks, GPU suite; 1.7B at 4,096 (global batch 32)
# at micro-batches 4 and 1: bf16, fp8 (current), fp8 --fp8-scaling delayed; Hugging Face baseline; qwen3-calibrate
# --base (measures swiglu_bwd_fp8g and swiglu_fwd_fp8); the 0.6B and 1.7B quality runs with delayed scaling.
set -u
T0=$(date +%s); stage() { echo "### $(( $(date +%s) - T0 )) s: $*"; }
finish() { stage done; cd "$OUT" && tar -cf - --exclude='*.h5' t s4 s1 c q06 q17 hf.jsonl 2>/dev/null | xz -T8 > logs.tar.xz; tar -cf - $(find s4 s1 q06 q17 -name '*.h5' 2>/dev/null) | xz -T8 > results.tar.xz; ls -la "$OUT"; }
trap finish EXIT
mkdir -p "$OUT/c" && tar xJf build/gpubin-ds.tar.xz -C build && rm -rf build/bin && mv build/gpubin build/bin
export NCCL_NVLS_ENABLE=0 QWEN3_TEST_DATA_DIR="$PWD/tests/data"
stage tests
OUT="$OUT/t" timeout 150 tools/bench/fp8_session.sh tests
stage mb4
MB=4 STEPS=4 RUNS="bf16 fp8 fp8-delayed" timeout 110 tools/bench/fp8_probe.sh "$OUT/s4" "1.7B:4096:32"
stage hf
PYTHONUNBUFFERED=1 timeout 60 python3 tools/bench/hf_qwen3_train.py 1.7B:4096 2>&1 | grep -v Warning | tail -1 | tee "$OUT/hf.jsonl"
stage mb1
STEPS=4 RUNS="bf16 fp8 fp8-delayed" timeout 80 tools/bench/fp8_probe.sh "$OUT/s1" "1.7B:4096:32"
stage calibrate
kind=h100-80gb; nvidia-smi | grep -q H200 && kind=h200
timeout 60 build/bin/qwen3-calibrate --base calibration/$kind.json --models 1.7B --lengths 4096 --tp 1 --out "$OUT/c/$kind.json" > "$OUT/c/calibrate.log" 2>&1; echo "calibrate exit $?"; tail -1 "$OUT/c/calibrate.log"
stage quality
left=$(( 570 - ($(date +%s) - T0) ))
for m in 0.6B 1.7B; do  # the settings each model met the quality line at (0.6B: init std 0.08; 1.7B: 0.02)
  flags=""; [ $m = 0.6B ] && flags="--init-std 0.08"
  FLAGS="$flags" FP8_FLAGS="--fp8-scaling delayed" LR=3e-4 WARMUP=20 CONCURRENT=1 OUT="$OUT/q${m//[.B]/}" \
    timeout "$left" tools/bench/fp8_session.sh quality inputs/$m-v512.ini > "$OUT/quality-$m.txt" 2>&1 &
done
wait; cat "$OUT"/quality-*.txt
