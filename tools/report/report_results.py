"""qwen3-report's reading of qwen3-pretrain results files (docs/results.md): finding the .h5 and .h5.partial files
under the paths given, opening each as a results file of the version this report reads (other HDF5 files, such as
datasets, are skipped; a damaged or foreign one is listed as unreadable with why), turning each into the dict of
what the report shows (status and reason, step time, throughput, memory per rank, the plan, the pipeline's stages),
placing a file without /config by its sweep cell, keeping the newest result of each cell, and naming each layout with
its precision when a report holds more than one. Needs h5py and numpy."""
import datetime
import math
import os

import h5py
import numpy as np

import study_figures
from qwen3_common import DEFAULT_PRECISION, EXIT_USAGE, cell_of_name, failer, gib, layout_name, text
from report_manifest import manifest_layout, placeholder

FORMAT, VERSION = "qwen3-pretrain-results", 1
NAN = math.nan
fail = failer("qwen3-report")


def mean_after_first(series):
    """Mean over the steps after the first, which pays for warm-up (the only step when there is one)."""
    later = series[1:] if len(series) > 1 else series
    return float(np.mean(later)) if len(later) else NAN


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


def cell_of_file(path, known):
    """(model, length, layout, device, precision) of the cell a results file belongs to, for a file without /config:
    the sweep manifest's cell whose results file it is (known: {real path: cell}), else its name as qwen3-sweep gives
    it; None when neither says."""
    final = path[:-len(".partial")] if path.endswith(".partial") else path
    c = known.get(os.path.realpath(final))
    if c:
        return (c["model"], int(c["seq"]), manifest_layout(c), c.get("device", ""),
                c.get("precision", DEFAULT_PRECISION))
    cell = cell_of_name(os.path.basename(path))
    return cell[:3] + ("", cell[3]) if cell else None


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
        cfg = {"model": cell[0], "seq_len": str(cell[1]), "layout": cell[2], "precision": cell[4]}
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
        "precision": cfg.get("precision", DEFAULT_PRECISION),  # files from before --precision ran in bf16
        "global_batch": int(cfg.get("global_batch", "0")) or None,
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
                            "running", precision=cell[4])
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
    """One run per cell (model, layout, length, --device, --precision, --global-batch): the newest; returns (kept, set
    aside)."""
    newest = {}
    for r in sorted(runs, key=lambda r: (r["time"], r["mtime"])):
        newest[(r["model"], r["layout"], r["seq"], r["device"], r["precision"], r.get("global_batch"))] = r
    kept = {id(r) for r in newest.values()}
    return list(newest.values()), [r for r in runs if id(r) not in kept]


def label_devices(runs):
    """With runs on CPUs and GPUs in one report, the model column names the device too, so no two cells collide."""
    if len({r["device"] for r in runs}) > 1:
        for r in runs:
            r["model"] = f"{r['model']} ({r['device']})"


def label_layouts(rows):
    """With cells in more than one precision, or runs of more than one global batch, in one report, each row's layout
    names them too — T1P1D1 (bf16), T1P1D1 (fp8); T1P1D1 (gb 8), T1P1D1 (gb 32) — the key every table and figure groups
    by: a layout column that says them, a feasibility table, fit, series (colour and marker, named in the legend) and
    study-figure panel per layout, precision and global batch, and no two cells collide (a step's time and memory
    grow with the global batch, so one series through runs of different batches would mislead). With one of each the
    layouts stay as they are. A cell whose global batch is unknown (a sweep manifest that predates recording it) gets
    none."""
    precisions = len({r["precision"] for r in rows}) > 1
    batches = len({r.get("global_batch") for r in rows if r.get("global_batch")}) > 1
    for r in rows:
        parts = ([r["precision"]] if precisions else []) + ([f"gb {r['global_batch']}"]
                                                            if batches and r.get("global_batch") else [])
        if parts:
            r["layout"] = f"{r['layout']} ({', '.join(parts)})"