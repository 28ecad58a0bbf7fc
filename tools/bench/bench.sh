#!/usr/bin/env bash
# Benchmark: train presets for a few steps on synthetic data with the CUDA backend and print tokens/s, TFLOP/s per
# GPU, MFU and peak memory (read back from each results file), then run the Hugging Face baseline on the same host.
# Usage: tools/bench/bench.sh OUTDIR "0.6B:4096 1.7B:4096 1.7B:16384" [HF specs, e.g. "0.6B:4096 0.6B:4096:compile"]
#   each spec is MODEL:SEQ[:GLOBAL_BATCH] (global batch default 1, micro-batch 1, as the baseline runs).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: bench.sh OUTDIR SPECS [HF_SPECS]}"; specs="${2:?specs}"; hf_specs="${3:-}"
bin="${QWEN3_BIN:-build/bin}"
steps="${STEPS:-6}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for spec in $specs; do
  IFS=: read -r model seq gb <<<"$spec"; gb="${gb:-1}"
  data="$out/data-$seq.h5"
  [ -f "$data" ] || "$bin/qwen3-dataset" synthetic --out "$data" --vocab-size 151936 --lengths "$seq" --documents 16 --seed 7 >/dev/null
  tag="$model-$seq-gb$gb"
  "$bin/qwen3-pretrain" --device cuda --model "$model" --data "$data" --seq-len "$seq" --global-batch "$gb" \
    --micro-batch 1 --steps "$steps" --warmup-steps 1 --out "$out/$tag.h5" --overwrite >"$out/$tag.log" 2>&1
  echo "== ours $tag (exit $?)"; tail -n 2 "$out/$tag.log"
  "$bin/qwen3-results" "$out/$tag.h5" | sed -n '2p;6,9p'
done
if [ -n "$hf_specs" ]; then
  echo "== Hugging Face baseline (tools/bench/hf_qwen3_train.py), same host"
  PYTHONUNBUFFERED=1 python3 tools/bench/hf_qwen3_train.py $hf_specs 2>&1 | grep -v Warning | tee "$out/hf.jsonl"
fi
