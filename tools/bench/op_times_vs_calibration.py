#!/usr/bin/env python3
"""One step's operations as the engine's own op timer measured them inside a training step (qwen3-pretrain --op-times,
tensor parallel 1, micro-batch 1), each beside what the calibration prices the same call at alone: the evidence of
how far an operation runs slower inside a step than in qwen3-calibrate (issue 28 item 3).

Usage: tools/bench/op_times_vs_calibration.py LOG MODEL SEQ CALIBRATION.json [--global-batch M] [--bin build/bin]
                                               [--write SOURCE] [--groups attention_fwd,attention_bwd]
--global-batch: the run's (micro-batch 1, so its micro-batches per step): a step's first micro-batch writes the weight
gradients (gemm_wgrad_set), the other M - 1 add to them (gemm_wgrad), so a weight GEMM's label is priced as that mix.
--write: put the in-step factor of each of --groups (attention_fwd, attention_bwd, gemm, other: the group's time in
the steps over its time alone) into the calibration file's "in_step" section as the point at SEQ tokens of that
group's curve (a point already there at SEQ is replaced), SOURCE added to what the section says it rests on. The
default groups are attention's: the GEMMs' in-step time differs from their time alone by role (the tool prints the
block GEMMs' factor for forward, data and weight gradient), so they stay as measured.
LOG: qwen3-pretrain's output with --op-times (lines '  12.34 ms  5.6%  56 calls  gemm qkv fwd'). An
operation's time alone and its in-step group are `qwen3-pretrain --plan`'s (predicted.operations, on CALIBRATION):
this tool restates only which calibration key each of the op timer's labels names."""
import argparse
import json
import os
import re
import subprocess

LINE = re.compile(r"^\s*([\d.]+) ms\s+[\d.]+%\s+(\d+) calls\s+(.+?)\s*$")


