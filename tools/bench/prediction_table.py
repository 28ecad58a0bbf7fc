#!/usr/bin/env python3
"""Every multi-GPU run recorded in BENCHMARKS.md held against today's prediction (issue 28 item 2): for each row of
tools/bench/recorded_runs.csv (the runs transcribed as BENCHMARKS.md states them), qwen3-pretrain --plan on the same
model, length, batch, layout and memory policy with the card's calibration, beside the measured tokens/s and peak per
rank. Prints a markdown table, the mean and largest |error|, and the error per layout family.

Usage: tools/bench/prediction_table.py [RUNS.csv] [--bin build/bin] [--out docs/prediction.md]
H100 rows are priced by calibration/h100-80gb.json, H200 rows by calibration/h200.json (found beside the executables
by --device-memory's name). Standard library only."""
import argparse
import csv
import json
import os
import sys

import plan_json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GIB = 2**30
FAMILIES = ("D only", "T only", "T×D", "P only", "P×D", "T×P", "T×P×D", "CP")
# What each family's error rests on (the evidence there is; none of it fitted to these runs).
WHY = {
    "D only": "the gradients' all-reduce or reduce-scatter and the bf16 all-gather, priced on the published NVSwitch "
              "bus-bandwidth curves of the calibration's collectives.source; no other term.",
    "T only": "the forward's all-gathers and reduce-scatters of the residual stream are on the critical path, priced at "
              "the published bus bandwidth; the backward's are hidden behind the weight-gradient GEMMs where they fit. "
              "NCCL's kernels take SMs from the GEMMs they run beside: qwen3-calibrate times a GEMM with 8, 16 and 32 "
              "SMs held by another kernel (H100, three hosts of 2026-12-06: 1.07, 1.19-1.28, 1.29-1.35 of its time "
              "alone) and the model slows the overlapped weight-gradient GEMMs by it at NCCL's 16 channels (assumed: "
              "NCCL's default for NVLink, not measured here) - the H100 rows fell by 1-2 points with it; the H200 "
              "calibration predates that measurement. What is not priced: a collective of a few MiB runs below the "
              "published curve's bandwidth when many follow each other (the per-collective latency is the curve's), "
              "and the forward's collectives are waited for on the compute stream; measuring either needs two GPUs. "
              "The global-batch-1 rows on cc811d4 and 8f4ce9e predate the backward's overlap (ef91745), which today's "
              "model prices: optimistic by construction.",
    "T×D": "the tensor-parallel term above, plus the distributed optimizer's reduce-scatter and all-gather.",
    "P only": "1F1B as the engine runs it (blocking exchanges, the stream synchronised after every operation: "
              "step_model.cpp pipeline_makespan) with the stages' priced compute: for 1.7B P4 the model's slowest stage "
              "computes 0.86 s per step, as the record measured (1.72 s over steps 2-3), so the compute is right and "
              "the pipeline schedule adds little; the record's step is 1.30 s. Part of the rest is the data: at that "
              "commit a pipelined step read all 32 micro-batches' documents before its first operation, the GPU idle, "
              "each read inflating a 1 MiB HDF5 chunk (3.8 ms per 4,096-token document measured with h5py on this "
              "project's 2-core CI machine; 0.35 ms with today's chunks of at most 16 Ki tokens, and today each micro-batch "
              "is read when the schedule first needs it), about 0.06-0.12 s per step; what remains (about 0.25 s per step, on every stage) is not identified without a multi-GPU "
              "host. 8B (untied embeddings, compute 2.5-3 s per step) is off by less.",
    "P×D": "the pipeline term above, with half the micro-batches per replica.",
    "T×P": "both terms above; the T2P2 rows of 1.7B are the worst (the two collectives' and the pipeline's costs add).",
    "CP": "the key/value all-gather and its gradient's reduce-scatter beside cuDNN's attention, which carries the "
          "in-step attention factor measured on one GPU.",
}


