#!/usr/bin/env python3
"""qwen3-report: reads qwen3-pretrain results files (docs/results.md) — a folder searched recursively, or files — and
a sweep's cells.json when the folder (or its parent) holds one, and writes into --out: report.md (tables for people),
runs.csv / memory_per_rank.csv / feasibility.csv / regression.csv (tables to diff) and PNG plots: step time against
sequence length (one panel per model, a line and linear fit per layout, cells that did not run marked with why), peak
memory per rank (mean over ranks, every rank, the plan and the device's capacity), tokens/s and, for GPU runs, MFU.

Run through the qwen3-report launcher beside this file: it picks a Python that has h5py, matplotlib and scipy.
"""
import argparse, csv, datetime, json, math, os, re, signal, sys, textwrap

EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT = 2, 3, 4
EXIT_CODES = """exit codes:
  0  report written: every readable results file reported; files that cannot be read (not HDF5, truncated, another
     format version, no /config and no sweep cell to name it) are listed as unreadable with the reason
  2  usage: bad option, missing path; or no Python with h5py, matplotlib and scipy (the launcher says which lack what)
  3  input: nothing to report (no results file could be read, and no sweep manifest), or a bad cells.json
  4  output: --out cannot be written"""
FORMAT, VERSION = "qwen3-pretrain-results", 1
CELLS_FORMAT, CELLS_VERSION = "qwen3-sweep-cells", 1
NAN = math.nan


def fail(code, message):
    print(f"qwen3-report: error: {message}", file=sys.stderr)
    sys.exit(code)


try:
    import h5py
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    import matplotlib.patches, matplotlib.ticker
    from scipy import stats
    import study_figures  # beside this file
except ImportError as e:
    fail(EXIT_USAGE, f"{sys.executable} lacks {e.name}: run it through the qwen3-report launcher beside this file, "
                     "which finds a Python with h5py, matplotlib and scipy (or set QWEN3_PYTHON)")


# ------------------------------------------------------------------------------------------------- small helpers
def text(v):
    """An HDF5 string as str: h5py gives str for variable-length UTF-8 attributes, bytes for older fixed-length ones."""
    return v.decode() if isinstance(v, bytes) else str(v)


def layout_name(tp, pp, cp, dp):
    """The one name of a layout in every tool: T{tp}P{pp}[C{cp}]D{dp}, C only with context parallelism."""
    return f"T{tp}P{pp}" + (f"C{cp}" if cp > 1 else "") + f"D{dp}"


def natural(s):
    """Sort key that orders T2 before T16."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def mean_after_first(series):
    """Mean over the steps after the first, which pays for warm-up (the only step when there is one)."""
    later = series[1:] if len(series) > 1 else series
    return float(np.mean(later)) if len(later) else NAN


def fmt(v, digits=1):
    return "—" if isinstance(v, float) and math.isnan(v) else f"{v:,.{digits}f}"


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def gib(nbytes):
    return float(nbytes) / 2**30


# ------------------------------------------------------------------------------------------------- results files
def measured_peaks(f):
    """Each rank's peak in GiB; none when nothing was allocated (a run refused before it took any memory)."""
    peaks = [gib(b) for b in f["memory/peak_bytes"][:]] if "memory/peak_bytes" in f else []
    return peaks if any(p > 0 for p in peaks) else []


def capacity(f):
    """The device's memory in GiB: what CUDA gives a process on rank 0's GPU, else (a run refused before it made its
    engine) what its plan was checked against; NaN for files from before 2026-12-02, which record neither."""
    for key in ("device_total_bytes", "plan_device_bytes"):
        if key in f.attrs:
            return gib(f.attrs[key])
    return NAN


class Unreadable(Exception):
    """A file that cannot be reported: the message says why; the report lists it and goes on with the others."""


