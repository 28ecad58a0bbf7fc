#!/usr/bin/env python3
"""FP8 against bf16 training on the synthetic Markov data (issue 27's quality check): two results files of the same
model, data, seed and steps, one --precision bf16 and one fp8. Prints, from --from-step on, the largest and the mean
relative gap of fp8's loss curve to bf16's — each curve the mean over --smooth steps ending at the step, since one
step's loss carries its batch's noise (the per-step gap is printed too) — and the step from which they stay within
--gap; both runs' final loss (the mean of the last 10 steps) against the chain's entropy and ln(vocab)
(docs/datasets.md); PASS when the gap stays within --gap and both end closer to the entropy than to ln(vocab); and the
step at which each curve passes halfway from ln(vocab) to the entropy (a gap on the steep stretch is then a lead of so
many steps). --png draws the two curves and the entropy line.

--vocab: the chain's vocabulary when the data's is smaller than the model's (qwen3-dataset synthetic --vocab-size);
the entropy and ln(vocab) are then the chain's (ln of the model's vocabulary, where an untrained model starts, is printed
beside them).

--control: the same check between two bf16 runs that differ only in their micro-batch (the same optimizer steps, the
gradient summed in another order): how far apart the criterion puts two runs that no precision separates.

Usage: fp8_quality.py BF16.h5 FP8.h5 [--from-step 50] [--gap 0.01] [--smooth 10] [--vocab V] [--png OUT.png] [--control]"""
import argparse
import math
import sys
import textwrap


def markov_entropy(vocab):
    """The synthetic chain's entropy per token in nats (docs/datasets.md): 4 successors at 0.9/4 + 0.1/V, the other
    V − 4 tokens at 0.1/V."""
    a, b = 0.225 + 0.1 / vocab, 0.1 / vocab
    return -4 * a * math.log(a) - (vocab - 4) * b * math.log(b)


def read_run(path):
    """(losses per step, /config attributes as text) of a results file."""
    try:
        import h5py  # here, not at the top: --help works without it
    except ImportError:
        sys.exit("fp8_quality: needs h5py (Debian: /usr/bin/python3 with python3-h5py)")
    with h5py.File(path, "r") as f:
        config = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f["config"].attrs.items()}
        return [float(x) for x in f["steps/loss"][:]], config


def differing(a, b, allowed):
    """The /config keys that differ between the two runs other than `allowed` and the output (must be none)."""
    ignore = set(allowed) | {"out", "overwrite"}
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))


def label(config, control):
    """A run's name in the printout and the figure: its precision, and under --control its micro-batch."""
    name = config.get("precision", "bf16")
    if name == "fp8" and config.get("fp8_scaling", "current") != "current":
        name += f" ({config['fp8_scaling']} scaling)"
    return f"{name}, micro-batch {config.get('micro_batch')}" if control else name


