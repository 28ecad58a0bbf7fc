#!/usr/bin/env python3
"""What --precision fp8 saves and what its casts cost, per decoder layer and micro-batch, from a calibration's measured
kernels (qwen3-calibrate): for each of the four linear layers, the bf16 GEMMs (forward, data gradient, weight gradient)
less the FP8 ones, against the casts FP8 adds (the input's amax and cast in the forward; the output gradient's amax and
cast to both copies, and the input's transposed cast, in the backward) — the terms the step model prices. Shapes of
one GPU (tp 1); the models from qwen3-pretrain --list-models. Prints a markdown table.

Usage: tools/bench/fp8_budget.py CALIBRATION.json [--models 0.6B,1.7B,8B] [--tokens 4096,8192] [--bin build/bin]"""
import argparse
import json
import math
import subprocess


def seconds(ops, key, tokens):
    """The calibration's time of one kernel at `tokens` (linear between measured token counts), NaN when unmeasured."""
    pts = sorted((float(t), s) for t, s in ops.get(key, []))
    for (t0, s0), (t1, s1) in zip(pts, pts[1:]):
        if t0 <= tokens <= t1:
            return s0 + (s1 - s0) * (tokens - t0) / (t1 - t0)
    exact = [s for t, s in pts if t == tokens]
    return exact[0] if exact else math.nan


def linears(m):
    """(in, out) of q|k|v, the attention output, gate|up and down."""
    h, q, kv, i = m["hidden_size"], m["num_heads"] * m["head_dim"], m["num_kv_heads"] * m["head_dim"], m["intermediate_size"]
    return [(h, q + 2 * kv), (q, h), (h, 2 * i), (i, h)]


def gemms(ops, prefix, shape, tokens):
    """Forward, data gradient (fp32 or bf16 output, whichever the calibration holds) and weight gradient."""
    data = seconds(ops, f"{prefix}_dgrad_f32 {shape}", tokens)
    if math.isnan(data):
        data = seconds(ops, f"{prefix}_dgrad_bf16 {shape}", tokens)
    return seconds(ops, f"{prefix}_fwd {shape}", tokens) + data + seconds(ops, f"{prefix}_wgrad {shape}", tokens)


def budget(ops, model, tokens):
    """(GEMM time saved, cast time added) in seconds, one layer, one micro-batch of `tokens`."""
    saved = added = 0.0
    for i, o in linears(model):
        shape = f"{i}x{o}"
        saved += gemms(ops, "gemm", shape, tokens) - gemms(ops, "gemm8", shape, tokens)
        added += sum(seconds(ops, k, tokens) for k in (f"fp8_amax {i}", f"fp8_cast {i}", f"fp8_amax {o}",
                                                        f"fp8_cast_both {o}", f"fp8_cast_t {i}"))
    return saved, added


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("calibration")
    p.add_argument("--models", default="0.6B,1.7B,8B")
    p.add_argument("--tokens", default="4096,8192")
    p.add_argument("--bin", default="build/bin")
    a = p.parse_args(argv)
    with open(a.calibration) as f:
        cal = json.load(f)
    listed = json.loads(subprocess.run([f"{a.bin}/qwen3-pretrain", "--list-models", "--format", "json"], check=True,
                                       capture_output=True, text=True).stdout)
    presets = {m["name"]: m for m in listed}
    print(f"FP8 per decoder layer and micro-batch on {cal.get('kind', '?')} ({a.calibration}):\n")
    print("| model | tokens | bf16 GEMMs less FP8 GEMMs (ms) | FP8 casts (ms) | net (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name in a.models.split(","):
        for tokens in (int(t) for t in a.tokens.split(",")):
            saved, added = budget(cal["ops"], presets[name], tokens)
            print(f"| {name} | {tokens:,} | {saved * 1e3:.3f} | {added * 1e3:.3f} | {(saved - added) * 1e3:+.3f} |")


if __name__ == "__main__":
    main()
