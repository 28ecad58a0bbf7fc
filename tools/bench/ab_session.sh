#!/usr/bin/env bash
# Same-call A/B of two trees' qwen3-pretrain on one GPU (a refactor must not slow a step): every spec run with the new
# build (build/bin) and the old one (OLD_BIN), in the order new, old for odd specs and old, new for even ones (so that a
# host warming or throttling over the call favours neither), then the Hugging Face baseline. One line per run: tokens/s
# (mean of the steps after the first), the allocator's peak, the planned peak, the first step's loss and grad norm.
# Usage: OUT=DIR OLD_BIN=build-old/bin [STEPS=6] tools/bench/ab_session.sh "SPEC ..." ["HF_SPECS"]
#   SPEC = MODEL:SEQ:GLOBAL_BATCH[:RECOMPUTE[:ATTENTION]] (micro-batch 1; RECOMPUTE none|selective|full; ATTENTION cudnn|own)
#   OLD_ATTENTION_ENV=1: the old tree chooses the own kernels with QWEN3_ATTENTION=own (before --attention existed).
set -uo pipefail
cd "$(dirname "$0")/../.."
specs="${1:?usage: ab_session.sh SPECS [HF_SPECS]}"; hf_specs="${2:-}"
out="${OUT:-ab-out}"; old="${OLD_BIN:?OLD_BIN: the bin folder of the old tree}"; steps="${STEPS:-6}"
mkdir -p "$out/logs"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/summary.txt"

# One run of tree $1 (new|old) of spec $2; its line appended to the summary.
run() {
  local tree=$1 spec=$2 bin=build/bin model seq gb rc attn
  [ "$tree" = old ] && bin="$old"
  IFS=: read -r model seq gb rc attn <<<"$spec"; rc="${rc:-none}"; attn="${attn:-cudnn}"
  local data="$out/data-$seq.h5" tag="$model-$seq-gb$gb-$rc-$attn-$tree" env=() attn_arg=(--attention "$attn")
  [ -f "$data" ] || build/bin/qwen3-dataset synthetic --out "$data" --vocab-size 151936 --lengths "$seq" --documents 16 \
    --seed 7 >/dev/null
  if [ "$tree" = old ] && [ "${OLD_ATTENTION_ENV:-0}" = 1 ]; then
    attn_arg=(); [ "$attn" = own ] && env=(QWEN3_ATTENTION=own)
  fi
  env "${env[@]}" "$bin/qwen3-pretrain" --device cuda --model "$model" --data "$data" --seq-len "$seq" --global-batch "$gb" \
    --micro-batch 1 --steps "$steps" --warmup-steps 1 --recompute "$rc" "${attn_arg[@]}" --out "$out/$tag.h5" --overwrite \
    >"$out/logs/$tag.log" 2>&1
  local code=$?
  python3 - "$out/$tag.h5" "$tag" "$code" <<'PY' | tee -a "$out/summary.txt"
import sys, h5py
path, tag, code = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    f = h5py.File(path, "r")
    s, a = f["steps"], f.attrs
    tps = s["tokens_per_s"][1:].mean()
    cats = ("weights", "gradients", "optimizer_state", "activations", "workspace")
    used = sum(int(a[f"memory_{c}_bytes"]) for c in cats)
    plan = sum(int(a[f"plan_{c}_bytes"]) for c in cats)
    commit = a["git_commit"]
    commit = commit.decode() if isinstance(commit, bytes) else commit
    print(f"{tag:44s} exit {code}  {tps:9.0f} tokens/s  allocator {used / 2**30:7.3f} GiB  plan {plan / 2**30:7.3f} GiB  "
          f"step 1 loss {s['loss'][0]:.4f} grad norm {s['grad_norm'][0]:.3f}  {commit[:12]}")
except Exception as e:  # a run that failed: its log's last line
    print(f"{tag:44s} exit {code}  no result ({e})")
PY
}

i=0
for spec in $specs; do
  i=$((i + 1))
  if [ $((i % 2)) = 1 ]; then run new "$spec"; run old "$spec"; else run old "$spec"; run new "$spec"; fi
done
if [ -n "$hf_specs" ]; then
  echo "== Hugging Face baseline (tools/bench/hf_qwen3_train.py), same host" | tee -a "$out/summary.txt"
  PYTHONUNBUFFERED=1 python3 tools/bench/hf_qwen3_train.py $hf_specs 2>&1 | grep -v Warning | tee -a "$out/summary.txt"
fi
rm -f "$out"/data-*.h5
tar -C "$out" -czf "$out/logs.tar.gz" logs $(cd "$out" && ls *.h5 2>/dev/null) && rm -rf "$out/logs" "$out"/*.h5
