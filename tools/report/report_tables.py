"""qwen3-report's tables: the linear fit of step time against length per model and layout (scipy's least squares,
three finished lengths or more), the CSV files to diff (runs.csv, memory_per_rank.csv, feasibility.csv,
regression.csv) and the sections of report.md for people — where the results came from, the unreadable files, the
feasibility of every cell, each run's numbers beside its prediction, memory by node, where a pipeline rank's time
went, and the fits — with the number formats and orderings they share. Needs numpy and scipy; draws nothing."""
import csv
import math
import os
import re

import numpy as np
from scipy import stats

NAN = math.nan


def natural(s):
    """Sort key that orders T2 before T16."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def fmt(v, digits=1):
    """A number with thousands separators and `digits` decimals; — for NaN."""
    return "—" if isinstance(v, float) and math.isnan(v) else f"{v:,.{digits}f}"


def plural(n, word):
    """'1 run', '2 runs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def ok_points(runs, model, layout, key):
    """(length, value) of the finished runs of one model and layout, by length."""
    return sorted((r["seq"], r[key]) for r in runs if r["model"] == model and r["layout"] == layout
                  and r["status"] == "ok" and not math.isnan(r[key]))


def linear_fits(runs, models, layouts):
    """Least-squares step time against length per model and layout with three or more finished runs; and the
    (model, layout, runs) that have fewer, for which a fit would say nothing."""
    fits, too_few = [], []
    for m in models:
        for l in layouts:
            pts = ok_points(runs, m, l, "step_time_s")
            if len({x for x, _ in pts}) >= 3:
                res = stats.linregress([x for x, _ in pts], [y for _, y in pts])
                fits.append(dict(model=m, layout=l, points=len(pts), slope_s_per_token=res.slope,
                                 intercept_s=res.intercept, r2=res.rvalue ** 2, p_value=res.pvalue))
            elif any(r["model"] == m and r["layout"] == l for r in runs):
                too_few.append((m, l, len(pts)))
    return fits, too_few


def write_csv(path, header, rows):
    """A CSV table: the header, then the rows, NaN as an empty field."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows([["" if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows])


def write_tables(out, runs, cells, fits, models, layouts, seqs):
    """runs.csv (one row per results file), memory_per_rank.csv, feasibility.csv (status per cell), regression.csv."""
    cols = ["model", "layout", "seq_len", "device", "device_name", "status", "reason", "steps", "step_time_s",
            "predicted_step_s", "prediction_error_percent", "tokens_per_s", "tflops_per_device", "mfu_percent",
            "peak_mean_gib", "peak_std_gib", "peak_min_gib", "peak_max_gib", "device_peak_gib", "planned_peak_gib",
            "plan_reserve_gib", "capacity_gib", "world_size", "commit", "file"]
    write_csv(os.path.join(out, "runs.csv"), cols, [
        [r["model"], r["layout"], r["seq"], r["device"], r["device_name"], r["status"], r["reason"], r["steps"],
         r["step_time_s"], r["predicted_step_s"], prediction_error(r), r["tokens_per_s"], r["tflops"], r["mfu"],
         *peak_stats(r), r["device_peak_gib"], r["planned_gib"], r["reserve_gib"], r["capacity_gib"],
         r["world"], r["commit"], r["file"]] for r in runs])
    write_csv(os.path.join(out, "memory_per_rank.csv"), ["model", "layout", "seq_len", "rank", "host", "peak_gib"],
              [[r["model"], r["layout"], r["seq"], i, host_of(r, i), p] for r in runs for i, p in enumerate(r["peaks_gib"])])
    write_csv(os.path.join(out, "feasibility.csv"), ["model", "layout"] + [f"seq_len_{s}" for s in seqs],
              [[m, l] + [cells[(m, l, s)]["status"] if (m, l, s) in cells else "" for s in seqs]
               for m in models for l in layouts if any((m, l, s) in cells for s in seqs)])
    keys = ["model", "layout", "points", "slope_s_per_token", "intercept_s", "r2", "p_value"]
    write_csv(os.path.join(out, "regression.csv"), keys, [[f[k] for k in keys] for f in fits])


def host_of(r, rank):
    """The host rank `rank` of run r ran on ("" when the file does not say)."""
    return r["hosts"][rank] if rank < len(r["hosts"]) else ""


def peak_stats(r):
    """Mean, std, min, max of the ranks' peak memory (GiB); NaN without a memory trace."""
    p = r["peaks_gib"]
    return (float(np.mean(p)), float(np.std(p)), min(p), max(p)) if p else (NAN,) * 4