def read_runs(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(run, key, default=0):
    return int(run[key]) if run[key] else default


def shard_optimizer(run):
    """The stated sharding, else the one assumed for that day (both 'yes'/'no'), else today's default (sharded)."""
    return (run["shard_optimizer"] or run["shard_optimizer_assumed"] or "yes") == "yes"


def plan_of(run, bin_dir):
    """--plan's JSON for a recorded run (plan_json.py builds the command)."""
    return plan_json.plan(bin_dir, {
        "model": run["model"], "seq_len": run["seq_len"], "global_batch": run["global_batch"],
        "micro_batch": num(run, "micro_batch", 1), "tp": run["tp"], "pp": run["pp"], "cp": run["cp"],
        "world_size": run["gpus"], "device_memory": run["card"], "recompute": run["recompute"] or "none",
        "recompute_num_layers": num(run, "recompute_num_layers"), "offload_inputs": run["offload_inputs"] == "yes",
        "offload_optimizer": float(run["offload_optimizer"] or 0), "pp_layers": run["pp_layers"],
        "shard_optimizer": shard_optimizer(run)}, tool="prediction_table")


def layout(run):
    t, p, c, d = (num(run, k) for k in ("tp", "pp", "cp", "dp"))
    return f"T{t}P{p}" + (f"C{c}" if c > 1 else "") + f"D{d}"


def family(run):
    if num(run, "cp") > 1:
        return "CP"
    parts = [name for name, key in (("T", "tp"), ("P", "pp"), ("D", "dp")) if num(run, key) > 1]
    return "×".join(parts) + (" only" if len(parts) == 1 else "")


def policy(run):
    p = run["recompute"] or "none"
    if num(run, "recompute_num_layers"):
        p += f" ({run['recompute_num_layers']} layers)"
    if run["offload_inputs"] == "yes":
        p += ", inputs on host"
    if float(run["offload_optimizer"] or 0) > 0:
        p += f", {float(run['offload_optimizer']):.0%} of the optimizer on host"
    if num(run, "dp") * num(run, "cp") > 1 and not shard_optimizer(run):
        p += ", optimizer not sharded"
    return p


def predicted_cell(plan):
    pred = plan.get("predicted")
    if pred:
        return f"{pred['tokens_per_s']:,.0f}", pred["tokens_per_s"]
    unpriced = plan.get("unpriced")
    if unpriced:
        ops = unpriced.get("operations") or []
        why = f"{len(ops)} operations not in calibration {unpriced.get('calibration', '')}, e.g. {ops[0]}" if ops else \
            unpriced.get("advice", "")
        return f"no prediction (unpriced: {why})", None
    return "no prediction (no calibration)", None


def table_row(i, run, plan):
    measured = float(run["measured_tokens_per_s"])
    cell, pred = predicted_cell(plan)
    err = None if pred is None else 100 * (pred - measured) / measured
    plan_gib = int(plan["plan_bytes"]) / GIB
    fits = "" if plan.get("fits", True) else " (does not fit)"
    peak = float(run["measured_peak_gib"]) if run["measured_peak_gib"] else None
    diff = "" if peak is None else f"{round(plan_gib - peak, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"
    line = (f"| {i} | {run['card']} | {run['gpus']} | {run['model']} | {int(run['seq_len']):,} | {run['global_batch']} | "
            f"{layout(run)} | {policy(run)} | {measured:,.0f} | {cell} | {'' if err is None else f'{err:+.1f}%'} | "
            f"{'' if peak is None else f'{peak:.2f}'} | {plan_gib:.2f}{fits} | {diff} | {run['commit']} |")
    return line, err


def stats(errors):
    """(mean |error|, the error largest in size, smallest, largest) in %, or None with nothing priced."""
    if not errors:
        return None
    return sum(abs(e) for e in errors) / len(errors), max(errors, key=abs), min(errors), max(errors)


def summary(errors):
    s = stats(errors)
    if s is None:
        return "none priced"
    return f"{len(errors)} priced, mean |error| {s[0]:.1f}%, largest {s[1]:+.1f}% (range {s[2]:+.1f}% … {s[3]:+.1f}%)"


def family_row(name, errors, unpriced):
    s = stats(errors)
    cells = ["", "", ""] if s is None else [f"{s[0]:.1f}%", f"{s[1]:+.1f}%", f"{s[2]:+.1f}% … {s[3]:+.1f}%"]
    return f"| {name} | {len(errors) + unpriced} | {len(errors)} | " + " | ".join(cells) + " |"


def calibrations(plans):
    seen = {}
    for plan in plans:
        pred = plan.get("predicted") or {}
        if pred.get("calibration"):
            seen[pred["calibration"]] = pred.get("calibration_measured", "")
    return [f"- {kind}: measured {when}" for kind, when in sorted(seen.items())]


def render(runs, plans, csv_path):
    out = ["# Every recorded multi-GPU run against today's prediction", "",
           f"Generated by `tools/bench/prediction_table.py` from `{os.path.relpath(csv_path, ROOT)}` (the runs of "
           "BENCHMARKS.md as it states them) and today's `qwen3-pretrain --plan --format json` for each; regenerate "
           "with `python3 tools/bench/prediction_table.py --out docs/prediction.md`. Error = (predicted − measured) / "
           "measured tokens/s of the whole job. Plan = the planned allocator bytes per rank (the rank that needs the "
           "most, no runtime reserve), against the recorded peak per rank. Every run here predates 0f3370b: their "
           "datasets were chunked by up to 1 Mi tokens, so each document read inflated a whole chunk on the host "
           "(a pipelined step read all its micro-batches' documents before its first operation, the GPU idle), which "
           "today's datasets and the model do not have. Calibrations:", ""]
    out += calibrations(plans) + [""]
    out += ["| # | card | GPUs | model | length | global batch | layout | memory policy | measured tokens/s | "
            "predicted tokens/s | error | measured peak, GiB | plan, GiB | plan − peak, GiB | commit |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    errors, by_family, unpriced = [], {f: [] for f in FAMILIES}, {f: 0 for f in FAMILIES}
    for i, (run, plan) in enumerate(zip(runs, plans), 1):
        line, err = table_row(i, run, plan)
        out.append(line)
        if err is None:
            unpriced[family(run)] += 1
        else:
            errors.append(err)
            by_family[family(run)].append(err)
    out += ["", f"**All {len(runs)} runs:** {summary(errors)}.", "",
            "| layout family | runs | priced | mean \\|error\\| | largest | range |", "|---|---|---|---|---|---|"]
    out += [family_row(f, by_family[f], unpriced[f]) for f in FAMILIES if by_family[f] or unpriced[f]]
    out += ["", "## Where the model is off, and which term", ""]
    out += [f"- **{f}**: {WHY[f]}" for f in FAMILIES if by_family[f] and f in WHY]
    out += ["", "## What each record says (tools/bench/recorded_runs.csv's notes)", ""]
    out += [f"{i}. {run['section']} ({run['commit']}): {run['notes']}" for i, run in enumerate(runs, 1)]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", default=os.path.join(HERE, "recorded_runs.csv"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    runs = read_runs(a.runs)
    text = render(runs, [plan_of(run, a.bin) for run in runs], os.path.abspath(a.runs))
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
