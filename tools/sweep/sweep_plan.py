"""qwen3-sweep's plan of every cell, by qwen3-pretrain --plan, the one judge of a layout at a length: each cell's
verdict (fits, does not fit, refused with a reason), the options every cell shares asked once before anything runs,
the --plan table (planned peak per rank, memory policy and, where the GPU kind has a calibration, predicted step time,
tokens/s, MFU and run time), and DIR/cells.json — every cell with its refusal, planned peak and predicted step time,
for qwen3-report. Standard library only."""
import json
import shlex

from qwen3_common import CELLS_FORMAT, CELLS_VERSION, DEFAULT_PRECISION, failer
from sweep_commands import ToolError, error_reason, parallel_map, pretrain_args, run_tool, tool

fail = failer("qwen3-sweep")


def plan_cell(spec, cell, root, bin_dir, world_size):
    """qwen3-pretrain --plan --format json for one cell: (exit code, the plan as a dict or None, stderr); 0 fits,
    3 does not fit, 2 refused."""
    cmd = pretrain_args(spec, cell, root, tool(bin_dir, "qwen3-pretrain")) + \
        ["--plan", "--format", "json", "--world-size", str(world_size), "--device-memory", spec["device_memory"],
         "--ranks-per-node", str(min(spec["gpus_per_node"], world_size))] + \
        (["--host-memory", spec["host_memory"]] if spec["host_memory"] else [])
    r = run_tool(cmd)
    if r.returncode not in (0, 2, 3):
        raise ToolError(f"qwen3-pretrain --plan failed for {cell['name']} (exit {r.returncode}): "
                        f"{error_reason(r.stderr, 'qwen3-pretrain')}")
    return r.returncode, json.loads(r.stdout) if r.returncode in (0, 3) else None, r.stderr


def check_spec_options(path, spec, root, bin_dir):
    """Options every cell shares (device_memory, recompute, extra_args) asked once, on one rank with no parallelism,
    so that a refusal of them is one message before anything runs rather than a refusal of every cell."""
    probe = {"name": "options-check", "model": spec["models"][0], "seq": spec["lengths"][0], "tp": 1, "pp": 1, "cp": 1,
             "precision": (spec.get("precisions") or [DEFAULT_PRECISION])[0]}
    code, _, err = plan_cell(spec, probe, root, bin_dir, 1)
    if code == 2:
        fail(2, f"{path}: qwen3-pretrain refuses the specification's options: {error_reason(err, 'qwen3-pretrain')}")


def plan_cells(spec, cells, root, bin_dir):
    """Every cell's plan, in cell order: {name: (exit code, stdout, refusal reason or None)}."""
    plans = parallel_map(lambda c: plan_cell(spec, c, root, bin_dir, spec["ranks"]), cells)
    return {c["name"]: (code, out, error_reason(err, "qwen3-pretrain") if code == 2 else None)
            for c, (code, out, err) in zip(cells, plans)}


def merged_calibrate(commands, out):
    """One qwen3-calibrate command that measures what each of `commands` (qwen3-pretrain --plan's unpriced.command of
    each cell) would: their --models and --lengths joined, written to `out`; None when they differ in anything else
    (--tp, --base) or there are none."""
    models, lengths, rest = [], [], set()
    for cmd in commands:
        words = shlex.split(cmd)
        opts = dict(zip(words[1::2], words[2::2]))
        models += [m for m in opts.pop("--models", "").split(",") if m and m not in models]
        lengths += [n for n in opts.pop("--lengths", "").split(",") if n and n not in lengths]
        opts.pop("--out", None)
        rest.add(tuple(sorted(opts.items())))
    if len(rest) != 1 or not models:
        return None
    words = [shlex.split(commands[0])[0], "--models", ",".join(models),
             "--lengths", ",".join(sorted(lengths, key=int))] + [w for kv in rest.pop() for w in kv] + ["--out", out]
    return shlex.join(words)


