"""qwen3-report's reading of a sweep's manifest (qwen3-sweep's DIR/cells.json): finding the manifests beside and above
the folders reported, checking their format, naming each cell's layout, precision (bf16 where a manifest names none)
and results file, and a row for every cell that has no results file to read — refused by the sweep's plan (with its
reason), run but ended without a results file (the exit code and the error line of its log), or not run yet (with the
predicted time where the sweep priced it). Standard library only."""
import json
import math
import os

from qwen3_common import CELLS_FORMAT, CELLS_VERSION, DEFAULT_PRECISION, EXIT_INPUT, LOG_END, failer, layout_name

NAN = math.nan
fail = failer("qwen3-report")


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


def placeholder(model, layout, seq, status, reason, predicted=NAN, plan_fits=None, planned_gib=NAN,
                precision=DEFAULT_PRECISION, global_batch=None):
    """A cell's row without a results file to read (plan_fits, planned_gib: the sweep's plan of it, where known)."""
    return {"model": model, "layout": layout, "seq": seq, "precision": precision, "global_batch": global_batch,
            "status": status, "reason": reason,
            "predicted_step_s": predicted, "plan_fits": plan_fits, "reserve_gib": NAN, "peaks_gib": [], "hosts": [],
            "device_peak_gib": NAN, "run_min": NAN, "mean_peak_gib": NAN, "std_at_peak_gib": NAN,
            "planned_gib": planned_gib, "capacity_gib": NAN, "step_time_s": NAN, "tokens_per_s": NAN, "tflops": NAN,
            "mfu": NAN, "on_gpu": False, "device_name": "",
            "device": "", "diverged_at_step": None, "steps": 0, "ranks": {}, "stages": [], "commit": "",
            "world": 0, "file": "", "bubble_formula": NAN}


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
    have = {(r["model"], r["layout"], r["seq"], r["precision"]) for r in runs}
    rows = []
    for path, _, cells in manifests:
        for c in cells:
            layout = manifest_layout(c)
            key = (c.get("model", "?"), layout, int(c.get("seq", 0)), c.get("precision", DEFAULT_PRECISION))
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
                                    c.get("plan_fits"), planned / 2**30 if planned else NAN, key[3],
                                    c.get("global_batch")))
    return rows