def model_of(name, bin_dir):
    out = subprocess.run([os.path.join(bin_dir, "qwen3-pretrain"), "--list-models", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    return next(m for m in json.loads(out) if m["name"] == name)


def keys(m):
    """The op timer's label → the calibration key of its kernel (tp 1: the engine's kernels, train/cuda_engine/qwen3_blocks.cpp
    and the head); what the key costs alone, at which token counts and how often, is --plan's."""
    H, I, V, D = m["hidden_size"], m["intermediate_size"], m["vocab_size"], m["head_dim"]
    q, kv = m["num_heads"] * D, m["num_kv_heads"] * D
    qkv = q + 2 * kv
    att = f"{m['num_heads']}/{m['num_kv_heads']}/{D}"
    return {
        "gemm qkv fwd": f"gemm_fwd {H}x{qkv}", "gemm o fwd": f"gemm_fwd {q}x{H}",
        "gemm gate_up fwd": f"gemm_fwd {H}x{2 * I}", "gemm down fwd": f"gemm_fwd {I}x{H}",
        "gemm lm_head fwd": f"gemm_fwd {H}x{V}",
        "gemm down bwd data": f"gemm_dgrad_bf16 {I}x{H}", "gemm gate_up bwd data": f"gemm_dgrad_f32 {H}x{2 * I}",
        "gemm o bwd data": f"gemm_dgrad_bf16 {q}x{H}", "gemm qkv bwd data": f"gemm_dgrad_f32 {H}x{qkv}",
        "gemm lm_head bwd data": f"gemm_dgrad_f32 {H}x{V}",
        "gemm down bwd weight": f"gemm_wgrad {I}x{H}", "gemm gate_up bwd weight": f"gemm_wgrad {H}x{2 * I}",
        "gemm o bwd weight": f"gemm_wgrad {q}x{H}", "gemm qkv bwd weight": f"gemm_wgrad {H}x{qkv}",
        "gemm lm_head bwd weight": f"gemm_wgrad {H}x{V}",  # each also written (gemm_wgrad_set): see written_calls
        "attention fwd": f"attention_fwd {att}", "attention bwd": f"attention_bwd {att}",
        "rmsnorm fwd": f"rmsnorm_fwd {H}", "rmsnorm bwd": f"rmsnorm_bwd {H}",
        "swiglu fwd": f"swiglu_fwd {I}", "swiglu bwd": f"swiglu_bwd {I}",
        "cross-entropy": f"cross_entropy {V}",
    }


def alone_per_call(model, seq, calibration, bin_dir):
    """key → (seconds of one call alone, averaged over its calls in a micro-batch; in-step group), from --plan."""
    with open(calibration) as f:
        kind = json.load(f)["kind"]
    # Two micro-batches: the first's weight GEMMs write their gradients, the second's add (both kinds priced).
    out = subprocess.run([os.path.join(bin_dir, "qwen3-pretrain"), "--plan", "--format", "json", "--device", "cuda",
                          "--model", model, "--seq-len", str(seq), "--global-batch", "2", "--recompute", "none",
                          "--offload-optimizer=0", "--device-memory", kind, "--calibration", calibration],
                         capture_output=True, text=True)
    if out.returncode not in (0, 3):
        raise SystemExit(f"op_times_vs_calibration: qwen3-pretrain --plan: {out.stderr.strip()}")
    predicted = json.loads(out.stdout)["predicted"]
    if predicted is None:
        raise SystemExit("op_times_vs_calibration: the calibration does not price this model at this length")
    per_key = {}  # key → [Σ calls × alone, Σ calls, group]
    for o in predicted["operations"]:
        k = per_key.setdefault(o["key"], [0.0, 0, o["in_step_group"]])
        k[0] += o["calls"] * o["alone_s"]
        k[1] += o["calls"]
    return {key: (total / calls, group) for key, (total, calls, group) in per_key.items()}


def written_calls(label, calls, micro_batches, steps):
    """Of a weight GEMM label's calls in the timed steps, those that wrote the gradient: each step's first micro-batch's
    (a layer's GEMM once per layer, the head's first logit chunk once)."""
    if not label.endswith("bwd weight"):
        return 0
    return steps if "lm_head" in label else calls // micro_batches


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("model")
    ap.add_argument("seq", type=int)
    ap.add_argument("calibration")
    ap.add_argument("--global-batch", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin"))
    ap.add_argument("--write", default="", metavar="SOURCE")
    ap.add_argument("--groups", default="attention_fwd,attention_bwd")
    a = ap.parse_args()
    calibration = json.load(open(a.calibration))
    alone_of = alone_per_call(a.model, a.seq, a.calibration, a.bin)
    groups = {}  # group → [ms in the steps, ms alone]
    table = keys(model_of(a.model, a.bin))
    print(f"| operation ({a.model}, {a.seq:,} tokens) | calls | in the step (ms per call) | calibrated alone | step / alone |")
    print("|---|---|---|---|---|")
    sums = [0.0, 0.0]
    roles = {}  # the block GEMMs by role (gemm_fwd, gemm_dgrad, gemm_wgrad) → [ms in the steps, ms alone]
    lines = [(float(m.group(1)), int(m.group(2)), m.group(3)) for m in map(LINE.match, open(a.log)) if m]
    layers = model_of(a.model, a.bin)["num_layers"]
    # Timed steps: a layer's attention runs once per micro-batch (the head's written weight GEMM once per step).
    attention_calls = next((calls for _, calls, label in lines if label == "attention fwd"), 0)
    if attention_calls == 0:
        raise SystemExit("op_times_vs_calibration: no 'attention fwd' line in the log: not an op timer's output?")
    steps = attention_calls // (layers * a.global_batch)
    for ms, calls, label in lines:
        if label not in table or table[label] not in alone_of:
            continue
        seconds, group = alone_of[table[label]]
        written = written_calls(label, calls, a.global_batch, steps)
        if written:  # the calls that wrote the gradient at the written GEMM's price, the rest at the adding one's
            seconds = (written * alone_of[table[label].replace("gemm_wgrad", "gemm_wgrad_set")][0] +
                       (calls - written) * seconds) / calls
        alone = 1e3 * seconds
        sums[0] += ms
        sums[1] += alone * calls
        g = groups.setdefault(group, [0.0, 0.0])
        g[0] += ms
        g[1] += alone * calls
        if table[label].startswith("gemm_") and "lm_head" not in label:
            r = roles.setdefault(table[label].split()[0].replace("_bf16", "").replace("_f32", ""), [0.0, 0.0])
            r[0] += ms
            r[1] += alone * calls
        print(f"| {label} | {calls} | {ms / calls:.4f} | {alone:.4f} | {ms / calls / alone:.3f} |")
    print(f"\nthese operations: {sums[0]:.2f} ms in the steps, {sums[1]:.2f} ms calibrated alone ({sums[0] / sums[1]:.3f})")
    factors = {g: round(t / alone, 4) for g, (t, alone) in sorted(groups.items())}
    print("in-step factor per group: " + ", ".join(f"{g} {f:.3f}" for g, f in factors.items()))
    print("the block GEMMs by role, step / alone: " + ", ".join(f"{r} {t / alone:.3f}" for r, (t, alone) in sorted(roles.items())))
    if a.write:
        section = calibration.setdefault("in_step", {"source": "", "factors": {}})
        for g in a.groups.split(","):
            old = section["factors"].get(g, [])
            curve = [[4096.0, old]] if isinstance(old, (int, float)) else [p for p in old if p[0] != a.seq]
            section["factors"][g] = sorted(curve + [[float(a.seq), factors[g]]])
        section["source"] = "; ".join(x for x in (section["source"], f"at {a.seq:,} tokens: {a.write}") if x)
        with open(a.calibration, "w") as f:
            json.dump(calibration, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
