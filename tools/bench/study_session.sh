#!/usr/bin/env bash
# One GPU-host session for the study on this node (issue 19), each part within its own time limit so that what ran
# comes back: (1) the GPU tests of $TESTS (a gtest filter; none when empty); (2) qwen3-calibrate for this GPU kind into
# calibration/<kind>.json, also put beside the executables so the runs record their predicted step
# (CALIBRATE=0: use the committed one; CALIBRATE=runs: only the kernels of $RUNS' models and lengths, tp 1, with
# $CAL_ARGS, e.g. --base calibration/<kind>.json); (3) the cells $ONLY of the study spec $STUDY through qwen3-sweep
# --local, as a user runs them, with nvidia-smi sampling the device's memory every 0.5 s (smi.csv); (4) the
# Hugging Face baseline ($HF_SPECS) in the same call; (5) the op timer's steps $OPTIMES (MODEL:SEQ:GB), before (6) the single
# runs $RUNS (MODEL:SEQ:GB:STEPS, --recompute auto) within $T_RUNS s, so that what the op timer measures precedes the
# runs it prices. Everything is written to a work folder and only its tarball, with this script's output
# (session.log inside), lands in $OUT/session.tgz: the device tool brings back a limited number of files, so a
# folder of results beside it would come back cut short.
# Usage: OUT=dir STUDY=inputs/study-1xh200.sweep.ini ONLY='0.6B-*' [TESTS=...] [CALIBRATE=1] [HF_SPECS=1.7B:4096]
#        [T_TESTS=150 T_CAL=240 T_STUDY=240] tools/bench/study_session.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
dest="${OUT:?OUT=dir}"; out="${TMPDIR:-/tmp}/qwen3-session.$$"; mkdir -p "$dest" "$out/calibration"
exec 3>&1 4>&2 > >(tee "$out/session.log") 2>&1; tee_pid=$!  # this script's output, kept in the tarball too
export QWEN3_BIN_DIR="$PWD/build/bin" QWEN3_TEST_DATA_DIR="$PWD/tests/data" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader | tee "$out/gpu.txt"
echo "host: $(nproc) cores (the commit built: each results file's git_commit)"
if [ -n "${TESTS:-}" ]; then
  timeout "${T_TESTS:-150}" build/bin/qwen3_tests --gtest_brief=1 --gtest_filter="$TESTS" >"$out/tests.log" 2>&1
  echo "tests exit $?"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? from.*ran|Failure|Expected|Which is" "$out/tests.log" | head -40
fi
if [ "${CALIBRATE:-1}" = runs ]; then  # the kernels of $RUNS' models at their lengths (tp 1) measured again on this host,
  # onto the committed calibration of this GPU kind, so that the runs are priced by this host's kernels (~1.3 s a case)
  models=$(for r in ${RUNS:?CALIBRATE=runs needs RUNS}; do echo "${r%%:*}"; done | sort -u | paste -sd,)
  lengths=$(for r in $RUNS; do cut -d: -f2 <<<"$r"; done | sort -nu | paste -sd,)
  CAL_ARGS="${CAL_ARGS:-} --models $models --tp 1 --lengths $lengths"
  CALIBRATE=1
fi
if [ "${CALIBRATE:-1}" = 1 ]; then
  t0=$(date +%s)
  timeout "${T_CAL:-240}" build/bin/qwen3-calibrate --out "$out/calibration/new.json" ${CAL_ARGS:-} 2>"$out/calibrate.log"
  echo "calibrate exit $? in $(( $(date +%s) - t0 )) s"; tail -3 "$out/calibrate.log"
  kind=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['kind'])" "$out/calibration/new.json" 2>/dev/null)
  if [ -n "$kind" ]; then
    mv "$out/calibration/new.json" "$out/calibration/$kind.json"
    mkdir -p build/bin/calibration && cp "$out/calibration/$kind.json" build/bin/calibration/
  fi
fi
smi=
if [ -n "${ONLY:-}${RUNS:-}" ]; then
  nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 >"$out/smi.csv" 2>/dev/null &
  smi=$!
fi
if [ -n "${ONLY:-}" ]; then
  t0=$(date +%s)
  timeout "${T_STUDY:-240}" build/bin/qwen3-sweep "${STUDY:?STUDY=spec}" --dir "$out/study" --local --only "$ONLY" 2>&1 | tee "$out/sweep.log"
  echo "sweep: $(( $(date +%s) - t0 )) s"
  for f in "$out"/study/results/*.h5; do
    [ -f "$f" ] && build/bin/qwen3-results "$f" --format json >"${f%.h5}.json" 2>/dev/null
  done
fi
for spec in ${OPTIMES:-}; do  # MODEL:SEQ:GB — where one step's GPU time goes, per operation (--op-times)
  IFS=: read -r model seq gb <<<"$spec"
  data="$out/optimes-data-$seq.h5"
  [ -f "$data" ] || build/bin/qwen3-dataset synthetic --out "$data" --vocab-size 151936 --lengths "$seq" --documents 64 --seed 7 >/dev/null
  timeout 120 build/bin/qwen3-pretrain --op-times --device cuda --model "$model" --data "$data" --seq-len "$seq" \
    --global-batch "$gb" --steps 3 --recompute auto --out "$out/optimes-$model-$seq-gb$gb.h5" --overwrite >"$out/optimes-$model-$seq-gb$gb.log" 2>&1
  echo "== op times $spec (exit $?)"; tail -n 45 "$out/optimes-$model-$seq-gb$gb.log"
  rm -f "$data"
done
t_runs=$(( $(date +%s) + ${T_RUNS:-240} ))
for spec in ${RUNS:-}; do  # MODEL:SEQ:GB:STEPS — single runs beside the study's cells (the step model's check, issue 28)
  IFS=: read -r model seq gb steps <<<"$spec"
  left=$(( t_runs - $(date +%s) )); [ "$left" -gt 5 ] || { echo "== run $spec: not started (T_RUNS spent)"; continue; }
  data="$out/runs/data-$seq.h5"; mkdir -p "$out/runs"
  [ -f "$data" ] || build/bin/qwen3-dataset synthetic --out "$data" --vocab-size 151936 --lengths "$seq" --documents 100 --seed 7 >/dev/null
  name="$model-L$seq-gb$gb"
  timeout "$left" build/bin/qwen3-pretrain --device cuda --model "$model" --data "$data" --seq-len "$seq" --global-batch "$gb" \
    --steps "$steps" --recompute auto --out "$out/runs/$name.h5" --overwrite >"$out/runs/$name.log" 2>&1
  echo "== run $spec (exit $?)"; build/bin/qwen3-results "$out/runs/$name.h5" 2>&1 | grep -E "status|throughput|predicted|memory plan"
  build/bin/qwen3-results "$out/runs/$name.h5" --format json >"$out/runs/$name.json" 2>/dev/null
done
rm -f "$out"/runs/data-*.h5
[ -n "$smi" ] && { kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null; }  # its last lines written before the tarball
if [ -n "${HF_SPECS:-}" ]; then
  echo "== Hugging Face baseline (tools/bench/hf_qwen3_train.py), same host"
  PYTHONUNBUFFERED=1 timeout "${T_HF:-150}" python3 tools/bench/hf_qwen3_train.py $HF_SPECS 2>&1 | grep -v Warning | tee "$out/hf.jsonl"
fi
rm -rf "$out"/study/data
echo "tarball: $dest/session.tgz"
exec 1>&3 2>&4; wait "$tee_pid"  # session.log whole before it is packed
tar czf "$dest/session.tgz" -C "$out" . && rm -rf "$out"
