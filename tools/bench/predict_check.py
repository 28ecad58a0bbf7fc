#!/usr/bin/env python3
"""The step model held against measured runs (issue 28): for each results file, qwen3-pretrain --plan on the same
model, length, batch, layout and memory policy (the one --recompute auto chose, as the file records it) with a GPU
kind's calibration, beside the measured step and the allocator's peak. Prints a markdown table and the mean and
largest |error|.

Usage: tools/bench/predict_check.py RESULTS.h5... [--bin build/bin] [--calibration FILE] [--kind h100-80gb|h200]
                                    [--smi CSV] [--host-from CALIBRATION.json] [--host-rate-from-run]
                                    [--estimate-from KIND|FILE]
--host-from: price with the calibration's kernels but the host figures (pinned copies, CPU AdamW, round trip) of
another calibration of the same kind: that of the host the runs ran on (qwen3-calibrate --base … --models tiny in the
same device call measures them in seconds). A step with the optimizer on the host is priced for a host's CPU, and the
CPU's AdamW rate differs between hosts of one GPU kind by more than the step model's error (docs/studies/1xh100).
--host-rate-from-run: for a run that timed its own host optimizer (ranks/host_optimizer_cpu_s, files since
2026-12-06), price the host AdamW at the rate the run measured: the step model checked with the host's CPU taken out.
--estimate-from: qwen3-pretrain --plan's option — the FP8 kernels the calibration lacks priced from another card's
(a forecast, docs/fp8.md); the footer says how many runs it priced so.
--smi: nvidia-smi's samples taken beside the runs (`nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,
nounits -lms 500`, as tools/bench/study_session.sh takes them): a column with the largest sample between each run's
start and end, less plan + reserve. The kind defaults to the card each file names (device_names); the calibration to the kind's committed one beside the
executables (calibration/<kind>.json). Needs h5py (Debian's python3-h5py)."""
import argparse
import atexit
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile

import h5py

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "common"))  # qwen3_common
import plan_json  # noqa: E402
from qwen3_common import text  # noqa: E402

# The card a results file names → the --device-memory name whose calibration prices it.
CARD_KINDS = (("H200", "h200"), ("H100 80GB", "h100-80gb"))


def utc(stamp):
    return datetime.datetime.strptime(text(stamp), "%Y-%m-%dT%H:%M:%SZ")


