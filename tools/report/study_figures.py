"""The published study's own figures, drawn from a folder of results the way the study drew them, so that a user can
lay ours over theirs (imported by qwen3_report.py): run time in minutes (start to end of the run) against sequence
length on a log axis; the peak over time of the mean memory over the GPUs against length, with the cells that ran
out of memory drawn at the device's capacity, and the standard deviation across the GPUs at that peak; and run time
fitted against length both linearly and with a quadratic term, each with its p-value, saying which the data support.
Both figures share one y scale across their panels, label every length, pick the time unit from the data, and mark
every cell that did not finish (failed, refused, out of memory, diverged, not run) with why.

The study read its memory with nvidia-smi; a results file's traces are the engine's allocator on a GPU (the device's
own figure is a little higher) and resident memory on the CPU: the axis says which."""
import math

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.lines import Line2D
from scipy import stats

NAN = math.nan
OOM = ("oom", "oom_predicted")  # statuses drawn at the capacity
ALPHA = 0.05                    # the quadratic term is "supported" when its p-value is below this


def read(f):
    """From an open results file: the run's minutes start to end, and the peak over time of the mean over ranks of
    the memory traces with the ranks' standard deviation at that moment (GiB); NaN where the file has none."""
    t = f["timings"].attrs if "timings" in f else {}
    total = float(t["total_s"]) / 60 if "total_s" in t else NAN
    names = [k for k in f["memory/trace"] if k.startswith("rank_")] if "memory/trace" in f else []
    traces = [t for t in (f["memory/trace"][k][:] for k in names) if t.ndim == 2 and len(t)]
    if not traces:
        return dict(run_min=total, mean_peak_gib=NAN, std_at_peak_gib=NAN)
    # Each rank's bytes on one time grid (the longest trace's sample times), held from its last sample: memory and
    # time grow with ranks × samples.
    grid = max(traces, key=len)[:, 0]
    held = np.array([t[np.clip(np.searchsorted(t[:, 0], grid, side="right") - 1, 0, None), 1] for t in traces])
    mean = held.mean(axis=0)
    at = int(np.argmax(mean))
    return dict(run_min=total, mean_peak_gib=float(mean[at]) / 2**30, std_at_peak_gib=float(held[:, at].std()) / 2**30)


def fits(runs, models, layouts):
    """Run time (minutes) against length per model and layout: the linear fit (three lengths or more) and the one
    with a quadratic term (four or more: a p-value needs a degree of freedom left), and which the data support."""
    out = []
    for m in models:
        for l in layouts:
            pts = sorted((r["seq"], r["run_min"]) for r in runs if r["model"] == m and r["layout"] == l
                         and r["status"] == "ok" and not math.isnan(r.get("run_min", NAN)))
            x, y = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
            if len(set(x)) < 3:
                continue
            lin = stats.linregress(x, y)
            quad, quad_p = (NAN, NAN, NAN), NAN
            if len(set(x)) >= 4:
                quad, quad_p = quadratic(x, y)
            supported = "quadratic" if quad_p < ALPHA else "linear"
            out.append(dict(model=m, layout=l, points=len(pts), linear_slope_min_per_token=lin.slope,
                            linear_intercept_min=lin.intercept, linear_p=lin.pvalue, quad_c_min_per_token2=quad[0],
                            quad_b_min_per_token=quad[1], quad_a_min=quad[2], quad_p=quad_p, supported=supported))
    return out


def quadratic(x, y):
    """y = c·x² + b·x + a by least squares (x scaled for conditioning); the p-value of c (two-sided t-test)."""
    s = x.max()
    X = np.column_stack([(x / s) ** 2, x / s, np.ones_like(x)])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(x) - 3
    resid = y - X @ coef
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.inv(X.T @ X)
    # An exact fit (no residual) leaves no variance to test against: no p-value.
    p = 2 * stats.t.sf(abs(coef[0]) / math.sqrt(cov[0, 0]), dof) if cov[0, 0] > 0 else NAN
    return (coef[0] / s**2, coef[1] / s, coef[2]), float(p)