def open_results(path):
    """The open file when it is a qwen3-pretrain results file of our version, None for other HDF5 files (datasets);
    raises Unreadable for a file that is not HDF5 (garbage, truncated, still being written) or of another version."""
    try:
        # without HDF5's lock: a cell still running holds its .partial file open for writing, and is reported as such
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise Unreadable(f"not a readable HDF5 file ({e})")
    try:
        fmt = text(f.attrs.get("format", ""))
        version = int(f.attrs.get("format_version", -1))
    except Exception as e:  # a damaged attribute
        f.close()
        raise Unreadable(f"its attributes cannot be read ({e})")
    if fmt != FORMAT:
        f.close()
        return None
    if version != VERSION:
        f.close()
        raise Unreadable(f"results format_version {version}; this report reads version {VERSION}")
    return f


# A sweep cell's results file: <model>-L<length>-<layout>.h5 (qwen3-sweep's names).
CELL_FILE = re.compile(r"^(?P<model>.+)-L(?P<seq>\d+)-(?P<layout>T\d+P\d+(?:C\d+)?D\d+)\.h5(?:\.partial)?$")


def cell_of_file(path, known):
    """(model, length, layout, device) of the cell a results file belongs to, for a file without /config: the sweep
    manifest's cell whose results file it is (known: {real path: cell}), else its name as qwen3-sweep gives it; None
    when neither says."""
    final = path[:-len(".partial")] if path.endswith(".partial") else path
    c = known.get(os.path.realpath(final))
    if c:
        return c["model"], int(c["seq"]), manifest_layout(c), c.get("device", "")
    m = CELL_FILE.match(os.path.basename(path))
    return (m["model"], int(m["seq"]), m["layout"], "") if m else None


def read_run(path, known):
    """One results file as a dict of what the report shows, None when it is another kind of HDF5 file (a dataset);
    raises Unreadable with the reason when it cannot be read or belongs to no known cell."""
    f = open_results(path)
    if f is None:
        return None
    try:
        with f:
            return run_record(f, path, known)
    except Unreadable:
        raise
    except Exception as e:  # truncated datasets, damaged groups: this file only
        raise Unreadable(f"damaged: {type(e).__name__}: {e}")


def run_outcome(f, path):
    """(status, reason) of a run; a lone .partial file is a run that was killed or is still going."""
    if path.endswith(".partial"):
        return "incomplete", "only a .partial file: the run was killed or is still running"
    status, reason = text(f.attrs.get("status", "running")), text(f.attrs.get("error_message", ""))
    if status == "oom" and "oom_category" in f.attrs:  # sizes are -1 where the run did not know them
        sizes = [f"{gib(f.attrs[k]):.2f} GiB{what}" for k, what in (("oom_requested_bytes", ""),
                                                                    ("oom_in_use_bytes", " in use"))
                 if int(f.attrs.get(k, -1)) >= 0]
        if sizes or not reason:  # else the program's own message says more (another rank's failure)
            reason = (f"out of memory allocating {text(f.attrs['oom_category'])}"
                      + (f" ({', '.join(sizes)})" if sizes else ""))
    return status, reason


