#!/usr/bin/env bash
# bf16 against fp8 on one GPU, same call: tokens/s, step time and memory (allocator peak, the plan) of a few presets,
# with the FP8 run's per-operation times. Usage: tools/bench/fp8_probe.sh OUTDIR ["MODEL:SEQ:GB ..."]
# RUNS: the runs of each spec (default "bf16 fp8"); fp8:per-layer casts the FP8 weights per layer (--fp8-weights).
# MB: the micro-batch (default 1; named in the run's tag when not 1). A run fp8-delayed is fp8 with --fp8-scaling delayed.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: fp8_probe.sh OUTDIR [SPECS]}"; specs="${2:-0.6B:4096:8 1.7B:4096:8}"
bin="${QWEN3_BIN:-build/bin}"; steps="${STEPS:-6}"
mkdir -p "$out"; export NCCL_NVLS_ENABLE=0
for spec in $specs; do
  IFS=: read -r model seq gb <<<"$spec"
  data="$out/data-$seq.h5"
  [ -f "$data" ] || "$bin/qwen3-dataset" synthetic --out "$data" --vocab-size 151936 --lengths "$seq" --documents 64 --seed 7 >/dev/null
  for run in ${RUNS:-bf16 fp8}; do
    p=${run%%:*}; weights=${run#*:}; [ "$weights" = "$run" ] && weights=""
    scaling=""; [ "$p" = fp8-delayed ] && p=fp8 scaling=delayed
    mb="${MB:-1}"; tag="$model-$seq-gb$gb$([ "$mb" = 1 ] || echo "-mb$mb")-$p${scaling:+-$scaling}${weights:+-$weights}"
    timeout --foreground 300 "$bin/qwen3-pretrain" --device cuda --model "$model" --data "$data" --seq-len "$seq" --global-batch "$gb" \
      --micro-batch "$mb" --steps "$steps" --warmup-steps 1 --recompute auto --precision "$p" ${weights:+--fp8-weights "$weights"} ${scaling:+--fp8-scaling "$scaling"} --op-times \
      --out "$out/$tag.h5" --overwrite >"$out/$tag.log" 2>&1
    echo "== $tag (exit $?)"; grep -E "tokens/s|error" "$out/$tag.log" | tail -n 2
    "$bin/qwen3-results" "$out/$tag.h5" 2>&1 | sed -n '2p;6,9p'
  done
done
rm -f "$out"/data-*.h5