def csv_rows(fit_list):
    keys = ["model", "layout", "points", "linear_slope_min_per_token", "linear_intercept_min", "linear_p",
            "quad_c_min_per_token2", "quad_b_min_per_token", "quad_a_min", "quad_p", "supported"]
    return keys, [[f[k] for k in keys] for f in fit_list]


def markdown(fit_list, fmt):
    md = ["## The study's figures: run time and memory against length", "",
          "![run time](study_runtime.png)", "", "![memory](study_memory.png)", "",
          "Run time (minutes, start to end of the run) against length: a linear fit (three lengths or more) and one with "
          f"a quadratic term (four or more); the quadratic term is supported where its p-value is below {ALPHA}.", ""]
    if not fit_list:
        return md + ["No model and layout has three finished lengths: no fit.", ""]
    md += ["| model | layout | runs | linear: min per token | p | quadratic: c (min per token²) | p of c | supported |",
           "|---|---|---|---|---|---|---|---|"]
    for f in fit_list:
        pq = "—" if math.isnan(f["quad_p"]) else format(f["quad_p"], ".2e")
        cq = "—" if math.isnan(f["quad_c_min_per_token2"]) else format(f["quad_c_min_per_token2"], ".3e")
        pl = "—" if math.isnan(f["linear_p"]) else format(f["linear_p"], ".2e")
        md.append(f"| {f['model']} | {f['layout']} | {f['points']} | {f['linear_slope_min_per_token']:.3e} | {pl} | "
                  f"{cq} | {pq} | {f['supported']}{'' if not math.isnan(f['quad_p']) else ' (too few for a quadratic)'} |")
    return md + [""]


# How a cell that did not run to the end is marked, in every figure (qwen3_report.py uses the same colours).
STATUS_COLOURS = {"oom": "crimson", "oom_predicted": "darkorange", "error": "black", "refused": "darkviolet",
                  "incomplete": "grey", "preempted": "teal", "running": "grey", "diverged": "magenta"}
MARKERS = "osD^vP*h"  # one per model (layout in the other figures), so that points that coincide stay told apart


def time_unit(seconds):
    """(divisor, name) for run times whose largest is `seconds`: seconds for runs under two minutes, minutes under
    two hours, else hours, so that the axis reads 12 s rather than 0.2 min or 0.0033 h."""
    return (1, "seconds") if seconds < 120 else (60, "minutes") if seconds < 7200 else (3600, "hours")


def mark_unfinished(ax, rows, layout, models, colour, drawn, y_of=None):
    """Every cell of this panel that has no finished value: ✖ at the foot of the panel coloured by why (○ not run),
    or at y_of(r) when that gives a height (out of memory at the device's capacity); drawn gathers the statuses."""
    for r in rows:
        if r["layout"] != layout or r["status"] == "ok" or r["model"] not in models:
            continue
        y = y_of(r) if y_of else None
        hollow = r["status"] == "not run"
        style = dict(ms=9, color=colour[r["model"]], mec=STATUS_COLOURS.get(r["status"], "grey"), mew=2,
                     marker="o" if hollow else "X", ls="", mfc="none" if hollow else colour[r["model"]], clip_on=False)
        if y is not None:
            ax.plot(r["seq"], y, **style)
            drawn.add(r["status"] + " at capacity")
        else:
            ax.plot(r["seq"], 0.03, transform=ax.get_xaxis_transform(), **style)
            drawn.add(r["status"])


def status_handles(drawn):
    """Legend entries for the kinds of unfinished cell drawn, and only those."""
    h = []
    for k in sorted(drawn):
        status = k.replace(" at capacity", "")
        hollow = status == "not run"
        label = ("not run (no results file)" if hollow else
                 "out of memory (at capacity)" if k.endswith(" at capacity") else f"✖ {status} (at the foot)")
        h.append(Line2D([], [], ls="", marker="o" if hollow else "X", ms=9, color="lightgrey", mew=2,
                        mec=STATUS_COLOURS.get(status, "grey"), mfc="none" if hollow else "lightgrey", label=label))
    return h


