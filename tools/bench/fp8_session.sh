#!/usr/bin/env bash
# --precision fp8 on one GPU host, over a carried build folder (docs/fp8.md; issue 27). Logs and results under $OUT.
#   fp8_session.sh tests            the FP8 kernel tests, the FP8 golden checks (tp 1, --tp 2 and --cp 2 staged on one
#                                   GPU; current and delayed scaling), the whole GPU suite (bf16 unchanged)
#   fp8_session.sh speed "SPECS"    bf16 then fp8 of each MODEL:SEQ:GB (global batch GB, micro-batch MB (1), --recompute auto,
#                                   STEPS (4) steps; RUNS as tools/bench/fp8_probe.sh takes it), the Hugging Face baseline
#                                   in the same call (of HF_SPECS MODEL:SEQ, default the specs': 8B does not fit it),
#                                   plan and allocator per run; then qwen3-calibrate re-measures the specs' kernels in
#                                   both precisions into OUT/speed/<kind>.json, so that
#                                   tools/bench/predict_check.py --calibration holds --plan --precision fp8 to the runs
#   fp8_session.sh ab OTHER_BIN "SPECS"   a kernel change against the binaries before it, same call: RUNS (bf16 fp8) of
#                                   each spec as speed runs them, on these binaries (OUT/ab/new) and on OTHER_BIN's
#                                   (OUT/ab/old, e.g. main's build/bin carried as another folder), then the Hugging Face
#                                   baseline; each run's --op-times show what changed
#   fp8_session.sh quality MODEL    bf16 and fp8 from the same weights on the same Markov documents, 500 steps at 1,024
#                                   tokens, global batch 8 (MODEL: a preset, or an INI model config by its file); then tools/bench/fp8_quality.py (within 1% from step 50 on;
#                                   both closer to the chain's entropy than to ln V) and its figure. The chain's
#                                   vocabulary is VOCAB (default 512, entropy 2.1903 nats: 500 steps of 8 documents
#                                   reach near it; at the presets' 151,936 the chain has 600k transitions to learn).
#                                   Peak learning rate LR (default 3e-4), final MIN_LR (3e-5), WARMUP steps (50), AdamW
#                                   epsilon EPS (1e-8), global batch GB (8; micro-batches of 8); FLAGS: more qwen3-pretrain
#                                   options for every run (e.g. "--beta2 0.99 --init-std 0.01"; the results files keep them),
#                                   FP8_FLAGS for the fp8 run only (e.g. "--fp8-scaling delayed").
#                                   CONCURRENT=1 runs them at once on the GPU (quality runs, not timed).
#   fp8_session.sh control MODEL    quality's two runs and a third, bf16 at micro-batches of 4 (the same steps, the
#                                   gradient summed in another order); the quality check, and the same check between the
#                                   two bf16 runs (fp8_quality.py --control): how far apart it puts runs no precision separates
#   fp8_session.sh stability "V:LR:WARMUP[:EPS[:FLAGS]] ..."   bf16 runs of MODEL (0.6B; or an INI: inputs/0.6B-v512.ini,
#                                   0.6B with the chain's 512 tokens as its whole vocabulary) at each chain vocabulary, peak
#                                   learning rate, warm-up, AdamW epsilon (1e-8) and qwen3-pretrain options FLAGS written
#                                   name=value,... (beta2=0.99,init-std=0.01), at once, STEPS (250) steps, micro-batches of
#                                   MB (8): the loss at step 60, the largest after it, the last, and the first step below
#                                   halfway from the first loss to the last (where the curve leaves its plateau)
#   fp8_session.sh hf MODEL         Hugging Face's Qwen3 (tools/bench/hf_markov_train.py) on the quality setting's data
#                                   (VOCAB, LR, WARMUP, EPS as above; HF_TIMEOUT seconds, 300): the same summary
set -uo pipefail
cd "$(dirname "$0")/../.."
usage() { echo "usage: fp8_session.sh tests | speed SPECS | ab OTHER_BIN SPECS | quality MODEL | control MODEL | stability SETTINGS | hf MODEL" >&2; exit 2; }
what="${1:-}"
case "$what" in tests|speed|ab|quality|control|stability|hf) ;; *) usage ;; esac
out="${OUT:-gpu-out}"; mkdir -p "$out"; bin="${QWEN3_BIN:-build/bin}"
export QWEN3_BIN_DIR="$PWD/$bin" QWEN3_TEST_DATA_DIR="$PWD/tests/data" NCCL_NVLS_ENABLE=0
# A preset's name, or an INI model config (inputs/*.ini) named by its file: qwen3-pretrain's option, and a tag.
model_option() { case "$1" in *.ini) echo "--model-config $1" ;; *) echo "--model $1" ;; esac; }
model_tag() { basename "$1" .ini; }
# Hugging Face's Qwen3 (tools/bench/hf_qwen3_train.py) at each MODEL:SEQ of the specs $1, one JSON line each into $2.
hf_baseline() {
  local hf="" s m q
  for s in $1; do IFS=: read -r m q _ <<<"$s"; hf="$hf $m:$q"; done
  PYTHONUNBUFFERED=1 python3 tools/bench/hf_qwen3_train.py $hf 2>&1 | grep -v Warning | tee "$2"
}
# A loss curve (one loss a line on stdin) in one line: the loss at step 60, the largest after it, the last, and the
# first step below halfway from the first loss to the last.
curve_summary() {
  awk '{l[NR] = $1} END {if (NR <= 60) {printf "%d steps only\n", NR; exit}
       m = 0; for (i = 60; i <= NR; i++) if (l[i] > m) m = l[i]
       half = (l[1] + l[NR]) / 2; for (h = 1; h <= NR && l[h] >= half; h++) {}
       printf "loss at step 60 %.3f, largest after %.3f, last (step %d) %.3f; below %.3f from step %d\n", l[60], m, NR,
              l[NR], half, h}'
}
# A stability setting's FLAGS (name=value,...) as qwen3-pretrain options, and the setting as a file-name tag.
setting_flags() { local f; IFS=, read -ra f <<<"$1"; for kv in "${f[@]}"; do [ -n "$kv" ] && echo -n "--${kv%%=*} ${kv#*=} "; done; }
setting_tag() { echo "$1" | sed 's/[:,=]/-/g'; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
case "$what" in
  tests)
    "$bin/qwen3_tests" --gtest_brief=1 --gtest_filter='CudaFp8.*:Fp8*' >"$out/fp8-tests.log" 2>&1; echo "fp8 tests exit $?"
    for scaling in current delayed; do
      for g in qwen3-tiny qwen3-mqa qwen3-tiny-s40; do
        for lay in "1|" "2|--tp 2 --shared-gpu-staging" "2|--cp 2"; do
          np=${lay%%|*}; args=${lay#*|}; log="$out/golden-fp8-$scaling-$g-$np${args:+-${args%% *}}.log"
          mpirun --allow-run-as-root --bind-to none -np "$np" -x NCCL_NVLS_ENABLE "$bin/qwen3-golden-check" \
            --golden "tests/data/$g.h5" --device cuda --precision fp8 --fp8-scaling "$scaling" $args >"$log" 2>&1
          echo "golden fp8 $scaling $g $args: exit $? — $(tail -1 "$log")"
        done
      done
    done
    "$bin/qwen3_tests" --gtest_brief=1 --gtest_filter='Cuda*:Cudnn*:Nccl*:*/Cuda*:*/Cudnn*:*/Nccl*:*Gpu.*:*.Cuda*:*.Nccl*' \
      >"$out/gpu-tests.log" 2>&1
    echo "GPU suite exit $?"; grep -E "^\[  (FAILED|PASSED|SKIPPED) " "$out/gpu-tests.log" | head -30 ;;
  speed)
    STEPS="${STEPS:-4}" tools/bench/fp8_probe.sh "$out/speed" "${2:?specs}"
    hf_baseline "${HF_SPECS:-$2}" "$out/speed/hf.jsonl"
    kind=h100-80gb; grep -q H200 "$out/gpu.txt" && kind=h200
    models=$(for s in $2; do echo "${s%%:*}"; done | sort -u | paste -sd,)
    lengths=$(for s in $2; do IFS=: read -r _ q _ <<<"$s"; echo "$q"; done | sort -u | paste -sd,)
    "$bin/qwen3-calibrate" --base "calibration/$kind.json" --models "$models" --lengths "$lengths" --tp 1 \
      --out "$out/speed/$kind.json" 2>&1 | tail -1 ;;
  ab)
    other="${2:?OTHER_BIN, the other binaries folder}"; [ -x "$other/qwen3-pretrain" ] || { echo "fp8_session.sh ab: no qwen3-pretrain in $other" >&2; exit 2; }
    STEPS=4 tools/bench/fp8_probe.sh "$out/ab/new" "${3:?specs}"
    QWEN3_BIN="$other" STEPS=4 tools/bench/fp8_probe.sh "$out/ab/old" "$3"
    hf_baseline "$3" "$out/ab/hf.jsonl" ;;
  quality|control)
    # quality: bf16 and fp8; control: also bf16 at micro-batches of 4 (the same steps, the gradient summed in another
    # order) — how far apart the quality check puts two runs that no precision separates
    spec="${2:?model}"; model=$(model_tag "$spec"); data="$out/markov-1024.h5"; vocab="${VOCAB:-512}"
    "$bin/qwen3-dataset" synthetic --out "$data" --vocab-size "$vocab" --lengths 1024 --documents 4000 --seed 11 >/dev/null
    runs="bf16:8 fp8:8"; [ "$what" = control ] && runs="$runs bf16:4"
    tags=""
    for r in $runs; do
      p=${r%%:*}; mb=${r#*:}; tag="$what-$model-$p"; [ "$mb" = 8 ] || tag="$tag-mb$mb"
      tags="$tags $tag"
      "$bin/qwen3-pretrain" --device cuda $(model_option "$spec") --data "$data" --seq-len 1024 --global-batch "${GB:-8}" \
        --micro-batch "$mb" --steps 500 --lr "${LR:-3e-4}" --min-lr "${MIN_LR:-3e-5}" --warmup-steps "${WARMUP:-50}" \
        --adam-eps "${EPS:-1e-8}" --seed 5 ${FLAGS:-} $([ "$p" = fp8 ] && echo "${FP8_FLAGS:-}") --precision "$p" \
        --out "$out/$tag.h5" --overwrite >"$out/$tag.log" 2>&1 &
      [ -n "${CONCURRENT:-}" ] || wait $!
    done
    wait
    for t in $tags; do echo "$t: $(grep -E '^step' "$out/$t.log" | tail -1)"; done
    rm -f "$data"
    set -- $tags
    python3 tools/bench/fp8_quality.py "$out/$1.h5" "$out/$2.h5" --vocab "$vocab" --png "$out/quality-$model.png"
    passed=$?  # the mode's exit status: the quality check's (the control is a measurement beside it)
    if [ "$what" = control ]; then
      python3 tools/bench/fp8_quality.py "$out/$1.h5" "$out/$3.h5" --vocab "$vocab" --control --png "$out/control-$model.png"
    fi
    exit "$passed" ;;
  stability)
    # bf16 alone, every setting at once on the GPU, STEPS (250) steps: does the loss spike, and where does it leave the
    # unigram plateau? (0.6B at V=512, lr 3e-4 and 6e-4: loss 6.0 → 25 at step 90, above ln 151,936; docs/fp8.md)
    spec="${MODEL:-0.6B}"; model=$(model_tag "$spec")
    for setting in ${2:?settings VOCAB:LR:WARMUP[:EPS[:FLAGS]] ...}; do
      IFS=: read -r vocab lr warm eps flags <<<"$setting"; data="$out/markov-$vocab.h5"; tag="stability-$model-$(setting_tag "$setting")"
      [ -f "$data" ] || "$bin/qwen3-dataset" synthetic --out "$data" --vocab-size "$vocab" --lengths 1024 --documents 4000 \
        --seed 11 >/dev/null
      "$bin/qwen3-pretrain" --device cuda $(model_option "$spec") --data "$data" --seq-len 1024 --global-batch "${GB:-8}" \
        --micro-batch "${MB:-8}" --steps "${STEPS:-250}" --lr "$lr" --min-lr 3e-5 --warmup-steps "$warm" --adam-eps "${eps:-1e-8}" \
        $(setting_flags "$flags") --seed 5 --out "$out/$tag.h5" --overwrite >"$out/$tag.log" 2>&1 &
    done
    wait; rm -f "$out"/markov-*.h5
    for setting in $2; do
      log="$out/stability-$model-$(setting_tag "$setting").log"
      echo "$setting: $(grep -E '^step' "$log" | sed -E 's/.*\| loss ([0-9.eE+-]+|nan|inf) .*/\1/' | curve_summary)"
    done ;;
  hf)
    # Hugging Face's Qwen3 in the quality setting (its own initialisation and order): does bf16 spike there too?
    model="${2:?model}"; vocab="${VOCAB:-512}"; data="$out/markov-hf-$vocab.h5"; log="$out/hf-$model-$vocab.jsonl"
    "$bin/qwen3-dataset" synthetic --out "$data" --vocab-size "$vocab" --lengths 1024 --documents 4000 --seed 11 >/dev/null
    timeout "${HF_TIMEOUT:-300}" python3 tools/bench/hf_markov_train.py "$data" "$model" --steps 500 --lr "${LR:-3e-4}" \
      --warmup "${WARMUP:-50}" --eps "${EPS:-1e-8}" --batch "${GB:-8}" >"$log" 2>"$out/hf-$model.err"
    echo "hf $model exit $? ($(grep -c '"step"' "$log") steps)"; rm -f "$data"
    grep -E '^\{"step' "$log" | sed -E 's/.*"loss": ([^,}]+).*/\1/' | curve_summary ;;
esac