def cell_mark(r):
    """A feasibility-table cell: ✔ / ✖ status / not run, with the measured and planned peak where known."""
    if r["status"] == "not run":
        p = r.get("predicted_step_s", NAN)
        if r.get("plan_fits") is False:
            return f"not run (plan {r['planned_gib']:.1f} GiB with the runtime reserve: does not fit)"
        return "not run" + ("" if math.isnan(p) else f" (predicted {fmt(p, 1)} s per step)")
    peaks = [f"{np.mean(r['peaks_gib']):.1f} GiB" if r["peaks_gib"] else "",
             f"plan {r['planned_gib']:.1f}" if not math.isnan(r["planned_gib"]) else ""]
    peaks = [p for p in peaks if p]
    return ("✔" if r["status"] == "ok" else f"✖ {status_text(r)}") + (f" ({', '.join(peaks)})" if peaks else "")


def status_text(r):
    """A run's status as the tables say it: with the step for a run that diverged."""
    step = r.get("diverged_at_step")
    return f"{r['status']} at step {step}" if r["status"] == "diverged" and step is not None else r["status"]


def md_feasibility(rows, cells, models, layouts, seqs):
    """A table per layout (models × lengths) of every cell's mark, then the reason of each one that did not finish."""
    md = ["## Feasibility (✔ finished, ✖ did not: reasons below; measured peak per rank and the plan's, where known)",
          ""]
    for l in layouts:
        md += [f"### {l}", "", "| model | " + " | ".join(str(s) for s in seqs) + " |", "|---|" + "---|" * len(seqs)]
        md += [f"| {m} | " + " | ".join(cell_mark(cells[(m, l, s)]) if (m, l, s) in cells else "" for s in seqs) + " |"
               for m in models if any((m, l, s) in cells for s in seqs)]
        md.append("")
    failed = [r for r in rows if r["status"] not in ("ok", "not run")]
    if failed:
        md += ["Reasons:", ""] + [f"- {r['model']} {r['layout']} {r['seq']}: {status_text(r)} — "
                                  f"{r['reason'] or '(no message)'}"
                                  for r in failed] + [""]
    return md


def prediction_error(r):
    """Predicted against measured step time, in percent (NaN where either is missing)."""
    p, m = r.get("predicted_step_s", NAN), r.get("step_time_s", NAN)
    return 100 * (p / m - 1) if m and not (math.isnan(p) or math.isnan(m)) else NAN