def plot(out, rows, models, layouts, panel_grid, save, provenance):
    """study_runtime.png and study_memory.png: a panel per layout, a line per model (its own marker too), length on a
    log axis with every length labelled, one y scale for every panel (so that panels compare at a glance); cells
    that did not finish marked with why; provenance: the cards and commits, in the run time figure's title."""
    cmap = plt.get_cmap("tab10")
    colour = {m: cmap(i % 10) for i, m in enumerate(models)}
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    seqs = sorted({r["seq"] for r in rows if r["seq"] > 0})
    kinds = {bool(r.get("on_gpu")) for r in rows if not math.isnan(r.get("mean_peak_gib", NAN))}
    handles = [Line2D([], [], color=colour[m], marker=marker[m], label=m) for m in models]

    def finished(model, layout, key):
        return sorted((r["seq"], r[key], r.get("std_at_peak_gib", NAN)) for r in rows
                      if r["model"] == model and r["layout"] == layout and r["status"] == "ok"
                      and not math.isnan(r.get(key, NAN)))

    longest = max([r["run_min"] for r in rows if r["status"] == "ok" and not math.isnan(r.get("run_min", NAN))],
                  default=0.0) * 60
    div, unit = time_unit(longest)
    fig, grid = panel_grid(len(layouts), 5.0, 3.6, f"Run time against sequence length (start to end of each run), "
                           f"{provenance}")
    drawn, top = set(), 1.08 * longest / div or 1.0
    for (ax, _), l in zip(grid, layouts):
        for m in models:
            pts = finished(m, l, "run_min")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] * 60 / div for p in pts], "-", marker=marker[m], color=colour[m],
                        alpha=0.85)
        mark_unfinished(ax, rows, l, models, colour, drawn)
        axes(ax, l, f"run time ({unit})", seqs, top)
    save(fig, out, "study_runtime.png", handles + status_handles(drawn))

    what = " and ".join(w for k, w in ((True, "allocator's bytes, GPU runs"), (False, "resident memory, CPU runs"))
                        if k in kinds) or "no trace"
    fig, grid = panel_grid(len(layouts), 5.0, 3.6, "Peak of the mean memory over ranks (error bars: the std across "
                           "ranks at that peak); out of memory drawn at the device's capacity")
    highest = [r["mean_peak_gib"] + (r.get("std_at_peak_gib") or 0) for r in rows
               if r["status"] == "ok" and not math.isnan(r.get("mean_peak_gib", NAN))]
    highest += [r["capacity_gib"] for r in rows
                if r["status"] in OOM and not math.isnan(r.get("capacity_gib", NAN))]
    drawn, top = set(), 1.08 * max(highest, default=0.0) or 1.0

    def at_capacity(r):
        return r["capacity_gib"] if r["status"] in OOM and not math.isnan(r.get("capacity_gib", NAN)) else None

    for (ax, _), l in zip(grid, layouts):
        for m in models:
            pts = finished(m, l, "mean_peak_gib")
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="-",
                            marker=marker[m], color=colour[m], capsize=3, alpha=0.85)
        mark_unfinished(ax, rows, l, models, colour, drawn, at_capacity)
        axes(ax, l, "peak mean memory per rank (GiB)", seqs, top)
    read_as = [Line2D([], [], ls="", label=f"memory read as: {what}")]
    save(fig, out, "study_memory.png", handles + status_handles(drawn) + read_as)


def axes(ax, layout, ylabel, seqs, top):
    """Length on a log axis with a tick at every length of the report (and no others); y from zero to top, the
    same in every panel."""
    ax.set_xscale("log", base=2)
    labels = [f"{v / 1024:g}k" if v >= 1024 else f"{v:g}" for v in seqs]  # 32 … 1k … 128k, as the study
    for i in range(1, len(seqs)):  # lengths closer than a third of a doubling: every other label a line lower
        if seqs[i] / seqs[i - 1] < 2 ** (1 / 3) and not labels[i - 1].startswith("\n"):
            labels[i] = "\n" + labels[i]
    ax.set_xticks(seqs, labels)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if seqs:
        ax.set_xlim(seqs[0] / 1.3, seqs[-1] * 1.3)
    ax.set_title(layout)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top)
