#!/usr/bin/env python3
"""What --precision fp8 saves and what its casts cost, per decoder layer and micro-batch, as the step model prices them
on a calibration: `qwen3-pretrain --plan --format json` of one micro-batch (tp 1, no recomputation, the optimizer on
the GPU) in bf16 and in fp8; the GEMMs' time alone in the bf16 plan less that in the fp8 plan (the FP8 linear layers;
the output projection stays bf16 in both), against the fp8 plan's casts of one micro-batch (amaxes, casts of inputs and
gradients: what a second micro-batch adds to the step's casts); the weights' casts, once per step with kept copies,
apart. Prints a markdown table.

Usage: tools/bench/fp8_budget.py CALIBRATION.json [--models 0.6B,1.7B,8B] [--tokens 4096,8192] [--bin build/bin]"""
import argparse
import json
import subprocess


def plan(bin_dir, calibration, kind, model, tokens, precision, micro_batches=1):
    """The plan's priced operations, or exit naming what is unpriced."""
    out = subprocess.run([f"{bin_dir}/qwen3-pretrain", "--plan", "--format", "json", "--device", "cuda", "--model", model,
                          "--seq-len", str(tokens), "--global-batch", str(micro_batches), "--recompute", "none", "--offload-optimizer=0",
                          "--precision", precision, "--device-memory", kind, "--calibration", calibration],
                         capture_output=True, text=True)
    if out.returncode not in (0, 3):  # 3: does not fit the card, still priced
        raise SystemExit(f"fp8_budget: qwen3-pretrain --plan: {out.stderr.strip()}")
    p = json.loads(out.stdout)
    if not p.get("predicted"):
        raise SystemExit(f"fp8_budget: the calibration does not price {model} at {tokens} tokens in {precision}")
    return p["predicted"]["operations"]


def seconds(ops, keep):
    return sum(o["calls"] * o["alone_s"] for o in ops if keep(o))


def budget(bf16_ops, fp8_ops, fp8_two_ops):
    """(GEMM time saved, casts of one micro-batch's tensors, casts of the weights) in seconds, whole model, from the
    plans of one micro-batch in bf16 and fp8 and of two in fp8 (the weights' casts: once per step)."""
    gemm = lambda o: o["in_step_group"] == "gemm"
    cast = lambda o: o["key"].startswith("fp8_")
    one, two = seconds(fp8_ops, cast), seconds(fp8_two_ops, cast)
    return seconds(bf16_ops, gemm) - seconds(fp8_ops, gemm), two - one, 2 * one - two


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("calibration")
    p.add_argument("--models", default="0.6B,1.7B,8B")
    p.add_argument("--tokens", default="4096,8192")
    p.add_argument("--bin", default="build/bin")
    a = p.parse_args(argv)
    with open(a.calibration) as f:
        kind = json.load(f)["kind"]
    listed = json.loads(subprocess.run([f"{a.bin}/qwen3-pretrain", "--list-models", "--format", "json"], check=True,
                                       capture_output=True, text=True).stdout)
    layers = {m["name"]: m["num_layers"] for m in listed}
    print(f"FP8 per decoder layer and micro-batch on {kind}, as --plan prices it ({a.calibration}):\n")
    print("| model | tokens | bf16 GEMMs less FP8 GEMMs (ms) | FP8 casts (ms) | net (ms) | weight casts per step (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in a.models.split(","):
        for tokens in (int(t) for t in a.tokens.split(",")):
            ops = [plan(a.bin, a.calibration, kind, name, tokens, prec, n) for prec, n in (("bf16", 1), ("fp8", 1),
                                                                                          ("fp8", 2))]
            saved, casts, weights = budget(*ops)
            saved, casts = saved / layers[name] * 1e3, casts / layers[name] * 1e3
            print(f"| {name} | {tokens:,} | {saved:.3f} | {casts:.3f} | {saved - casts:+.3f} | {weights * 1e3:.3f} |")


if __name__ == "__main__":
    main()
