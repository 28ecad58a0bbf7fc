"""qwen3-pretrain --plan --format json for one layout: the one builder of that command for the tools that hold the
step model against measured runs (predict_check.py: results files; prediction_table.py: the runs BENCHMARKS.md
records). Standard library only."""
import json
import os
import subprocess
import sys


def plan(bin_dir, layout, calibration="", tool="plan_json", estimate_from=""):
    """--plan's JSON for `layout`: model, seq_len, global_batch, micro_batch, tp, pp, cp, world_size, device_memory,
    recompute, and optionally recompute_num_layers, offload_inputs (bool), offload_optimizer (fraction; absent or
    None: the option's own default, which --recompute auto may raise), pp_layers ("9,10,10,7"), shard_optimizer
    (bool, default true), precision ("bf16" or "fp8"; absent: the option's default), fp8_weights ("kept",
    "per-layer") and fp8_scaling ("current", "delayed"; each absent or empty: the option's default). Exit 3 (the plan does not fit) still prints the JSON; any
    other failure ends the tool naming the command. estimate_from: --estimate-from (another card's calibration for the
    FP8 kernels `calibration` lacks)."""
    cmd = [os.path.join(bin_dir, "qwen3-pretrain"), "--plan", "--format", "json", "--device", "cuda"]
    for option, key in (("--model", "model"), ("--seq-len", "seq_len"), ("--global-batch", "global_batch"),
                        ("--micro-batch", "micro_batch"), ("--tp", "tp"), ("--pp", "pp"), ("--cp", "cp"),
                        ("--world-size", "world_size"), ("--device-memory", "device_memory"),
                        ("--recompute", "recompute")):
        cmd += [option, str(layout[key])]
    if layout.get("offload_optimizer") is not None:
        cmd.append(f"--offload-optimizer={float(layout['offload_optimizer']):g}")
    if layout.get("recompute_num_layers"):
        cmd += ["--recompute-num-layers", str(layout["recompute_num_layers"])]
    if layout.get("offload_inputs"):
        cmd.append("--offload-inputs")
    if layout.get("pp_layers"):
        cmd += ["--pp-layers", layout["pp_layers"]]
    if layout.get("precision"):
        cmd += ["--precision", layout["precision"]]
    if layout.get("fp8_weights"):
        cmd += ["--fp8-weights", layout["fp8_weights"]]
    if layout.get("fp8_scaling"):
        cmd += ["--fp8-scaling", layout["fp8_scaling"]]
    if not layout.get("shard_optimizer", True):
        cmd.append("--no-shard-optimizer")
    if calibration:
        cmd += ["--calibration", calibration]
    if estimate_from:
        cmd += ["--estimate-from", estimate_from]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 3):
        sys.exit(f"{tool}: {' '.join(cmd)}: {r.stderr.strip()}")
    return json.loads(r.stdout)
