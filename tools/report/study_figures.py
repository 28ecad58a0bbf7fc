"""The published study's own figures, drawn from a folder of results the way the study drew them, so that a user can
lay ours over theirs (imported by qwen3_report.py): run time in minutes (start to end of the run) against sequence
length on a log axis; the peak over time of the mean memory over the GPUs against length, with the cells that ran
out of memory drawn at the device's capacity, and the standard deviation across the GPUs at that peak; and run time
fitted against length both linearly and with a quadratic term, each with its p-value, saying which the data support.

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


def plot(out, rows, models, layouts, panel_grid, save, provenance):
    """study_runtime.png and study_memory.png: a panel per layout, a line per model, length on a log axis; provenance:
    the run time figure's second title line (cards, commits)."""
    cmap = plt.get_cmap("tab10")
    colour = {m: cmap(i % 10) for i, m in enumerate(models)}
    kinds = {bool(r.get("on_gpu")) for r in rows if not math.isnan(r.get("mean_peak_gib", NAN))}
    handles = [Line2D([], [], color=colour[m], marker="o", label=m) for m in models]
    fig, grid = panel_grid(len(layouts), 5.0, 3.6,
                           "Run time against sequence length (start to end of each run)\n" + provenance)
    for (ax, _), l in zip(grid, layouts):
        for m in models:
            pts = sorted((r["seq"], r["run_min"]) for r in rows if r["model"] == m and r["layout"] == l
                         and r["status"] == "ok" and not math.isnan(r.get("run_min", NAN)))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour[m])
        axes(ax, l, "run time (minutes)")
    save(fig, out, "study_runtime.png", handles)
    what = " and ".join(w for k, w in ((True, "allocator's bytes, GPU runs"), (False, "resident memory, CPU runs"))
                        if k in kinds) or "no trace"
    fig, grid = panel_grid(len(layouts), 5.0, 3.6, "Peak of the mean memory over ranks, with the std across ranks at "
                           "that peak; out of memory drawn at the device's capacity")
    oom_drawn = False
    for (ax, _), l in zip(grid, layouts):
        for m in models:
            mine = [r for r in rows if r["model"] == m and r["layout"] == l]
            pts = sorted((r["seq"], r["mean_peak_gib"], r["std_at_peak_gib"]) for r in mine
                         if r["status"] == "ok" and not math.isnan(r.get("mean_peak_gib", NAN)))
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o-",
                            color=colour[m], capsize=3)
            for r in mine:
                if r["status"] in OOM and not math.isnan(r.get("capacity_gib", NAN)):
                    ax.plot(r["seq"], r["capacity_gib"], "X", ms=9, color=colour[m])
                    oom_drawn = True
        axes(ax, l, "peak mean memory per rank (GiB)")
    oom = [Line2D([], [], ls="", marker="X", ms=9, color="grey", label="out of memory (at capacity)")] if oom_drawn else []
    read_as = [Line2D([], [], ls="", label=f"memory read as: {what}")]
    save(fig, out, "study_memory.png", handles + oom + read_as)


def axes(ax, layout, ylabel):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v / 1024:g}k" if v >= 1024 else f"{v:g}"))  # 32 … 1k … 128k, as the study's axis
    ax.set_title(layout)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.08 * max(ax.get_ylim()[1], 1e-9))  # from zero, the highest point clear of the frame
