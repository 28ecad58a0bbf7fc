#!/usr/bin/env python3
"""The 8 x H200 answer beside the published study's, cell by cell (issue 28 item 4): for each of the study's 90 cells
(inputs/published-study-8xh200.csv: which trained under NeMo and which ran out of memory), qwen3-pretrain --plan with
--recompute auto on the study's spec (inputs/study-8xh200.sweep.ini) — does it fit, with which memory policy — and the
predicted run time of the study's 50 steps in minutes with a band from the model's measured error on the multi-GPU
runs on record of the same layout family (tools/bench/prediction_table.py over tools/bench/recorded_runs.csv).

Usage: tools/bench/study_vs_published.py [--bin build/bin] [--out FILE] [--figure PNG]
Standard library only, but --figure (the study's own plot, predicted: run time against length per layout, a line per
model with its band, NeMo's out-of-memory cells marked), which needs matplotlib."""
import argparse
import configparser
import csv
import json
import os
import sys

import plan_json
import prediction_table as pt

SPEC = os.path.join(pt.ROOT, "inputs", "study-8xh200.sweep.ini")
PUBLISHED = os.path.join(pt.ROOT, "inputs", "published-study-8xh200.csv")


def read_spec(path):
    cp = configparser.ConfigParser()
    cp.read(path)
    s = cp["sweep"]
    return {"global_batch": s["global_batch"], "micro_batch": s["micro_batch"], "steps": int(s["steps"]),
            "gpus": s["gpus_per_node"], "device_memory": s["device_memory"]}


def read_published(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def plan_of(cell, spec, bin_dir):
    """--plan's JSON for one of the study's cells (plan_json.py builds the command), the memory policy left to auto."""
    tp, pp = cell["layout"][1], cell["layout"][3]
    return plan_json.plan(bin_dir, {
        "model": cell["model"], "seq_len": cell["seq_len"], "global_batch": spec["global_batch"],
        "micro_batch": spec["micro_batch"], "tp": tp, "pp": pp, "cp": 1, "world_size": spec["gpus"],
        "device_memory": spec["device_memory"], "recompute": "auto"}, tool="study_vs_published")


def error_bands(bin_dir):
    """Per layout family, the range of (predicted − measured) / measured tokens/s on the runs on record."""
    bands = {}
    for run in pt.read_runs(os.path.join(pt.HERE, "recorded_runs.csv")):
        p = pt.plan_of(run, bin_dir).get("predicted")
        if p:
            e = p["tokens_per_s"] / float(run["measured_tokens_per_s"]) - 1
            lo, hi = bands.get(pt.family(run), (e, e))
            bands[pt.family(run)] = (min(lo, e), max(hi, e))
    return bands


def policy_of(plan):
    p = plan["memory_policy"]
    return p if plan["fits"] else f"does not fit ({plan['peak_bytes'] / 2**30:.0f} GiB)"


def draw(points, spec, path):
    """The study's figure, predicted: per layout, run time of its steps against length (log axes), a line per model
    with the band shaded; a cell NeMo ran out of memory drawn as an open red ring around its point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layouts = sorted({c["layout"] for c, *_ in points}, key=lambda l: -int(l[1]))
    models = sorted({c["model"] for c, *_ in points}, key=lambda m: float(m.rstrip("B")))
    lengths = sorted({int(c["seq_len"]) for c, *_ in points})
    fig, axes = plt.subplots(1, len(layouts), figsize=(5 * len(layouts), 4.6), sharey=True)
    for ax, layout in zip(axes, layouts):
        for i, model in enumerate(models):
            cells = sorted((int(c["seq_len"]), m, lo, hi, c["nemo_fits"]) for c, m, lo, hi in points
                           if c["layout"] == layout and c["model"] == model)
            if not cells:
                continue
            x = [c[0] for c in cells]
            color = f"C{i}"
            ax.fill_between(x, [c[2] for c in cells], [c[3] for c in cells], color=color, alpha=0.2, linewidth=0)
            ax.plot(x, [c[1] for c in cells], "o-", color=color, label=model, markersize=4)
            oom = [c for c in cells if c[4] != "yes"]
            ax.plot([c[0] for c in oom], [c[1] for c in oom], "o", markerfacecolor="none", markeredgecolor="red",
                    markersize=11, markeredgewidth=1.5, label="NeMo: out of memory")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [f"{n // 1024}k" for n in lengths])
        ax.minorticks_off()
        ax.set_title(layout)
        ax.set_xlabel("sequence length (tokens)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(f"predicted run time of {spec['steps']} steps (minutes)")
    handles = {}  # label → handle: the models in order, then NeMo's mark
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    labels = [m for m in models if m in handles] + [l for l in handles if l not in models]
    handles = [handles[l] for l in labels]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"The study on one {spec['gpus']} x {spec['device_memory'].upper()} node, predicted (not measured): "
                 "qwen3-pretrain --plan, band = the model's error on the multi-GPU runs on record", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(pt.ROOT, "build", "bin"))
    ap.add_argument("--out", default="")
    ap.add_argument("--figure", default="")
    a = ap.parse_args()
    spec = read_spec(SPEC)
    bands = error_bands(a.bin)
    lines = ["| model | layout | length | NeMo (published) | ours: plan | predicted run time, 50 steps (min) | band |",
             "|---|---|---|---|---|---|---|"]
    ours_fit = nemo_fit = both = 0
    total, unpriced, points = 0.0, 0, []
    for cell in read_published(PUBLISHED):
        plan = plan_of(cell, spec, a.bin)
        family = "T only" if cell["layout"].endswith("P1") else "T×P"
        minutes, band = "", ""
        pred = plan.get("predicted")
        if plan["fits"] and pred:
            m = spec["steps"] * pred["step_s"] / 60
            total += m
            minutes = f"{m:.1f}"
            if family in bands:  # the model over-predicts tokens/s by lo…hi: the run takes 1+lo … 1+hi times longer
                lo, hi = bands[family]
                band = f"{m * (1 + lo):.1f} – {m * (1 + hi):.1f}"
                points.append((cell, m, m * (1 + lo), m * (1 + hi)))
        elif plan["fits"]:
            minutes, unpriced = "no prediction (unpriced)", unpriced + 1
        ours_fit += plan["fits"]
        nemo_fit += cell["nemo_fits"] == "yes"
        both += plan["fits"] and cell["nemo_fits"] == "yes"
        lines.append(f"| {cell['model']} | {cell['layout']} | {int(cell['seq_len']):,} | "
                     f"{'✔' if cell['nemo_fits'] == 'yes' else '✖ out of memory'} | "
                     f"{'✔ ' if plan['fits'] else '✖ '}{policy_of(plan)} | {minutes} | {band} |")
    lines.append("")
    lines.append(f"Ours fits {ours_fit} of {len(lines) - 3} cells, NeMo trained {nemo_fit}; both {both}. Predicted "
                 f"run time of the cells priced: {total / 60:.1f} hours of steps"
                 + (f" ({unpriced} fitting cells unpriced)" if unpriced else "") + ".")
    lines.append("Bands: the layout family's range of the model's error on the multi-GPU runs on record ("
                 + "; ".join(f"{k} {lo:+.0%} … {hi:+.0%}" for k, (lo, hi) in sorted(bands.items())) + ").")
    text = "\n".join(lines) + "\n"
    if a.figure:
        draw(points, spec, a.figure)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
