#!/usr/bin/env bash
# One multi-GPU session for tensor parallelism over a carried build folder: the GPU and multi-GPU tests, the CUDA
# golden checks at tp 1, 2, 4, then the tensor-parallel benchmarks (ours under mpirun, the Hugging Face baseline on
# one GPU in the same call). Logs and a summary go under $OUT (or ./gpu-out), packed into one tarball.
# Usage: tp_session.sh [tests|bench|all]; BENCH lists MODEL:SEQ:GLOBAL_BATCH:TP:PP:RANKS[:SM_MARGIN[:RECOMPUTE[:CP[:OPT]]]]
# runs (data parallelism = RANKS / (TP × PP × CP); RECOMPUTE none, selective, full, full+offload or auto; OPT the
# optimizer's fraction on the host, --offload-optimizer=OPT), HF_SPECS the baseline's. EXTRA is added to every
# qwen3-pretrain command line.
set -uo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"
out="${OUT:-gpu-out}"; logs="$out/logs"; mkdir -p "$logs"
op_times=""; [ "${OP_TIMES:-0}" = 1 ] && op_times="--op-times"  # OP_TIMES=1: the engine's per-operation GPU times
export QWEN3_BIN_DIR="$PWD/build/bin" QWEN3_TEST_DATA_DIR="$PWD/tests/data" NCCL_NVLS_ENABLE=0
bin="${BIN:-build/bin}"  # BIN: another build's bin folder (an earlier tree's, for a same-call comparison)
gpus=$(nvidia-smi -L | wc -l)
summary="$out/summary.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nvidia-smi topo -m | head -8; } | tee "$summary"
run_mpi() { local np=$1; shift; mpirun --allow-run-as-root --bind-to none -np "$np" -x NCCL_NVLS_ENABLE "$@"; }

if [ "$what" = tests ] || [ "$what" = all ]; then
  "$bin/qwen3_tests" --gtest_brief=1 --gtest_filter="${GTEST_FILTER:-Cuda*:Cudnn*:CommCheck*:MemoryPlan*:Golden*:TensorParallel*}" \
    >"$logs/unit.log" 2>&1
  echo "unit tests exit $?" | tee -a "$summary"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? ran|Failure|Expected|Which is" "$logs/unit.log" | head -60 | tee -a "$summary"
  for g in tests/data/*.h5; do
    for tp in 1 2 4; do
      [ "$tp" -le "$gpus" ] || continue
      log="$logs/golden-$(basename "$g" .h5)-tp$tp.log"
      run_mpi "$tp" "$bin/qwen3-golden-check" --golden "$g" --device cuda --tp "$tp" >"$log" 2>&1
      rc=$?
      echo "golden $(basename "$g") tp $tp: exit $rc $(grep -E 'out of tolerance|error:' "$log" | tail -1)" | tee -a "$summary"
    done
    case "$g" in *untied*) continue ;; esac  # 37 tokens: no 2 × cp chunks
    log="$logs/golden-$(basename "$g" .h5)-cp2.log"  # two ranks: on one GPU they share it (host-staged exchange)
    run_mpi 2 "$bin/qwen3-golden-check" --golden "$g" --device cuda --cp 2 >"$log" 2>&1
    echo "golden $(basename "$g") cp 2: exit $? $(grep -E 'out of tolerance|error:' "$log" | tail -1)" | tee -a "$summary"
  done
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  for spec in ${BENCH:-}; do
    IFS=: read -r model seq gb tp pp np margin recompute cp opt <<<"$spec"
    data="$out/data-$seq.h5"
    [ -f "$data" ] || "$bin/qwen3-dataset" synthetic --out "$data" --vocab-size 151936 --lengths "$seq" --documents 64 \
      --seed 7 >/dev/null
    rc_mode="${recompute:-none}"; rc_mode="${rc_mode%+offload}"
    rc_offload=""; [ "${recompute:-}" = "$rc_mode+offload" ] && rc_offload="--offload-inputs"
    opt_arg=""; [ -n "${opt:-}" ] && opt_arg="--offload-optimizer=$opt"
    tag="$model-$seq-gb$gb-t$tp-p$pp-c${cp:-1}-n$np-m${margin:-0}-r${recompute:-none}${opt:+-o$opt}"
    run_mpi "$np" "$bin/qwen3-pretrain" --device cuda --model "$model" --data "$data" --comm-sm-margin "${margin:-0}" \
      --seq-len "$seq" --global-batch "$gb" --micro-batch 1 --steps "${STEPS:-5}" --warmup-steps 1 --tp "$tp" --pp "$pp" \
      --cp "${cp:-1}" --recompute "${rc_mode}" ${rc_offload} ${opt_arg} ${op_times} ${EXTRA:-} --out "$out/$tag.h5" --overwrite >"$logs/$tag.log" 2>&1
    echo "== ours $tag (exit $?)" | tee -a "$summary"
    tail -n 2 "$logs/$tag.log" | tee -a "$summary"
    "$bin/qwen3-results" "$out/$tag.h5" >"$logs/$tag.results.txt" 2>&1
    sed -n '2p;6,12p' "$logs/$tag.results.txt" | tee -a "$summary"
    python3 - "$out/$tag.h5" <<'PY' 2>&1 | tee -a "$summary"
import sys, h5py
f = h5py.File(sys.argv[1])
a = f.attrs
r = a.get("recompute", b""); r = r.decode() if isinstance(r, bytes) else r
print("  recompute", r, "num_layers", a.get("recompute_num_layers"), "offload", a.get("offload_inputs"),
      "optimizer on host", a.get("offload_optimizer"),
      "host pinned GiB", round(int(a.get("memory_host_pinned_bytes", 0)) / 2**30, 2),
      "plan", round(int(a.get("plan_host_pinned_bytes", 0)) / 2**30, 2))
if "ranks" in f:
    r = f["ranks"]
    for k in ("compute_s", "pipeline_wait_s", "dp_reduce_s", "step_s"):
        print(f"  {k:16s}", " ".join(f"{v:7.3f}" for v in r[k][:]))
    if "stages" in f:
        st = f["stages"]
        print("  stages          ", list(zip(st["first_layer"][:].astype(int), st["end_layer"][:].astype(int))),
              "1F1B bubble formula", round(float(st["bubble_formula"][0]), 3))
PY
    mv "$out/$tag.h5" "$logs/" 2>/dev/null
  done
  if [ -n "${HF_SPECS:-}" ]; then
    echo "== Hugging Face baseline (tools/bench/hf_qwen3_train.py), one GPU, same host" | tee -a "$summary"
    PYTHONUNBUFFERED=1 python3 tools/bench/hf_qwen3_train.py $HF_SPECS 2>&1 | grep -v Warning | tee "$logs/hf.jsonl" | tee -a "$summary"
  fi
fi
rm -f "$out"/data-*.h5
tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$logs"