def smoothed(losses, window):
    """The mean of the `window` losses ending at each step (fewer at the start)."""
    return [sum(losses[max(0, i + 1 - window):i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(losses))]


def gaps(bf16, fp8, from_step):
    """|fp8 − bf16| / bf16 for steps from_step.. (1-based), over the steps both ran."""
    n = min(len(bf16), len(fp8))
    return [abs(fp8[i] - bf16[i]) / abs(bf16[i]) for i in range(from_step - 1, n)]


def first_below(losses, level):
    """The first step (1-based) whose loss is below `level`, or None: where a curve passes a given loss, so that a gap
    on a steep stretch reads as the steps by which one run is ahead of the other."""
    return next((i + 1 for i, x in enumerate(losses) if x < level), None)


def final_loss(losses, last=10):
    tail = losses[-last:]
    return sum(tail) / len(tail)


def verdict(bf16, fp8, vocab, from_step, gap, smooth=10):
    """The check's figures and whether it passes (on the curves smoothed over `smooth` steps); the second run (fp8, or
    the control's other bf16 run) is measured against the first."""
    raw = gaps(bf16, fp8, from_step)
    curves = {"bf16": smoothed(bf16, smooth), "fp8": smoothed(fp8, smooth)}
    g = gaps(curves["bf16"], curves["fp8"], from_step)
    h, top = markov_entropy(vocab), math.log(vocab)
    ends = {"bf16": final_loss(bf16), "fp8": final_loss(fp8)}
    half = (h + top) / 2  # halfway from ln V to the entropy, on the curves smoothed as the gap is
    crossing = {name: first_below(curve, half) for name, curve in curves.items()}
    # the step from which the smoothed curves stay within the bound (None: apart at the last step)
    apart = [from_step + i for i, x in enumerate(g) if x > gap]
    settled = None if apart and apart[-1] == from_step + len(g) - 1 else (apart[-1] + 1 if apart else from_step)
    closer = all(abs(v - h) < abs(v - top) for v in ends.values())
    return {"max_gap": max(g), "mean_gap": sum(g) / len(g), "max_step_gap": max(raw), "entropy": h, "ln_vocab": top, "final": ends,
            "closer_to_entropy": closer, "pass": bool(g) and max(g) <= gap and closer, "halfway": half,
            "crossing": crossing, "settled": settled}


def plot(bf16, fp8, names, entropy, title, path):
    try:
        import matplotlib
    except ImportError:  # a GPU host's python3 may lack it: draw the figure here from the results files
        print(f"fp8_quality: no matplotlib, {path} not drawn")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(bf16) + 1), bf16, label=names[0], lw=1.2)
    ax.plot(range(1, len(fp8) + 1), fp8, label=names[1], lw=1.2, ls="--")
    ax.axhline(entropy, color="gray", ls=":", label=f"chain entropy {entropy:.3f} nats")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title("\n".join(textwrap.fill(line, 84) for line in title.split("\n")), fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bf16")
    p.add_argument("fp8")
    p.add_argument("--from-step", type=int, default=50)
    p.add_argument("--gap", type=float, default=0.01)
    p.add_argument("--smooth", type=int, default=10)
    p.add_argument("--vocab", type=int, help="the chain's vocabulary (default: the model's)")
    p.add_argument("--png")
    p.add_argument("--control", action="store_true",
                   help="two bf16 runs that differ only in their micro-batch (the criterion's own spread)")
    a = p.parse_args(argv)
    (bf16, cb), (fp8, cf) = read_run(a.bf16), read_run(a.fp8)
    if a.control:
        if cb.get("precision", "bf16") != "bf16" or cf.get("precision", "bf16") != "bf16":
            sys.exit("fp8_quality: --control compares two bf16 runs")
        if cb.get("micro_batch") == cf.get("micro_batch"):
            sys.exit("fp8_quality: --control's two runs must differ in their micro-batch")
        differ = differing(cb, cf, {"micro_batch"})
    else:
        if cb.get("precision", "bf16") != "bf16" or cf.get("precision") != "fp8":
            sys.exit("fp8_quality: the first file must be a bf16 run and the second an fp8 run")
        # how the fp8 run scales and keeps its FP8 copies is part of its precision, not a second difference
        differ = differing(cb, cf, {"precision", "fp8_scaling", "fp8_weights"})
    if differ:
        what = "micro-batch" if a.control else "precision"
        sys.exit(f"fp8_quality: the runs differ in more than {what}: " + ", ".join(differ))
    names = (label(cb, a.control), label(cf, a.control))
    if min(len(bf16), len(fp8)) < a.from_step:
        sys.exit(f"fp8_quality: the runs have fewer than {a.from_step} steps (--from-step)")
    model_vocab = int(cb["model.vocab_size"])
    vocab = a.vocab or model_vocab
    if not 4 < vocab <= model_vocab:
        sys.exit(f"fp8_quality: --vocab {vocab} must lie in 5..{model_vocab}, the model's vocabulary")
    v = verdict(bf16, fp8, vocab, a.from_step, a.gap, a.smooth)
    print(f"{cb.get('model.name')} at {cb.get('seq_len')} tokens, {len(bf16)} steps: {names[1]}'s loss curve ({a.smooth}-step "
          f"mean) within {v['max_gap']:.2%} of {names[0]}'s from step {a.from_step} on (mean {v['mean_gap']:.2%}; bound "
          f"{a.gap:.0%}); single steps up to {v['max_step_gap']:.2%} apart; "
          + (f"within the bound from step {v['settled']} on" if v["settled"] else "outside the bound at the last step"))
    print(f"final loss (last 10 steps): {names[0]} {v['final']['bf16']:.4f}, {names[1]} {v['final']['fp8']:.4f}; chain entropy "
          f"{v['entropy']:.4f}, ln(vocab) {v['ln_vocab']:.4f} (chain vocabulary {vocab}; an untrained model starts at "
          f"ln {model_vocab} = {math.log(model_vocab):.4f}): " +
          ("both closer to the entropy" if v["closer_to_entropy"] else "NOT both closer to the entropy"))
    c = {k: ("never" if x is None else f"at step {x}") for k, x in v["crossing"].items()}
    print(f"halfway from ln(vocab) to the entropy ({v['halfway']:.3f} nats, {a.smooth}-step mean): {names[0]} "
          f"{c['bf16']}, {names[1]} {c['fp8']}")
    print("PASS" if v["pass"] else "FAIL")
    if a.png:
        plot(bf16, fp8, names, v["entropy"], f"{cb.get('model.name')}, {cb.get('seq_len')} tokens: {names[0]} and "
             f"{names[1]} from the same weights and data\n(chain vocabulary {vocab}, {len(bf16)} steps; peak lr "
             f"{cb.get('lr')}, {cb.get('warmup_steps')} warm-up steps, init std {cb.get('init_std')})", a.png)
    return 0 if v["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
