#!/usr/bin/env bash
# Start-up time on a GPU host, as a sweep user meets it: inputs/startup-1gpu.sweep.ini run by qwen3-sweep --local
# (its own mpirun, binding and threads), then each cell's init_s (process start to the first step, results file) and
# the wall time of its whole launch; beside it, Hugging Face's time to build each model on the GPU.
# Usage: tools/bench/startup.sh OUTDIR [SPEC]
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: startup.sh OUTDIR [SPEC]}"; spec="${2:-inputs/startup-1gpu.sweep.ini}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
echo "host: $(nproc) cores"
t0=$(date +%s%N)
build/bin/qwen3-sweep "$spec" --dir "$out/sweep" --local 2>&1 | tee "$out/sweep.log"
echo "whole sweep: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
for f in "$out"/sweep/results/*.h5; do
  echo "== $(basename "$f" .h5)"
  build/bin/qwen3-results "$f" | grep -E "status|timings|peak memory" | head -4
done
for log in "$out"/sweep/logs/*.log; do echo "== $(basename "$log")"; grep -E "error|note" "$log" | head -3; done
echo "== Hugging Face: Qwen3ForCausalLM built on the GPU (random init), same host"
python3 - <<'PY' 2>&1 | grep -v Warning
import time, torch, sys
sys.path.insert(0, "tools/bench")
from transformers import Qwen3Config, Qwen3ForCausalLM
import hf_qwen3_train as hf  # noqa: its CFG table; importing runs nothing without arguments
for name in ("0.6B", "1.7B", "4B", "8B"):
    c = Qwen3Config(vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6, attn_implementation="sdpa", **hf.CFG[name])
    torch.cuda.synchronize(); t = time.perf_counter()
    with torch.device("cuda"): m = Qwen3ForCausalLM(c)
    torch.cuda.synchronize(); print(f"HF {name}: model built on the GPU in {time.perf_counter() - t:.2f} s", flush=True)
    del m; torch.cuda.empty_cache()
PY
