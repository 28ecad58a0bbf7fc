"""qwen3-report's PNG plots: step time against sequence length (a panel per model, points and a linear fit per layout,
a strip under each panel marking the cells that did not run to the end with why), peak memory per rank (mean over
ranks, every rank, the device's own peak, the plan and the device's capacity) and throughput (tokens/s, and MFU for
GPU runs); the panel grid, the legend below all panels and the Description stored in every PNG (what each panel
shows, for readers that cannot see the image and for the tests), which study_figures.py draws its figures with too.
Needs matplotlib (drawn headless, Agg) and numpy."""
import math
import os
import textwrap

import matplotlib
matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402 (after the backend is chosen)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

import study_figures  # noqa: E402
from report_tables import ok_points  # noqa: E402

NAN = math.nan

# How a cell that has no step time is marked (strip under the step-time panels, text in the memory panels).
REASON_COLOURS = study_figures.STATUS_COLOURS


def provenance(runs):
    """A speed figure's title tail: the cards (or CPUs) and commits of the finished runs drawn, short (report.md says
    the rest: every commit, and that results files hold no Hugging Face baseline)."""
    ok = [r for r in runs if r["status"] == "ok"]
    cards = sorted({r["device_name"] or r["device"] for r in ok})
    commits = sorted({r["commit"][:12] for r in ok if r["commit"]})
    commit = (f"commit {commits[0]}" if len(commits) == 1 else f"{len(commits)} commits" if commits
              else "commit not recorded")
    return f"on {', '.join(cards) or '—'}, {commit}"


def figure_description(fig):
    """What each panel shows — scales, labels, legend entries, marks — stored in the PNG as its Description, for
    readers that cannot see the image and for the tests."""
    fig.canvas.draw()  # tick labels exist once drawn
    parts = [f"title: {fig._suptitle.get_text()}"] if fig._suptitle else []
    parts += [f"legend: {' | '.join(t.get_text() for t in lg.get_texts())}" for lg in fig.legends]
    for lg in fig.legends:  # each legend entry's marker ("legendHandles" before matplotlib 3.7)
        handles = getattr(lg, "legend_handles", None) or getattr(lg, "legendHandles", [])
        parts.append("markers: " + " | ".join(f"{t.get_text()} {h.get_marker()}" for t, h in zip(lg.get_texts(), handles)
                                              if isinstance(h, Line2D) and h.get_marker() not in (None, "None", "")))
    for ax in fig.axes:
        rows = " | ".join(t.get_text() for t in ax.get_yticklabels()) if ax.get_label() == "strip" else ""
        ticks = " | ".join(t.get_text() for t in ax.get_xticklabels() if t.get_text()) or "—"
        lo, hi = ax.get_ylim()
        parts.append(f"panel '{ax.get_title() or ax.get_title('left')}'{' (rows: ' + rows + ')' if rows else ''}: "
                     f"x {ax.get_xscale()} '{ax.get_xlabel()}' (ticks: {ticks}), y {ax.get_yscale()} "
                     f"'{ax.get_ylabel()}' ({lo:.4g} to {hi:.4g}); "
                     f"marks: {' | '.join(t.get_text().strip() for t in ax.texts) or '—'}")
    return "\n".join(parts)


def save(fig, out, name, handles):
    """The figure with one legend below all panels (colours mean the same layout in every panel), nothing cut off."""
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(4, max(1, len(handles))),
               fontsize=8, frameon=False)
    fig.savefig(os.path.join(out, name), dpi=120, bbox_inches="tight", metadata={"Description": figure_description(fig)})
    plt.close(fig)


