#!/usr/bin/env python3
"""How well one card's kernel times carry to another through a bf16 counterpart measured on both — a proxy for
--estimate-from's premise (train/calibration.h CalibrationPricer), which needs FP8 kernels on both cards to test
directly: for each bf16 kernel measured on both cards, its time on card B estimated as B's counterpart × A's kernel /
A's counterpart, against B's own measurement, at the token counts where all four were measured (no interpolation)
from MIN_TOKENS on. The proxy's counterparts: a weight- or data-gradient GEMM's the forward GEMM of the same shape
(--estimate-from maps an FP8 GEMM to the bf16 GEMM of its own kind); a memory-bound kernel's the fp32-to-bf16 cast of
the same width at the same rows (--estimate-from: the widest cast both cards measured, at as many elements).

Usage: tools/bench/estimate_check.py [A.json] [B.json] [--min-tokens 4096]   (default calibration/h100-80gb.json,
calibration/h200.json). Prints per kernel kind: the points, the time-weighted error (sum of estimates / sum of
measurements − 1) and the median, smallest and largest error of one point. Standard library only."""
import argparse
import json
import os
import statistics

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GEMMS = ("gemm_dgrad_bf16", "gemm_dgrad_f32", "gemm_wgrad", "gemm_wgrad_set")
MEMORY_BOUND = ("rmsnorm_fwd", "rmsnorm_bwd", "embedding_fwd", "embedding_bwd", "add_bf16")


def counterpart(key):
    kind, _, dims = key.partition(" ")
    if kind in GEMMS:
        return "gemm_fwd " + dims
    if kind in MEMORY_BOUND:
        return "cast_f32_bf16 " + dims
    return None


def check(a, b, min_tokens):
    """{kind: [(estimate, measured), ...]} over the points where A and B measured the kernel and its counterpart."""
    out = {}
    for key, curve in b.items():
        cp = counterpart(key)
        if cp is None or key not in a or cp not in a or cp not in b:
            continue
        ka, ca, cb = dict(a[key]), dict(a[cp]), dict(b[cp])
        for tokens, measured in curve:
            if tokens >= min_tokens and tokens in ka and tokens in ca and tokens in cb:
                out.setdefault(key.split()[0], []).append((cb[tokens] * ka[tokens] / ca[tokens], measured))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", nargs="?", default=os.path.join(ROOT, "calibration", "h100-80gb.json"))
    ap.add_argument("b", nargs="?", default=os.path.join(ROOT, "calibration", "h200.json"))
    ap.add_argument("--min-tokens", type=float, default=4096)
    args = ap.parse_args()
    ops = [json.load(open(p))["ops"] for p in (args.a, args.b)]
    print(f"{os.path.basename(args.b)} estimated from {os.path.basename(args.a)}, tokens >= {args.min_tokens:g}")
    for kind, pairs in sorted(check(*ops, args.min_tokens).items()):
        errors = [e / m - 1 for e, m in pairs]
        weighted = sum(e for e, _ in pairs) / sum(m for _, m in pairs) - 1
        print(f"  {kind:16s} {len(pairs):4d} points: time-weighted {weighted:+.1%}, "
              f"median {statistics.median(errors):+.1%}, from {min(errors):+.1%} to {max(errors):+.1%} "
              f"(via {counterpart(kind + ' x').split()[0]})")


if __name__ == "__main__":
    main()
