#!/usr/bin/python3
"""qwen3-report: reads qwen3-pretrain results files (docs/results.md) — a folder searched recursively, or files —
and writes, into --out: report.md (tables for people), runs.csv / feasibility.csv / regression.csv (tables to diff)
and PNG plots (run time versus sequence length with a linear fit per model and layout, peak memory per run as the
mean over ranks with the spread across ranks, tokens/s and MFU).

Exit codes: 0 written; 2 usage (bad option, missing path); 3 input (no results files, unreadable or wrong-version
results file); 4 output (the folder cannot be written).
"""
import argparse, signal, csv, math, os, sys

EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT = 2, 3, 4
FORMAT, VERSION = "qwen3-pretrain-results", 1


def fail(code, message):
    print(f"qwen3-report: error: {message}", file=sys.stderr)
    sys.exit(code)


try:
    import h5py
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats
except ImportError as e:  # the test command installs these (tools/bootstrap.sh)
    fail(EXIT_USAGE, f"missing Python package ({e.name}): install python3-h5py python3-matplotlib python3-scipy")


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def read_run(path):
    """One results file as a dict, or None when it is another kind of HDF5 file (e.g. a dataset)."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        fail(EXIT_INPUT, f"'{path}' is not a readable HDF5 file ({e})")
    with f:
        if text(f.attrs.get("format", "")) != FORMAT:
            return None
        version = int(f.attrs.get("format_version", -1))
        if version != VERSION:
            fail(EXIT_INPUT, f"'{path}' has results format_version {version}; this report reads version {VERSION}")
        cfg = {k: text(v) for k, v in f["config"].attrs.items()} if "config" in f else {}
        steps = {k: np.asarray(f["steps"][k][:], dtype=float) for k in f["steps"]} if "steps" in f else {}
        peaks = np.asarray(f["memory/peak_bytes"][:], dtype=float) if "memory/peak_bytes" in f else np.array([])
        world = int(f.attrs.get("world_size", 1))
        tp, pp, cp = (int(cfg.get(k, "1")) for k in ("tp", "pp", "cp"))
        status = text(f.attrs.get("status", "running"))
        reason = text(f.attrs.get("error_message", ""))
        if status == "oom" and "oom_category" in f.attrs:
            reason = (f"out of memory allocating {text(f.attrs['oom_category'])} "
                      f"({int(f.attrs['oom_requested_bytes']) / 2**30:.2f} GiB, "
                      f"{int(f.attrs['oom_in_use_bytes']) / 2**30:.2f} GiB in use)")
        if path.endswith(".partial"):
            status, reason = "incomplete", "only a .partial file: the run was killed or is still running"
        times = steps.get("step_time_s", np.array([]))
        later = times[1:] if len(times) > 1 else times  # the first step pays for warm-up
        ranks = {k: np.asarray(f["ranks"][k][:], dtype=float) for k in f["ranks"]} if "ranks" in f else {}
        stages = ([(int(a), int(b)) for a, b in zip(f["stages/first_layer"][:], f["stages/end_layer"][:])]
                  if "stages/first_layer" in f else [])
        bubble = float(f["stages/bubble_formula"][0]) if "stages/bubble_formula" in f else math.nan
        tflops = steps.get("tflops_per_device", np.array([]))
        tflops = tflops[1:] if len(tflops) > 1 else tflops
        return {
            "file": path,
            "model": cfg.get("model.name") or cfg.get("model", "?"),
            "seq": int(cfg.get("seq_len", "0")),
            "layout": f"T{tp}P{pp}" + (f"C{cp}" if cp > 1 else "") + f"D{max(1, world // max(1, tp * pp * cp))}",
            "world": world,
            "status": status,
            "reason": reason,
            "steps": len(times),
            "step_time_s": float(np.mean(later)) if len(later) else math.nan,
            "tokens_per_s": int(cfg.get("global_batch", "0")) * int(cfg.get("seq_len", "0")) / float(np.mean(later))
            if len(later) else math.nan,
            "tflops": float(np.mean(tflops)) if len(tflops) else math.nan,
            "peak_mean_gib": float(np.mean(peaks)) / 2**30 if len(peaks) else math.nan,
            "peak_std_gib": float(np.std(peaks)) / 2**30 if len(peaks) else math.nan,
            "planned_gib": float(f.attrs["plan_peak_bytes"]) / 2**30 if "plan_peak_bytes" in f.attrs else math.nan,
            "device": text(f.attrs["device_names"][0]) if "device_names" in f.attrs and len(f.attrs["device_names"]) else "",
            "commit": text(f.attrs.get("git_commit", "")),
            "ranks": ranks,
            "stages": stages,
            "bubble_formula": bubble,
        }


def find_files(paths):
    files = []
    for p in paths:
        if not os.path.exists(p):
            fail(EXIT_USAGE, f"'{p}' does not exist")
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, n) for n in names if n.endswith((".h5", ".h5.partial"))]
        else:
            files.append(p)
    return sorted(files)


def fmt(v, digits=1):
    return "—" if isinstance(v, float) and math.isnan(v) else f"{v:,.{digits}f}"


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    ap = argparse.ArgumentParser(prog="qwen3-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="results files or folders holding them")
    ap.add_argument("--out", required=True, help="folder for report.md, the CSV tables and the plots")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (default 989, H100/H200 bf16)")
    try:
        a = ap.parse_args()
    except SystemExit as e:
        sys.exit(EXIT_USAGE if e.code else 0)
    if not a.peak_tflops > 0:
        fail(EXIT_USAGE, "--peak-tflops must be positive")
    runs = [r for r in (read_run(p) for p in find_files(a.paths)) if r]
    if not runs:
        fail(EXIT_INPUT, "no qwen3-pretrain results files under " + ", ".join(f"'{p}'" for p in a.paths))
    try:
        os.makedirs(a.out, exist_ok=True)
        probe = os.path.join(a.out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        fail(EXIT_OUTPUT, f"cannot write to '{a.out}': {e.strerror}")
    for r in runs:
        r["mfu"] = 100.0 * r["tflops"] / a.peak_tflops if not math.isnan(r["tflops"]) else math.nan
    runs.sort(key=lambda r: (r["model"], r["layout"], r["seq"]))

    # Tables to diff.
    cols = ["model", "layout", "seq", "status", "reason", "steps", "step_time_s", "tokens_per_s", "tflops", "mfu",
            "peak_mean_gib", "peak_std_gib", "planned_gib", "world", "device", "commit", "file"]
    with open(os.path.join(a.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(runs)
    models = sorted({r["model"] for r in runs})
    layouts = sorted({r["layout"] for r in runs})
    seqs = sorted({r["seq"] for r in runs})
    cell = {(r["model"], r["layout"], r["seq"]): r for r in runs}
    with open(os.path.join(a.out, "feasibility.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "layout"] + [str(s) for s in seqs])
        for m in models:
            for l in layouts:
                w.writerow([m, l] + [cell[(m, l, s)]["status"] if (m, l, s) in cell else "" for s in seqs])
    fits = []
    for m in models:
        for l in layouts:
            pts = [(r["seq"], r["step_time_s"]) for r in runs
                   if r["model"] == m and r["layout"] == l and r["status"] == "ok" and not math.isnan(r["step_time_s"])]
            if len(pts) < 2:
                continue
            x, y = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
            if len(pts) >= 3:
                res = stats.linregress(x, y)
                fits.append(dict(model=m, layout=l, points=len(pts), slope_s_per_token=res.slope,
                                 intercept_s=res.intercept, r2=res.rvalue ** 2, p_value=res.pvalue))
            else:  # two points: the line is exact, R² and p say nothing
                slope = (y[1] - y[0]) / (x[1] - x[0])
                fits.append(dict(model=m, layout=l, points=2, slope_s_per_token=slope, intercept_s=y[0] - slope * x[0],
                                 r2=math.nan, p_value=math.nan))
    with open(os.path.join(a.out, "regression.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "layout", "points", "slope_s_per_token", "intercept_s", "r2", "p_value"])
        w.writeheader()
        w.writerows(fits)

    # Plots for people.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fit in fits:
        pts = sorted((r["seq"], r["step_time_s"]) for r in runs if r["model"] == fit["model"] and
                     r["layout"] == fit["layout"] and r["status"] == "ok" and not math.isnan(r["step_time_s"]))
        x = np.array([p[0] for p in pts], float)
        line = ax.plot(x, [p[1] for p in pts], "o", label=f"{fit['model']} {fit['layout']}")[0]
        xs = np.geomspace(x.min(), x.max(), 50)
        ax.plot(xs, fit["intercept_s"] + fit["slope_s_per_token"] * xs, "-", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("step time (s)")
    ax.set_title("Run time versus sequence length (points: runs; lines: linear fits)")
    if fits:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "time_vs_length.png"), dpi=120)
    plt.close(fig)
    measured = [r for r in runs if not math.isnan(r["peak_mean_gib"])]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(measured)), 4.5))
    ax.bar(range(len(measured)), [r["peak_mean_gib"] for r in measured], yerr=[r["peak_std_gib"] for r in measured],
           capsize=3, color=["tab:blue" if r["status"] == "ok" else "tab:red" for r in measured])
    ax.set_xticks(range(len(measured)), [f"{r['model']} {r['layout']} {r['seq']}" for r in measured], rotation=60,
                  ha="right", fontsize=7)
    ax.set_ylabel("peak memory per rank (GiB): mean, bar = std across ranks")
    ax.set_title("Peak memory per run (red: did not finish)")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "memory.png"), dpi=120)
    plt.close(fig)
    ok = [r for r in runs if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.8 * len(ok)), 4.5))
    labels = [f"{r['model']} {r['layout']} {r['seq']}" for r in ok]
    for axis, key, title in ((axes[0], "tokens_per_s", "tokens/s (all ranks)"), (axes[1], "mfu", "MFU (%)")):
        axis.bar(range(len(ok)), [r[key] for r in ok])
        axis.set_xticks(range(len(ok)), labels, rotation=60, ha="right", fontsize=7)
        axis.set_title(title)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "throughput.png"), dpi=120)
    plt.close(fig)

    # The Markdown report.
    md = ["# qwen3-pretrain report", "",
          f"{len(runs)} runs from {', '.join(a.paths)}; devices: {', '.join(sorted({r['device'] for r in runs if r['device']})) or '—'}; "
          f"commits: {', '.join(sorted({r['commit'] for r in runs if r['commit']})) or '—'}.", "",
          "## Feasibility (✔ finished, ✖ did not: reasons below; measured peak per rank and the plan's, where known)", ""]
    for l in layouts:
        md += [f"### {l}", "", "| model | " + " | ".join(str(s) for s in seqs) + " |",
               "|---|" + "---|" * len(seqs)]
        for m in models:
            marks = []
            for s in seqs:
                r = cell.get((m, l, s))
                if r is None:
                    marks.append("")
                    continue
                mark = "✔" if r["status"] == "ok" else f"✖ {r['status']}"
                peaks = [f"{r['peak_mean_gib']:.1f} GiB" if not math.isnan(r["peak_mean_gib"]) else "",
                         f"plan {r['planned_gib']:.1f}" if not math.isnan(r["planned_gib"]) else ""]
                peaks = [p for p in peaks if p]
                marks.append(mark + (f" ({', '.join(peaks)})" if peaks else ""))
            md.append(f"| {m} | " + " | ".join(marks) + " |")
        md.append("")
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        md += ["Reasons:", ""] + [f"- {r['model']} {r['layout']} {r['seq']}: {r['status']} — {r['reason'] or '(no message)'}"
                                  for r in failed] + [""]
    md += ["## Runs", "", "| model | layout | seq | status | step time (s) | tokens/s | TFLOP/s per device | MFU | "
           "peak per rank, mean ± std (GiB) | planned peak (GiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        md.append(f"| {r['model']} | {r['layout']} | {r['seq']} | {r['status']} | {fmt(r['step_time_s'], 3)} | "
                  f"{fmt(r['tokens_per_s'], 0)} | {fmt(r['tflops'])} | {fmt(r['mfu']) + ('' if math.isnan(r['mfu']) else '%')} | "
                  f"{fmt(r['peak_mean_gib'], 2) + ('' if math.isnan(r['peak_mean_gib']) else ' ± ' + fmt(r['peak_std_gib'], 2))} | "
                  f"{fmt(r['planned_gib'], 2)} |")
    piped = [r for r in runs if r["status"] == "ok" and len(r["stages"]) > 1 and "compute_s" in r["ranks"]]
    if piped:  # the study's finding: pipeline stages load their GPUs unevenly
        md += ["", "## Where each rank's time went (pipeline runs; steps after the first)", "",
               "Share of the step per rank: compute (forward/backward) / waiting in pipeline transfers (the bubble) / "
               "data-parallel reduction; 1F1B's formula (p − 1)/(m + p − 1) assumes equal stages.", "",
               "| model | layout | seq | stages (layers) | 1F1B formula | per rank: compute / wait / reduce (%) |",
               "|---|---|---|---|---|---|"]
        for r in piped:
            k = r["ranks"]
            shares = []
            for i in range(len(k["compute_s"])):
                total = k["step_s"][i] if k["step_s"][i] > 0 else 1.0
                shares.append(f"{100 * k['compute_s'][i] / total:.0f}/{100 * k['pipeline_wait_s'][i] / total:.0f}/"
                              f"{100 * k['dp_reduce_s'][i] / total:.0f}")
            layers = ", ".join(f"{a}–{b - 1}" for a, b in r["stages"])
            md.append(f"| {r['model']} | {r['layout']} | {r['seq']} | {layers} | {100 * r['bubble_formula']:.1f}% | "
                      f"{'; '.join(shares)} |")
    md += ["", "## Step time versus sequence length (linear fit per model and layout)", "",
           "| model | layout | runs | slope (s per token) | intercept (s) | R² | p-value |", "|---|---|---|---|---|---|---|"]
    for fit in fits:
        md.append(f"| {fit['model']} | {fit['layout']} | {fit['points']} | {fit['slope_s_per_token']:.3e} | "
                  f"{fit['intercept_s']:.4f} | {fmt(fit['r2'], 4)} | "
                  f"{'—' if math.isnan(fit['p_value']) else format(fit['p_value'], '.2e')} |")
    md += ["", "![time versus length](time_vs_length.png)", "", "![memory](memory.png)", "",
           "![throughput](throughput.png)", ""]
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write("\n".join(md))
    print(f"qwen3-report: {len(runs)} runs → {os.path.join(a.out, 'report.md')} (+ runs.csv, feasibility.csv, "
          f"regression.csv, time_vs_length.png, memory.png, throughput.png)")


if __name__ == "__main__":
    main()
