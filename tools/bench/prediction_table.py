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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, os.pardir, "common"))  # qwen3_common, which the Python tools share
import plan_json  # noqa: E402
from qwen3_common import GIB, layout_name  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BAR = 15  # issue 28: every row within ±15% of its measurement, or its row says why not
FAMILIES = ("D only", "T only", "T×D", "P only", "P×D", "T×P", "T×P×D", "CP")
# What each family's error rests on, a paragraph per family (its heading), kept as prose beside this script.
WHY_FILE = os.path.join(HERE, "prediction_families.md")


def read_why(path):
    """prediction_families.md: '## FAMILY' headings, each followed by one paragraph → {family: the paragraph, joined}."""
    why, name = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("## "):
                name = line[3:].strip()
                why[name] = ""
            elif name and line.strip():
                why[name] = (why[name] + " " + line.strip()).strip()
    return why


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
    return layout_name(*(num(run, k) for k in ("tp", "pp", "cp", "dp")))


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
    mark = "" if err is None or abs(err) <= BAR else " ‡"  # beyond the bar: the record's note says why
    line = (f"| {i} | {run['card']} | {run['gpus']} | {run['model']} | {int(run['seq_len']):,} | {run['global_batch']} | "
            f"{layout(run)} | {policy(run)} | {measured:,.0f} | {cell} | {'' if err is None else f'{err:+.1f}%{mark}'} | "
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
    beyond = {}  # record number -> its family, for the rows outside ±BAR
    for i, (run, plan) in enumerate(zip(runs, plans), 1):
        line, err = table_row(i, run, plan)
        out.append(line)
        if err is not None and abs(err) > BAR:
            beyond[i] = family(run)
        if err is None:
            unpriced[family(run)] += 1
        else:
            errors.append(err)
            by_family[family(run)].append(err)
    out += ["", f"**All {len(runs)} runs:** {summary(errors)}; {len(errors) - len(beyond)} within ±{BAR}%, the "
            f"{len(beyond)} beyond it (‡) each say why in their record's note, by the term of their layout family "
            "below.", "",
            "| layout family | runs | priced | mean \\|error\\| | largest | range |", "|---|---|---|---|---|---|"]
    out += [family_row(f, by_family[f], unpriced[f]) for f in FAMILIES if by_family[f] or unpriced[f]]
    out += ["", "## Where the model is off, and which term", ""]
    why = read_why(WHY_FILE)
    out += [f"- **{f}**: {why[f]}" for f in FAMILIES if by_family[f] and f in why]
    out += ["", "## What each record says (tools/bench/recorded_runs.csv's notes)", ""]
    out += [f"{i}. {run['section']} ({run['commit']}): {run['notes']}" +
            (f" **Beyond ±{BAR}%:** the {beyond[i]} term under \"Where the model is off\"." if i in beyond else "")
            for i, run in enumerate(runs, 1)]
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
