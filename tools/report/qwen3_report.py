#!/usr/bin/env python3
"""qwen3-report: reads qwen3-pretrain results files (docs/results.md) — a folder searched recursively, or files — and
a sweep's cells.json when the folder (or its parent) holds one, and writes into --out: report.md (tables for people),
runs.csv / memory_per_rank.csv / feasibility.csv / regression.csv (tables to diff) and PNG plots: step time against
sequence length (one panel per model, a line and linear fit per layout, cells that did not run marked with why), peak
memory per rank (mean over ranks, every rank, the plan and the device's capacity), tokens/s and, for GPU runs, MFU.
With runs in more than one precision (/config precision; bf16 where a file records none), or of more than one global
batch, each layout is named with them — T1P1D1 (fp8), T1P1D1 (gb 8) — in every table and figure, each its own series
and study-figure panel.

Run through the qwen3-report launcher beside this file: it picks a Python that has h5py, matplotlib and scipy.
This file is the command line; its modules lie beside it (report_results.py reads results files, report_manifest.py
a sweep's cells.json, report_tables.py writes the fits, CSV files and report.md, report_plots.py and study_figures.py
draw) with qwen3_common.py, which tools/common holds in the source tree.
"""
import argparse, math, os, sys

HERE = os.path.dirname(os.path.realpath(__file__))
if not os.path.isfile(os.path.join(HERE, "qwen3_common.py")):  # the source tree: tools/report beside tools/common
    sys.path.insert(1, os.path.join(HERE, os.pardir, "common"))
from qwen3_common import EXIT_INPUT, EXIT_OUTPUT, EXIT_USAGE, failer, parse_or_usage, quiet_broken_pipe  # noqa: E402

EXIT_CODES = """exit codes:
  0  report written: every readable results file reported; files that cannot be read (not HDF5, truncated, another
     format version, no /config and no sweep cell to name it) are listed as unreadable with the reason
  2  usage: bad option, missing path; or no Python with h5py, matplotlib and scipy (the launcher says which lack what)
  3  input: nothing to report (no results file could be read, and no sweep manifest), or a bad cells.json
  4  output: --out cannot be written"""
NAN = math.nan
fail = failer("qwen3-report")

try:
    import h5py  # noqa: F401 (each package asked for here, so that the message names the first one missing)
    import numpy  # noqa: F401
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import scipy.stats  # noqa: F401
    import study_figures  # beside this file
    from report_manifest import find_manifests, manifest_placeholders, manifest_results
    from report_plots import panel_grid, plot_memory, plot_throughput, plot_time, provenance, save
    from report_results import fill_devices, find_files, label_devices, label_layouts, load_runs, newest_per_cell
    from report_tables import (fmt, linear_fits, md_feasibility, md_nodes, md_pipeline, md_regression, md_runs,
                               md_sources, md_unreadable, natural, plural, write_csv, write_tables)
except ImportError as e:
    fail(EXIT_USAGE, f"{sys.executable} lacks {e.name}: run it through the qwen3-report launcher beside this file, "
                     "which finds a Python with h5py, matplotlib and scipy (or set QWEN3_PYTHON)")


def parse_args():
    ap = argparse.ArgumentParser(prog="qwen3-report", description=__doc__.split("\n\n")[0],
                                 epilog=f"{EXIT_CODES}\n\nPython: {sys.executable}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="results files or folders holding them (a sweep's DIR: its cells.json too)")
    ap.add_argument("--out", required=True, help="folder for report.md, the CSV tables and the plots")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak for MFU (default 989, H100/H200 bf16)")
    a = parse_or_usage(ap)
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
    quiet_broken_pipe()
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
    label_layouts(runs + placeholders)  # before anything groups or sorts by layout
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