def smi_samples(path):
    """nvidia-smi's (time, MiB used) samples; lines it could not write (a sample cut by the kill) are skipped."""
    samples = []
    with open(path) as f:
        for row in csv.reader(f):
            try:
                samples.append((datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f"), int(row[1])))
            except (IndexError, ValueError):
                pass
    return samples


def smi_window(samples, start, end, empty_mib=1024):
    """The MiB of the samples that are a run's own, from its whole-second start stamp to `end`. Around the start the
    device may still hold the run before (not yet freed) or already this one (a small model allocates within a
    second): of the second before the stamp and the stamp's own, only the samples after the last empty one (below
    `empty_mib`: no process's buffers) count, none of the stamp's second if neither has an empty one."""
    second = datetime.timedelta(seconds=1)
    edge = [(t, mib) for t, mib in samples if start - second <= t < start + second]
    empty = [i for i, (_, mib) in enumerate(edge) if mib < empty_mib]
    own = edge[empty[-1] + 1:] if empty else []
    return [mib for _, mib in own] + [mib for t, mib in samples if start + second <= t <= end]


def committed_calibration(a):
    if not a.kind:
        sys.exit("predict_check: --host-from without --calibration needs --kind (whose committed calibration to take)")
    return os.path.join(a.bin, "calibration", f"{a.kind}.json")


def edited_copy(calibration, edit):
    """A copy of the calibration file with edit(json) applied (a temporary file, removed at exit)."""
    with open(calibration) as f:
        c = json.load(f)
    edit(c)
    out = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(c, out)
    out.close()
    atexit.register(os.remove, out.name)
    return out.name


def with_host_of(calibration, host_from):
    """The calibration with the host figures of `host_from`."""
    with open(host_from) as f:
        h = json.load(f)

    def edit(c):
        if h.get("kind") != c.get("kind"):
            sys.exit(f"predict_check: --host-from {host_from} is for {h.get('kind')}, the calibration for {c.get('kind')}")
        c["host"] = h["host"]
        c["measured"] += f"; host figures from {host_from} ({h['measured'].split(';')[-1].strip()})"
    return edited_copy(calibration, edit)


def with_cpu_rate(calibration, rate):
    """The calibration with the CPU AdamW rate a run measured of itself (elements/s on the calibration's threads)."""
    def edit(c):
        c["host"]["cpu_adamw_elements_per_s"] = rate
        c["measured"] += f"; CPU AdamW {rate / 1e9:.2f} G elements/s as the run's own passes measured it"
    return edited_copy(calibration, edit)


def calibrated_host_rate(calibration, bin_dir, kind):
    """The CPU AdamW rate (elements/s) the calibration prices the host optimizer with."""
    with open(calibration or os.path.join(bin_dir, "calibration", f"{kind}.json")) as f:
        return json.load(f)["host"]["cpu_adamw_elements_per_s"]


def run_of(path, bin_dir):
    """What the file says ran and what it measured; None for a run that did not end ok."""
    r = subprocess.run([os.path.join(bin_dir, "qwen3-results"), path, "--format", "json"], capture_output=True, text=True)
    try:  # qwen3-results exits non-zero for a run that did not end ok, and still describes it
        summary = json.loads(r.stdout)
    except json.JSONDecodeError:
        sys.exit(f"predict_check: {path}: {r.stderr.strip() or 'qwen3-results failed'}")
    if summary["status"] != "ok" or not summary.get("tokens_per_s"):
        return None
    with h5py.File(path, "r") as f:
        a, c = f.attrs, f["config"].attrs
        run = {"model": text(c["model"]), "seq": int(c["seq_len"]), "global_batch": int(c["global_batch"]),
               "micro_batch": int(c["micro_batch"]), "tp": int(c["tp"]), "pp": int(c["pp"]), "cp": int(c["cp"]),
               "ranks": int(a["world_size"]), "recompute": text(a["recompute"]),
               "recompute_layers": int(a.get("recompute_num_layers", 0)),
               "offload_inputs": bool(a.get("offload_inputs", 0)), "offload_optimizer": float(a.get("offload_optimizer", 0)),
               # Files before FP8 (2026-12-07) ran bf16 and record neither.
               "precision": text(c["precision"]) if "precision" in c else "bf16",
               "fp8_weights": text(a["fp8_weights"]) if "fp8_weights" in a else "",
               # An fp8 run's recipe (files before delayed scaling, 2026-12-07, scaled every FP8 tensor from its own
               # amax); a bf16 run's config names the option's default, which --plan would refuse for bf16.
               "fp8_scaling": text(c["fp8_scaling"]) if "fp8_scaling" in c and text(c.get("precision", "bf16")) == "fp8"
                              else "",
               "card": text(a["device_names"][0] if len(a["device_names"].shape) else a["device_names"]),
               "commit": text(a["git_commit"]), "allocator_peak": max(int(x) for x in f["memory/peak_bytes"][()]),
               "device_peak": max(int(x) for x in f["memory/device_peak_bytes"][()]) if "memory/device_peak_bytes" in f else None,
               "recorded_prediction": float(a["predicted_step_s"]) if "predicted_step_s" in a else None,
               # Stamps are whole seconds: the run's samples are from its start's second (see smi_window) to its
               # end's next.
               "start": utc(a["start_time_utc"]),
               "end": utc(a["end_time_utc"]) + datetime.timedelta(seconds=1)}
    # The optimizer's host part as the run's CPU timed it (files since 2026-12-06): rank 0's elements per second.
    r0 = (summary.get("ranks") or [{}])[0]
    run["host_rate"] = (r0["host_optimizer_elements"] / r0["host_optimizer_cpu_s"]
                        if r0.get("host_optimizer_elements") and r0.get("host_optimizer_cpu_s") else None)
    run["tokens_per_s"] = float(summary["tokens_per_s"])
    run["step_s"] = run["global_batch"] * run["seq"] / run["tokens_per_s"]
    return run


def plan_of(run, kind, bin_dir, calibration, estimate_from=""):
    """--plan's JSON for the layout a results file ran (plan_json.py builds the command)."""
    return plan_json.plan(bin_dir, {
        "model": run["model"], "seq_len": run["seq"], "global_batch": run["global_batch"],
        "micro_batch": run["micro_batch"], "tp": run["tp"], "pp": run["pp"], "cp": run["cp"], "world_size": run["ranks"],
        "device_memory": kind, "recompute": run["recompute"], "recompute_num_layers": run["recompute_layers"],
        "offload_inputs": run["offload_inputs"], "offload_optimizer": run["offload_optimizer"],
        "precision": run["precision"], "fp8_weights": run["fp8_weights"], "fp8_scaling": run["fp8_scaling"]},
        calibration, tool="predict_check", estimate_from=estimate_from)


def policy_of(run):
    p = run["recompute"] + (f" ({run['recompute_layers']} layers)" if run["recompute_layers"] else "")
    if run["offload_inputs"]:
        p += ", inputs on host"
    if run["offload_optimizer"] > 0:
        p += f", {run['offload_optimizer']:.0%} of the optimizer on host"
    if run["precision"] != "bf16":
        p += f", {run['precision']}" + (f" (weights {run['fp8_weights']})" if run["fp8_weights"] else "")
        if run["fp8_scaling"] not in ("", "current"):
            p += f", {run['fp8_scaling']} scaling"
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin"))
    ap.add_argument("--calibration", default="")
    ap.add_argument("--kind", default="")
    ap.add_argument("--smi", default="")
    ap.add_argument("--host-from", default="")
    ap.add_argument("--host-rate-from-run", action="store_true")
    ap.add_argument("--estimate-from", default="")
    a = ap.parse_args()
    if a.host_from:
        a.calibration = with_host_of(a.calibration or committed_calibration(a), a.host_from)
    smi = smi_samples(a.smi) if a.smi else None
    runs = []
    for path in a.results:
        run = run_of(path, a.bin)
        if run is None:
            print(f"predict_check: {path}: not a finished run, left out", file=sys.stderr)
        else:
            runs.append((path, run))
    any_host = any(run["host_rate"] for _, run in runs)
    rows, errors, estimated = [], [], 0
    for path, run in runs:
        kind = a.kind or next((k for name, k in CARD_KINDS if name in run["card"]), "")
        if not kind:
            sys.exit(f"predict_check: {path}: card '{run['card']}' is none of {[n for n, _ in CARD_KINDS]}: pass --kind")
        calibration = a.calibration
        if a.host_rate_from_run and run["host_rate"]:
            calibration = with_cpu_rate(a.calibration or os.path.join(a.bin, "calibration", f"{kind}.json"),
                                        run["host_rate"])
        plan = plan_of(run, kind, a.bin, calibration, a.estimate_from)
        pred = (plan.get("predicted") or {}).get("step_s")
        estimated += bool((plan.get("predicted") or {}).get("estimated_operations"))
        err = None if pred is None else 100 * (pred - run["step_s"]) / run["step_s"]
        if err is not None:
            errors.append(err)
        layout = f"T{run['tp']}P{run['pp']}" + (f"C{run['cp']}" if run["cp"] > 1 else "") + \
            f"D{run['ranks'] // (run['tp'] * run['pp'] * run['cp'])}"
        mem = f"{int(plan['plan_bytes']) - run['allocator_peak']:+d} B"
        memory = ["" if run["device_peak"] is None else f"{(int(plan['peak_bytes']) - run['device_peak']) / 2**20:+.0f} MiB"]
        if smi is not None:  # the largest nvidia-smi sample between the run's start and end
            during = smi_window(smi, run["start"], run["end"])
            memory.append(f"{int(plan['peak_bytes']) / 2**20 - max(during):+.0f} MiB" if during else "no sample")
        if any_host:
            memory.append(f"{run['host_rate'] / 1e9:.2f} / {calibrated_host_rate(a.calibration, a.bin, kind) / 1e9:.2f}"
                          if run["host_rate"] else "")
        device = " | ".join(memory)
        rec = run["recorded_prediction"]  # what the run itself recorded, from the calibration it found then
        recorded = "" if rec is None else f"{rec:.4f} ({100 * (rec - run['step_s']) / run['step_s']:+.1f}%)"
        rows.append(f"| {run['card']} | {run['model']} | {run['seq']:,} | {run['global_batch']} | {layout} | "
                    f"{policy_of(run)} | {run['step_s']:.4f} | {'none (unpriced)' if pred is None else f'{pred:.4f}'} | "
                    f"{'' if err is None else f'{err:+.1f}%'} | {recorded} | {mem} | {device} | {run['commit']} |")
    print("| card | model | length | global batch | layout | memory policy | measured step (s) | predicted (s) | error "
          "| recorded by the run (s) | plan − allocator peak | plan + reserve − device peak |"
          + (" plan + reserve − nvidia-smi's peak |" if smi is not None else "")
          + (" host AdamW, G elements/s: the run's CPU / the calibration |" if any_host else "") + " commit |")
    print("|---" * (13 + (smi is not None) + any_host) + "|")
    print("\n".join(rows))
    if errors:
        mean = sum(abs(e) for e in errors) / len(errors)
        print(f"\n{len(errors)} runs priced: mean |error| {mean:.1f}%, largest {max(errors, key=abs):+.1f}%"
              + (f"; {estimated} with FP8 kernels estimated from {a.estimate_from}" if estimated else ""))


if __name__ == "__main__":
    main()