def run_layout(f, cfg):
    """The file's own `layout` attribute when it has one, else the name computed from its configuration."""
    if "layout" in f.attrs:
        return text(f.attrs["layout"])
    tp, pp, cp = (int(cfg.get(k, "1")) for k in ("tp", "pp", "cp"))
    return layout_name(tp, pp, cp, max(1, int(f.attrs.get("world_size", 1)) // (tp * pp * cp)))


def run_time(f, path):
    """When the run ended (or started), for 'the newest result of a cell decides'; the file's mtime without either."""
    for key in ("end_time_utc", "start_time_utc"):
        if key in f.attrs and text(f.attrs[key]):
            return text(f.attrs[key])
    return datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_record(f, path, known):
    """read_run's dict from the open file."""
    cfg = {k: text(v) for k, v in f["config"].attrs.items()} if "config" in f else {}
    steps = {k: np.asarray(f["steps"][k][:], dtype=float) for k in f["steps"]} if "steps" in f else {}
    devices = [text(d) for d in f.attrs.get("device_names", [])]
    status, reason = run_outcome(f, path)
    if not cfg:
        # A run that failed before it recorded its configuration (e.g. --device cuda on a host without a GPU):
        # its cell from the sweep's manifest or its file name, else it is one nobody can place.
        cell = cell_of_file(path, known)
        if cell is None:
            raise Unreadable("no /config group, so its model, length and layout are unknown (not a sweep cell's "
                             f"file); it says status {status}" + (f": {reason}" if reason else ""))
        cfg = {"model": cell[0], "seq_len": str(cell[1]), "layout": cell[2]}
        if cell[3]:
            cfg["device"] = cell[3]
        reason = (reason or "(no message)") + " [no /config in the file: the cell is named by the sweep]"
    step_time = mean_after_first(steps.get("step_time_s", []))
    on_gpu = cfg.get("device") == "cuda"
    return {
        **study_figures.read(f),  # run_min, mean_peak_gib, std_at_peak_gib
        "file": path, "time": run_time(f, path), "mtime": os.path.getmtime(path),
        "model": cfg.get("model.name") or cfg.get("model", "?"), "seq": int(cfg.get("seq_len", "0")),
        "layout": cfg.get("layout") or run_layout(f, cfg), "world": int(f.attrs.get("world_size", 1)),
        "status": status, "reason": reason, "steps": len(steps.get("step_time_s", [])),
        "diverged_at_step": int(f.attrs["diverged_at_step"]) if "diverged_at_step" in f.attrs else None,
        "step_time_s": step_time,
        "tokens_per_s": (int(cfg.get("global_batch", "0")) * int(cfg.get("seq_len", "0")) / step_time
                         if step_time else NAN),
        "tflops": mean_after_first(steps.get("tflops_per_device", [])),
        "on_gpu": on_gpu,
        "peaks_gib": measured_peaks(f),
        "hosts": [text(h) for h in f.attrs.get("hostnames", [])],  # each rank's, in rank order
        "planned_gib": gib(f.attrs["plan_peak_bytes"]) if "plan_peak_bytes" in f.attrs else NAN,
        # outside the allocator (CUDA context, libraries, NCCL): measured for a calibrated GPU kind, else flat
        "reserve_gib": gib(f.attrs["plan_reserve_bytes"]) if "plan_reserve_bytes" in f.attrs else NAN,
        # the step time predicted at start from the GPU kind's calibration (qwen3-calibrate)
        "predicted_step_s": float(f.attrs.get("predicted_step_s", NAN)),
        # the device's own figure (driver: total − free, every process), the rank that saw the most
        "device_peak_gib": (gib(max(f["memory/device_peak_bytes"][:])) if "memory/device_peak_bytes" in f
                            else NAN),
        "device": cfg.get("device", "cpu" if "config" in f else ""),  # "": not recorded (main() sets it)
        "device_name": devices[0] if devices else "",
        "capacity_gib": capacity(f) if on_gpu else NAN,
        "commit": text(f.attrs.get("git_commit", "")),
        "ranks": {k: np.asarray(f["ranks"][k][:], dtype=float) for k in f["ranks"]} if "ranks" in f else {},
        "stages": ([(int(a), int(b)) for a, b in zip(f["stages/first_layer"][:], f["stages/end_layer"][:])]
                   if "stages/first_layer" in f else []),
        "bubble_formula": float(f["stages/bubble_formula"][0]) if "stages/bubble_formula" in f else NAN,
    }


def load_runs(files, known):
    """(runs, unreadable): a dict per results file read (datasets skipped), and (file, reason) for each file that
    cannot be — one damaged file never costs the others their report. A .partial file that cannot be opened (a run
    still writing it, or killed mid-write) is its cell's incomplete run when the sweep names the cell."""
    runs, unreadable = [], []
    for path in files:
        try:
            r = read_run(path, known)
        except Unreadable as e:
            cell = cell_of_file(path, known) if path.endswith(".partial") else None
            if cell is None:
                unreadable.append((path, str(e)))
                continue
            r = placeholder(cell[0], cell[2], cell[1], "incomplete",
                            f"only a .partial file, which cannot be read now ({e}): the run was killed or is still "
                            "running")
            r.update(file=path, device=cell[3], time="", mtime=os.path.getmtime(path))
        if r:
            runs.append(r)
    return runs, unreadable


def fill_devices(runs):
    """A file without /config does not say its device: the one every other run used, else the CPU."""
    known = {r["device"] for r in runs if r["device"]}
    for r in runs:
        if not r["device"]:
            r["device"] = next(iter(known)) if len(known) == 1 else "cpu"
            r["on_gpu"] = r["device"] == "cuda"


def find_files(paths):
    """The .h5 and .h5.partial files under the given folders, and the given files."""
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


def newest_per_cell(runs):
    """One run per cell (model, layout, length, --device): the newest; returns (kept, set aside)."""
    newest = {}
    for r in sorted(runs, key=lambda r: (r["time"], r["mtime"])):
        newest[(r["model"], r["layout"], r["seq"], r["device"])] = r
    kept = {id(r) for r in newest.values()}
    return list(newest.values()), [r for r in runs if id(r) not in kept]


def label_devices(runs):
    """With runs on CPUs and GPUs in one report, the model column names the device too, so no two cells collide."""
    if len({r["device"] for r in runs}) > 1:
        for r in runs:
            r["model"] = f"{r['model']} ({r['device']})"


# ------------------------------------------------------------------------------------------------- sweep manifest
def find_manifests(paths):
    """The sweep manifests (path, sweep name, cells) of cells.json files in the given folders (or a given file's folder)
    and their parents, each once."""
    found = []
    for p in paths:
        d = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
        for folder in (d, os.path.dirname(os.path.abspath(d))):
            candidate = os.path.join(folder, "cells.json")
            if os.path.isfile(candidate) and os.path.realpath(candidate) not in map(os.path.realpath, found):
                found.append(candidate)
    return [(path, *read_manifest(path)) for path in found]


def read_manifest(path):
    """The cells of one qwen3-sweep cells.json (format qwen3-sweep-cells, version 1)."""
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        fail(EXIT_INPUT, f"'{path}' cannot be read as JSON ({e})")
    if not isinstance(m, dict) or m.get("format") != CELLS_FORMAT or m.get("version") != CELLS_VERSION:
        fail(EXIT_INPUT, f"'{path}' is not a {CELLS_FORMAT} version {CELLS_VERSION} manifest")
    return m.get("sweep", "?"), m.get("cells", [])


def manifest_layout(c):
    """A manifest cell's layout name, from its tp, pp, cp, dp (the name every tool gives), else as written."""
    return (layout_name(*(int(c[k]) for k in ("tp", "pp", "cp", "dp")))
            if all(k in c for k in ("tp", "pp", "cp", "dp")) else c.get("layout", "?"))


def manifest_results(manifests):
    """{real path of a cell's results file: the cell} over every manifest: how a file without /config is placed."""
    return {os.path.realpath(os.path.join(os.path.dirname(path), c["results"])): c
            for path, _, cells in manifests for c in cells if c.get("results")}


def placeholder(model, layout, seq, status, reason, predicted=NAN, plan_fits=None, planned_gib=NAN):
    """A cell's row without a results file to read (plan_fits, planned_gib: the sweep's plan of it, where known)."""
    return {"model": model, "layout": layout, "seq": seq, "status": status, "reason": reason,
            "predicted_step_s": predicted, "plan_fits": plan_fits, "reserve_gib": NAN, "peaks_gib": [], "hosts": [],
            "device_peak_gib": NAN, "run_min": NAN, "mean_peak_gib": NAN, "std_at_peak_gib": NAN,
            "planned_gib": planned_gib, "capacity_gib": NAN, "step_time_s": NAN, "tokens_per_s": NAN, "tflops": NAN,
            "mfu": NAN, "on_gpu": False, "device_name": "",
            "device": "", "diverged_at_step": None, "steps": 0, "ranks": {}, "stages": [], "commit": "",
            "world": 0, "file": "", "bubble_formula": NAN}


LOG_END = "qwen3-sweep: cell ended with exit code"  # the last line qwen3-sweep --local writes into a cell's log


def ended_without_results(manifest_path, c):
    """(exit code, the log's last error line) of a cell that qwen3-sweep --local ran and that left no results file
    (DIR/logs/<cell>.log ends with the exit code); None when no such log says the cell ended."""
    log = os.path.join(os.path.dirname(manifest_path), "logs", f"{c.get('name', '')}.log")
    try:
        with open(log, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return None
    if not lines or not lines[-1].startswith(LOG_END):
        return None  # still running, or from a sweep that did not write the line
    try:
        code = int(lines[-1][len(LOG_END):])
    except ValueError:
        return None
    errors = [l for l in lines[:-1] if "error:" in l]
    return code, (errors[-1] if errors else (lines[-2] if len(lines) > 1 else "(the log says nothing more)"))


def manifest_placeholders(manifests, runs):
    """A row for every manifest cell that has no run here: refused by the sweep (with its reason), run but ended
    without a results file (its exit code and the log's error), or not run yet."""
    have = {(r["model"], r["layout"], r["seq"]) for r in runs}
    rows = []
    for path, _, cells in manifests:
        for c in cells:
            layout = manifest_layout(c)
            key = (c.get("model", "?"), layout, int(c.get("seq", 0)))
            if key in have:
                continue
            have.add(key)
            predicted = c.get("predicted_step_s")
            ended = None if c.get("refused") else ended_without_results(path, c)
            status, reason = (("refused", c["refused"]) if c.get("refused") else
                              ("error", f"no results file; exit code {ended[0]}; "
                                        f"{os.path.join('logs', c.get('name', '') + '.log')}: {ended[1]}")
                              if ended and ended[0] != 0 else
                              ("not run", f"no results file yet; {c.get('steps', '?')} steps predicted to take "
                                          f"{c.get('steps', 1) * predicted / 60:.1f} min") if predicted else
                              ("not run", "no results file yet; the plan: does not fit") if c.get("plan_fits") is False else
                              ("not run", "no results file yet"))
            planned = c.get("planned_peak_bytes")
            rows.append(placeholder(*key[:2], key[2], status, reason, predicted if predicted else NAN,
                                    c.get("plan_fits"), planned / 2**30 if planned else NAN))
    return rows


# ------------------------------------------------------------------------------------------------- fits and tables
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


# ------------------------------------------------------------------------------------------------- plots
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


# ------------------------------------------------------------------------------------------------- report.md
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
    """The head: what was read (runs, devices, commits), which results were set aside, the sweep's manifest."""
    devices = ", ".join(sorted({r["device_name"] for r in runs if r["device_name"]})) or "—"
    commits = ", ".join(sorted({r["commit"] for r in runs if r["commit"]})) or "—"
    md = ["# qwen3-pretrain report", "",
          f"{plural(len(runs), 'run')} from {', '.join(paths)}; devices: {devices}; commits: {commits}. Results "
          "files hold no Hugging Face baseline (BENCHMARKS.md has the same-call baselines)."]
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


# ------------------------------------------------------------------------------------------------- main
def parse_args():
    ap = argparse.ArgumentParser(prog="qwen3-report", description=__doc__.split("\n\n")[0],
                                 epilog=f"{EXIT_CODES}\n\nPython: {sys.executable}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="results files or folders holding them (a sweep's DIR: its cells.json too)")
    ap.add_argument("--out", required=True, help="folder for report.md, the CSV tables and the plots")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak for MFU (default 989, H100/H200 bf16)")
    try:
        a = ap.parse_args()
    except SystemExit as e:
        sys.exit(EXIT_USAGE if e.code else 0)
    if not a.peak_tflops > 0:
        fail(EXIT_USAGE, "--peak-tflops must be positive")
    return a


def make_out(out):
    """Creates --out, and fails with exit 4 now rather than after the work when it cannot be written."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        fail(EXIT_OUTPUT, f"cannot write to '{out}': {e.strerror}")


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    a = parse_args()
    manifests = find_manifests(a.paths)
    read, unreadable = load_runs(find_files(a.paths), manifest_results(manifests))
    fill_devices(read)
    runs, set_aside = newest_per_cell(read)
    placeholders = manifest_placeholders(manifests, runs)
    for path, why in unreadable:  # said first, on stderr, whatever follows
        print(f"qwen3-report: unreadable: {path}: {why}", file=sys.stderr)
    if not runs and not placeholders:
        fail(EXIT_INPUT, "no qwen3-pretrain results files under " + ", ".join(f"'{p}'" for p in a.paths) +
             (" could be read (" + "; ".join(f"'{p}' is {why}" if why.startswith("not ") else f"'{p}': {why}"
                                             for p, why in unreadable) + ")" if unreadable else ""))
    make_out(a.out)
    label_devices(runs)
    for r in runs:
        r["mfu"] = 100.0 * r["tflops"] / a.peak_tflops if r["on_gpu"] and not math.isnan(r["tflops"]) else NAN
    runs.sort(key=lambda r: (natural(r["model"]), natural(r["layout"]), r["seq"]))
    rows = runs + placeholders  # every cell: those with results, and the sweep's refused and not-run ones
    models = sorted({r["model"] for r in rows}, key=natural)
    layouts = sorted({r["layout"] for r in rows}, key=natural)
    seqs = sorted({r["seq"] for r in rows})
    cells = {(r["model"], r["layout"], r["seq"]): r for r in rows}
    fits, too_few = linear_fits(runs, models, layouts)
    write_tables(a.out, runs, cells, fits, models, layouts, seqs)
    study_fits = study_figures.fits(runs, models, layouts)
    write_csv(os.path.join(a.out, "study_fits.csv"), *study_figures.csv_rows(study_fits))
    plot_time(a.out, rows, fits, models, layouts)
    plot_memory(a.out, rows, models, layouts)
    plot_throughput(a.out, runs, models, layouts)
    study_figures.plot(a.out, rows, models, layouts, panel_grid, save, provenance(runs))
    md = (md_sources(runs, set_aside, manifests, rows, a.paths) + md_unreadable(unreadable) + md_feasibility(rows, cells, models, layouts, seqs) +
          md_runs(runs) + md_nodes(runs) + md_pipeline(runs) + md_regression(fits, too_few) +
          ["![time versus length](time_vs_length.png)", "", "![memory](memory.png)", "",
           "![throughput](throughput.png)", ""] + study_figures.markdown(study_fits, fmt))
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write("\n".join(md))
    print(f"qwen3-report: {plural(len(runs), 'run')}" + (f" ({len(set_aside)} older set aside)" if set_aside else "") +
          (f", {plural(len(placeholders), 'cell')} without results" if placeholders else "") +
          (f", {plural(len(unreadable), 'unreadable file')} (listed in report.md)" if unreadable else "") +
          f" → {os.path.join(a.out, 'report.md')} (+ runs.csv, memory_per_rank.csv, feasibility.csv, regression.csv, "
          "study_fits.csv, time_vs_length.png, memory.png, throughput.png, study_runtime.png, study_memory.png)")


if __name__ == "__main__":
    main()