def print_plan_table(spec, cells, plans):
    """--plan: every cell's planned peak per rank and, where the GPU kind has a calibration, its predicted step time,
    tokens/s, MFU and run time (the spec's steps), as a Markdown table (docs/study-plan.md is one); with a precision
    column when the spec names precision."""
    # A CPU run has no device limit: its peak is the CUDA engine's plan for the cell, for comparison, with no verdict.
    on_cpu = spec["device"] == "cpu"
    memory = "planned peak per rank (GiB)" if on_cpu else f"planned peak per rank (GiB, {spec['device_memory']} device)"
    named = bool(spec.get("precisions"))
    print(f"| model | length | layout |{' precision |' if named else ''} memory policy | {memory} "
          "| pinned host memory per rank (GiB) | verdict | predicted step (s) | tokens/s | MFU | "
          f"{spec['steps']} steps (min) | not measured on this card |")
    print("|---|---|---|" + "---|" * named + "---|---|---|---|---|---|---|---|---|")
    total, unpriced, sources, advice = 0.0, 0, {}, []
    for c in cells:
        code, plan, reason = plans[c["name"]]
        if reason is None and plan:
            row = (plan["memory_policy"], f"{plan['peak_bytes'] / 2**30:.1f}", f"{plan['host_pinned_bytes'] / 2**30:.1f}",
                   "runs (CPU: no device limit)" if on_cpu else "✔ fits" if plan["fits"] else
                   "✖ host memory" if plan["fits_device"] else "✖ does not fit")
            p = plan.get("predicted")
            if p and plan["fits"]:
                total += p["step_s"] * spec["steps"]
                # The terms of the prediction that rest on published or assumed figures (issue 28 item 5).
                others = {k: v for k, v in p.get("sources", {}).items() if not v.startswith("measured on")}
                sources.update(others)
                row += (f"{p['step_s']:.2f}", f"{p['tokens_per_s']:,.0f}", f"{100 * p['mfu']:.1f}%",
                        f"{p['step_s'] * spec['steps'] / 60:.1f}", ", ".join(others) or "none")
            elif plan.get("unpriced") and plan["fits"]:
                # The calibration lacks an operation of the cell: no number (an operation priced 0 is no prediction).
                unpriced += 1
                advice.append(plan["unpriced"])
                row += ("no prediction (unpriced)",) + ("—",) * 4
            else:
                row += ("—",) * 5
        else:
            row = ("—", "—", "—", reason or "?") + ("—",) * 5
        cell = [c["model"], str(c["seq"]), c["layout"]] + ([c["precision"]] if named else [])
        print(f"| {' | '.join(cell + list(row))} |")
    if total > 0:
        print(f"\nPredicted time of every cell that fits, {spec['steps']} steps each: {total / 3600:.2f} h "
              "(steps only: start-up and the dataset are not counted)"
              + (f", leaving out {unpriced} cell{'s' if unpriced != 1 else ''} with no prediction." if unpriced else "."))
    for term, source in sorted(sources.items()):
        print(f"\n- {term}: {source}")
    if unpriced:
        print(f"\n{unpriced} cell{'s' if unpriced != 1 else ''} that fit{'s' if unpriced == 1 else ''} "
              f"{'have' if unpriced != 1 else 'has'} no predicted step: the calibration lacks operations of "
              f"{'them' if unpriced != 1 else 'it'} (`qwen3-pretrain --plan` on such a cell says which).")
        kind = advice[0].get("calibration", "")
        cmd = merged_calibrate([a["command"] for a in advice if a.get("command")], f"{kind}-{spec['name']}.json")
        if cmd:
            adopt = next(a["adopt"] for a in advice if a.get("adopt"))
            print(f"One run of qwen3-calibrate on the card measures them all: `{cmd}`; {adopt}, and plan again.")


def predicted_step(plan):
    """The plan's predicted step time in seconds (qwen3-pretrain --plan with a calibration of the GPU kind), or None."""
    p = (plan or {}).get("predicted")
    return p["step_s"] if p and (plan or {}).get("fits") else None


def manifest_text(spec, cells, plans):
    """DIR/cells.json (format qwen3-sweep-cells, version 1; docs/cli.md): one line per cell, so that it diffs well;
    with the planned peak and predicted step time where --plan gives them, and the spec's steps and global batch; each cell's precision
    when the spec names precision (qwen3-report reads a cell without one as bf16)."""
    keys = ("name", "model", "seq", "layout", "tp", "pp", "cp", "dp")
    keys += ("precision",) if spec.get("precisions") else ()
    rows = [json.dumps({**{k: c[k] for k in keys},
                        "device": spec["device"], "results": f"results/{c['name']}.h5", "refused": plans[c["name"]][2],
                        "steps": spec["steps"], "global_batch": spec.get("global_batch"),
                        "planned_peak_bytes": (plans[c["name"]][1] or {}).get("peak_bytes"),
                        "plan_fits": (plans[c["name"]][1] or {}).get("fits"),
                        "predicted_step_s": predicted_step(plans[c["name"]][1])}, ensure_ascii=False)
            for c in cells]
    head = json.dumps({"format": CELLS_FORMAT, "version": CELLS_VERSION, "sweep": spec["name"]},
                      ensure_ascii=False)[:-1]
    return head + ', "cells": [\n  ' + ",\n  ".join(rows) + "\n]}\n"