def md_runs(runs):
    """A row per run: the measured numbers beside the prediction, and memory three ways: the engine's allocator, the
    device as nvidia-smi counts it, and the plan with its runtime reserve."""
    md = ["## Runs", "", "Memory per rank: the engine's allocator (mean ± std over ranks), the device's own figure "
          "(total − free, as nvidia-smi shows it; the rank that saw the most), and the plan: the allocator's bytes + "
          "the runtime reserve outside it.", "",
          "| model | layout | seq | status | step time (s) | predicted (s) | error | tokens/s | TFLOP/s per device | MFU | "
          "allocator peak (GiB) | device peak (GiB) | plan + reserve (GiB) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        mean, std, _, _ = peak_stats(r)
        err = prediction_error(r)
        plan = r["planned_gib"] + (0 if math.isnan(r["reserve_gib"]) else r["reserve_gib"])
        md.append(f"| {r['model']} | {r['layout']} | {r['seq']} | {r['status']} | {fmt(r['step_time_s'], 3)} | "
                  f"{fmt(r['predicted_step_s'], 3)} | {'' if math.isnan(err) else f'{err:+.1f}%'} | "
                  f"{fmt(r['tokens_per_s'], 0)} | {fmt(r['tflops'])} | "
                  f"{fmt(r['mfu']) + ('' if math.isnan(r['mfu']) else '%')} | "
                  f"{fmt(mean, 2) + ('' if math.isnan(mean) else ' ± ' + fmt(std, 2))} | {fmt(r['device_peak_gib'], 2)} | "
                  f"{fmt(r['planned_gib'], 2)} + {fmt(r['reserve_gib'], 2)} = {fmt(plan, 2)} |")
    return md + [""]


def md_nodes(runs):
    """Runs over several nodes: each node's ranks and their peak memory (one node short of memory shows here)."""
    multi = [r for r in runs if len(set(r["hosts"])) > 1 and r["peaks_gib"]]
    if not multi:
        return []
    md = ["## Memory by node (runs over several nodes)", "",
          "| model | layout | seq | node | ranks | peak per rank, mean / max (GiB) |", "|---|---|---|---|---|---|"]
    for r in multi:
        for host in dict.fromkeys(r["hosts"]):  # in rank order
            ranks = [i for i, h in enumerate(r["hosts"]) if h == host and i < len(r["peaks_gib"])]
            peaks = [r["peaks_gib"][i] for i in ranks]
            md.append(f"| {r['model']} | {r['layout']} | {r['seq']} | {host} | {ranks[0]}–{ranks[-1]} | "
                      f"{fmt(float(np.mean(peaks)), 2)} / {fmt(max(peaks), 2)} |")
    return md + [""]


def md_pipeline(runs):
    """The study's finding: pipeline stages load their GPUs unevenly; where each rank's time went."""
    piped = [r for r in runs if r["status"] == "ok" and len(r["stages"]) > 1 and "compute_s" in r["ranks"]]
    if not piped:
        return []
    md = ["## Where each rank's time went (pipeline runs; steps after the first)", "",
          "Share of the step per rank: compute (forward/backward) / waiting in pipeline transfers (the bubble) / "
          "data-parallel reduction; 1F1B's formula (p − 1)/(m + p − 1) assumes equal stages.", "",
          "| model | layout | seq | stages (layers) | 1F1B formula | per rank: compute / wait / reduce (%) |",
          "|---|---|---|---|---|---|"]
    for r in piped:
        k = r["ranks"]
        shares = [f"{100 * k['compute_s'][i] / t:.0f}/{100 * k['pipeline_wait_s'][i] / t:.0f}/"
                  f"{100 * k['dp_reduce_s'][i] / t:.0f}"
                  for i, t in enumerate(s if s > 0 else 1.0 for s in k["step_s"])]
        layers = ", ".join(f"{a}–{b - 1}" for a, b in r["stages"])
        md.append(f"| {r['model']} | {r['layout']} | {r['seq']} | {layers} | {100 * r['bubble_formula']:.1f}% | "
                  f"{'; '.join(shares)} |")
    return md + [""]


def md_regression(fits, too_few):
    """The fits' table, and a sentence for the layouts with too few finished lengths (only the sentence if no fit)."""
    md = ["## Step time versus sequence length (linear fit per model and layout, three lengths or more)", ""]
    if fits:
        md += ["| model | layout | runs | slope (s per token) | intercept (s) | R² | p-value |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {f['model']} | {f['layout']} | {f['points']} | {f['slope_s_per_token']:.3e} | "
               f"{f['intercept_s']:.4f} | {fmt(f['r2'], 4)} | "
               f"{'—' if math.isnan(f['p_value']) else format(f['p_value'], '.2e')} |" for f in fits]
        md.append("")
    if too_few:
        md += [("No fit (" if not fits else "Too few finished lengths for a fit (") + "three are needed): " +
               ", ".join(f"{m} {l} ({n} finished)" for m, l, n in too_few) + ".", ""]
    return md


def md_sources(runs, set_aside, manifests, rows, paths):
    """The head: what was read (runs, devices, commits), the precisions and global batches when more than one, which
    results were set aside, the sweep's manifest."""
    devices = ", ".join(sorted({r["device_name"] for r in runs if r["device_name"]})) or "—"
    commits = ", ".join(sorted({r["commit"] for r in runs if r["commit"]})) or "—"
    md = ["# qwen3-pretrain report", "",
          f"{plural(len(runs), 'run')} from {', '.join(paths)}; devices: {devices}; commits: {commits}. Results "
          "files hold no Hugging Face baseline (BENCHMARKS.md has the same-call baselines)."]
    precisions = sorted({r["precision"] for r in rows})
    if len(precisions) > 1:  # label_layouts has named each layout with its precision
        md += ["", f"Precisions: {', '.join(precisions)}. Each layout is named with its precision, as in "
                   f"{rows[0]['layout']}, in every table and figure: its own feasibility table, fit, series and "
                   "study-figure panel."]
    batches = sorted({r["global_batch"] for r in rows if r.get("global_batch")})
    if len(batches) > 1:  # and with its global batch
        md += ["", f"Global batches: {', '.join(map(str, batches))} sequences a step. Each layout is named with its "
                   "global batch, as in " + next(r["layout"] for r in rows if r.get("global_batch")) + ", in every "
                   "table and figure: a step's time and memory grow with the batch, so each is its own series." +
                   (" A sweep cell that records no batch (a cells.json from before it did) keeps the bare layout."
                    if any(not r.get("global_batch") for r in rows) else "")]
    if set_aside:
        md += ["", f"{plural(len(set_aside), 'older result')} of a cell that has a newer one "
                   "set aside (the newest decides): " + ", ".join(r["file"] for r in set_aside) + "."]
    if manifests:
        count = lambda status: sum(1 for r in rows if r["status"] == status)
        md += ["", "Sweep manifest: " + "; ".join(f"'{name}' ({path}, {len(cells)} cells)"
                                                  for path, name, cells in manifests)
               + f"; {plural(count('refused'), 'cell')} refused by the sweep, {count('not run')} not run yet."]
    return md + [""]


def md_unreadable(unreadable):
    """The files that could not be read, each with why (the rest of the report is without them)."""
    if not unreadable:
        return []
    return ([f"## Unreadable files ({len(unreadable)}): not in the tables below", ""] +
            [f"- `{path}`: {why}" for path, why in unreadable] + [""])