def panel_grid(n, width, height, title, strip_rows=0):
    """n panels, at most three a row, each with a strip of strip_rows rows under it when strip_rows > 0;
    returns the figure and (panel, strip or None) per panel."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    strip_h = 0.22 * strip_rows + 0.25 if strip_rows else 0
    fig = plt.figure(figsize=(width * cols, (height + strip_h) * rows), constrained_layout=True)
    # Wrapped to the panels' width: a title wider than them would widen the canvas and shrink every panel.
    fig.suptitle(textwrap.fill(title, width=int(11 * width * cols)), fontsize=10)
    grid = fig.add_gridspec(rows, cols)
    out = []
    for i in range(n):
        if not strip_rows:
            out.append((fig.add_subplot(grid[i // cols, i % cols]), None))
            continue
        inner = grid[i // cols, i % cols].subgridspec(2, 1, height_ratios=[height, strip_h])
        ax = fig.add_subplot(inner[0])
        out.append((ax, fig.add_subplot(inner[1], sharex=ax, label="strip")))
    return fig, out


def colour(layouts, layout):
    return plt.get_cmap("tab10")(layouts.index(layout) % 10)


def layout_style(layouts, layout):
    """A layout's colour, marker and size: each its own marker, the later ones smaller and drawn over the earlier,
    so that layouts whose points coincide (the same time at a length) all stay visible."""
    i = layouts.index(layout)
    return dict(color=colour(layouts, layout), marker=study_figures.MARKERS[i % len(study_figures.MARKERS)],
                ms=max(4.0, 9.0 - 1.5 * (i % 4)), alpha=0.8)


def engineering_ticks(axis):
    axis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))  # 32k, 1.5M: no offset text, no collisions


def layout_handles(layouts, drawn, style):
    return [Line2D([], [], label=l, **{**layout_style(layouts, l), **style}) for l in layouts if l in drawn]


def reason_handles(rows):
    """Legend entries for the kinds of cell without a step time that were drawn, and only those."""
    kinds = sorted({r["status"] for r in rows if r["status"] != "ok"})
    return [Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="not run (no results file)")
            if k == "not run" else
            Line2D([], [], ls="", marker="X", ms=8, color=REASON_COLOURS.get(k, "black"), label=f"✖ {k}")
            for k in kinds]


def draw_strip(strip, failed, layouts):
    """A row per layout that has cells without a step time; at each such length ✖ coloured by why, or ○ not run."""
    names = [l for l in layouts if any(r["layout"] == l for r in failed)]
    for r in failed:
        y = names.index(r["layout"])
        if r["status"] == "not run":
            strip.plot(r["seq"], y, "o", mfc="none", color="grey")
        else:
            strip.plot(r["seq"], y, "X", ms=8, color=REASON_COLOURS.get(r["status"], "black"))
    strip.set_title("cells without a step time", fontsize=8, loc="left")
    strip.set_yticks(range(len(names)), names, fontsize=7)
    strip.set_ylim(-0.6, max(len(names), 1) - 0.4)
    strip.invert_yaxis()
    strip.set_xlabel("sequence length (tokens)")
    engineering_ticks(strip.xaxis)


def plot_time(out, rows, fits, models, layouts):
    """Step time against length, linear axes, a panel per model: points and linear fit per layout; under it a strip
    marking the cells that did not run to the end, at their length, with why."""
    fit_of = {(f["model"], f["layout"]): f for f in fits}
    failed = [r for r in rows if r["status"] != "ok"]
    strip_rows = max([len({r["layout"] for r in failed if r["model"] == m}) for m in models] + [0])
    fig, grid = panel_grid(len(models), 5.0, 3.6, "Step time against sequence length, " + provenance(rows), strip_rows)
    drawn = set()
    for (ax, strip), m in zip(grid, models):
        for l in layouts:
            pts = ok_points(rows, m, l, "step_time_s")
            if pts:
                drawn.add(l)
                ax.plot([x for x, _ in pts], [y for _, y in pts], ls="", **layout_style(layouts, l))
            if (m, l) in fit_of:
                f, xs = fit_of[(m, l)], np.array([pts[0][0], pts[-1][0]], float)
                ax.plot(xs, f["intercept_s"] + f["slope_s_per_token"] * xs, "-", color=colour(layouts, l), alpha=0.7)
        ax.set_xlim(0, 1.04 * max(r["seq"] for r in rows))  # every cell's length in view, the same in every panel
        ax.set_ylim(bottom=0)
        if not any(ok_points(rows, m, l, "step_time_s") for l in layouts):  # no scale to show: say so instead
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no run of this model finished" + ("\n(below: each cell and why)" if strip else ""),
                    transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_title(m)
        ax.set_ylabel("step time (s)")
        engineering_ticks(ax.xaxis)
        if strip is None:
            ax.set_xlabel("sequence length (tokens)")
        else:
            ax.tick_params(labelbottom=False)
            draw_strip(strip, [r for r in failed if r["model"] == m], layouts)
    fit_line = [Line2D([], [], color="grey", label="linear fit (three lengths or more)")] if fits else []
    save(fig, out, "time_vs_length.png",
         layout_handles(layouts, drawn, dict(ls="")) + fit_line + reason_handles(failed))


def memory_top(rows):
    """A memory panel's top: what was measured and the capacity, with room (plans beyond it show as ▲ at the top);
    infinite when nothing was, so that every plan is drawn."""
    seen = [p for r in rows for p in r["peaks_gib"]] + [r["capacity_gib"] for r in rows]
    seen = [v for v in seen if not math.isnan(v)]
    return 1.15 * max(seen) if seen else math.inf


def draw_memory_slot(ax, x, w, r, layouts, top):
    """One cell: a bar for the mean over ranks, every rank's peak as a dot, the planned peak as a bar-wide line (▲ at
    the top when it is beyond the axis), and ✖ why for a cell that did not run to the end."""
    c = colour(layouts, r["layout"])
    if r["peaks_gib"]:
        ax.bar(x, np.mean(r["peaks_gib"]), w, color=c, alpha=0.55, edgecolor=c,
               hatch=None if r["status"] == "ok" else "//")
        n = len(r["peaks_gib"])
        ax.plot(x + (np.linspace(-w / 4, w / 4, n) if n > 1 else np.zeros(1)), r["peaks_gib"], ".", color="black", ms=4)
    if not math.isnan(r.get("device_peak_gib", NAN)) and r["device_peak_gib"] <= top:
        ax.plot(x, r["device_peak_gib"], "x", color="crimson", ms=6)
    if not math.isnan(r["planned_gib"]):
        if r["planned_gib"] <= top:
            ax.plot([x - w / 2, x + w / 2], [r["planned_gib"]] * 2, "-", color="black", lw=2)
        else:
            ax.plot(x, 0.985, "^", color="black", transform=ax.get_xaxis_transform(), clip_on=False)
    if r["status"] != "ok":
        not_run = "not run" + (": plan does not fit" if r.get("plan_fits") is False else "")
        ax.text(x, 0.01, f" {r['layout']} " + (not_run if r["status"] == "not run" else f"✖ {r['status']}"),
                rotation=90, ha="center", va="bottom", fontsize=7, transform=ax.get_xaxis_transform(),
                color=REASON_COLOURS.get(r["status"], "grey"))


def memory_handles(rows, layouts, tops):
    """Legend entries for exactly what the memory panels draw (tops: each model's axis top)."""
    h = layout_handles(layouts, {r["layout"] for r in rows if r["peaks_gib"]},
                       dict(ls="", marker="s", ms=9, alpha=0.55))
    if any(r["peaks_gib"] for r in rows):
        h.append(Line2D([], [], ls="", marker=".", color="black", label="each rank's peak (bar: mean over ranks)"))
    if any(not math.isnan(r.get("device_peak_gib", NAN)) for r in rows):
        h.append(Line2D([], [], ls="", marker="x", color="crimson",
                        label="the device's peak (total − free, as nvidia-smi shows it)"))
    beyond = [r["planned_gib"] > tops[r["model"]] for r in rows if not math.isnan(r["planned_gib"])]
    if not all(beyond):  # a cell not run has only the sweep's plan, which includes the runtime reserve
        unrun = any(r["status"] == "not run" and not math.isnan(r["planned_gib"]) for r in rows)
        h.append(Line2D([], [], color="black", lw=2, label="planned peak (the rank that needs most"
                        + ("; a cell not run: with the runtime reserve)" if unrun else ")")))
    if any(beyond):
        h.append(Line2D([], [], ls="", marker="^", color="black", label="planned peak beyond the axis"))
    if any(r["peaks_gib"] and r["status"] != "ok" for r in rows):
        h.append(matplotlib.patches.Patch(facecolor="white", edgecolor="black", hatch="//", label="run did not finish"))
    # One entry per capacity as printed: a run refused before it made its engine names no device and records the size
    # its plan was checked against (a GPU name's, within MiB of the card's), so it joins the runs that name the card.
    for cap in sorted({round(r["capacity_gib"], 1) for r in rows if not math.isnan(r["capacity_gib"])}):
        names = sorted({r["device_name"] for r in rows if r["device_name"] and not math.isnan(r["capacity_gib"])
                        and round(r["capacity_gib"], 1) == cap}) or ["device"]
        h.append(Line2D([], [], color="red", ls="--", label=f"{', '.join(names)}: {cap:.1f} GiB (what CUDA gives a process)"))
    return h


def plot_memory(out, rows, models, layouts):
    """Peak memory, a panel per model: per length a slot per layout (mean over ranks, every rank, the plan), the
    device's capacity as a line where known."""
    fig, grid = panel_grid(len(models), 6.0, 4.0, "Peak memory per rank (bars, GPU: the engine's allocator; CPU: resident "
                           "memory; ✕: the device's own peak)")
    tops = {m: memory_top([r for r in rows if r["model"] == m]) for m in models}
    shared = max([t for t in tops.values() if t < math.inf], default=math.inf)
    tops = {m: t if t < math.inf else shared for m, t in tops.items()}  # a panel with nothing measured: the others' scale
    for (ax, _), m in zip(grid, models):
        mine, top = [r for r in rows if r["model"] == m], tops[m]
        seqs = sorted({r["seq"] for r in mine})
        here = [l for l in layouts if any(r["layout"] == l for r in mine)]
        w = 0.8 / len(here)
        for r in mine:
            x = seqs.index(r["seq"]) + (here.index(r["layout"]) - (len(here) - 1) / 2) * w
            draw_memory_slot(ax, x, w, r, layouts, top)
        for cap in {r["capacity_gib"] for r in mine if not math.isnan(r["capacity_gib"])}:
            ax.axhline(cap, color="red", ls="--")
        ax.set_xticks(range(len(seqs)), [f"{s:,}" for s in seqs])
        ax.set_xlim(-0.5, len(seqs) - 0.5)  # slots that hold only a mark in view
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("peak memory per rank (GiB)")
        ax.set_ylim(0, top if top < math.inf else None)
        ax.set_title(m)
    save(fig, out, "memory.png", memory_handles(rows, layouts, tops))


def plot_throughput(out, runs, models, layouts):
    """tokens/s against length per model and layout; MFU the same for GPU runs only (it means nothing on a CPU). A model
    with no finished run has no panel (the feasibility table and the other plots say why), unless none has one."""
    models = [m for m in models if any(r["model"] == m and r["status"] == "ok" for r in runs)] or models
    gpu_models = [m for m in models if any(r["model"] == m and r["on_gpu"] for r in runs)]
    charts = [(m, "tokens_per_s", "tokens/s, all ranks") for m in models] + [(m, "mfu", "MFU (%)") for m in gpu_models]
    fig, grid = panel_grid(len(charts), 5.0, 3.6, "Throughput of the finished runs, " + provenance(runs))
    drawn = set()
    for (ax, _), (m, key, what) in zip(grid, charts):
        for l in layouts:
            pts = ok_points(runs, m, l, key)  # MFU is NaN, so left out, for CPU runs
            if pts:
                drawn.add(l)
                ax.plot([x for x, _ in pts], [y for _, y in pts], "-", **layout_style(layouts, l))
        ax.set_xlim(0, 1.04 * max(r["seq"] for r in runs))
        ax.set_ylim(0, 1.1 * max(ax.get_ylim()[1], 1e-9))  # the highest point clear of the frame
        ax.set_title(f"{m}: {what}")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(what)
        engineering_ticks(ax.xaxis)
        engineering_ticks(ax.yaxis) if key == "tokens_per_s" else None
    save(fig, out, "throughput.png", layout_handles(layouts, drawn, {}))
