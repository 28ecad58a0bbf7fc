#!/usr/bin/python3
"""qwen3-sweep: expands a sweep specification (model × length × layout × precision, inputs/*.sweep.ini) into cells,
asks qwen3-pretrain --plan about every cell (a layout it refuses for a length is recorded, not run), builds the
datasets the cells need, and runs them — submitted to Slurm as one array job (default), one after another on this
machine (--local), or only printed (--dry-run). Each cell writes <dir>/results/<cell>.h5; re-running skips the cells
whose results file is complete, and the cells an earlier submission of the same --dir still has queued or running, so
an interrupted sweep resumes. One failing cell never stops the others. <dir>/cells.json lists every cell (with
refusals) for qwen3-report. With `save_interval = N` in the spec each cell checkpoints under <dir>/checkpoints/<cell>
and continues from there (--auto-resume): a cell pre-empted by Slurm (status "preempted", exit code 7) is requeued by
its array task, and re-running the sweep runs it again from its checkpoint. A cell that diverged (status "diverged",
exit code 8: a loss or gradient norm was not finite) is an answer like an out-of-memory cell: never requeued, never run
again (not even by --retry-failed: the same seed, data and options diverge again).

This file is the command line; its modules lie beside it — sweep_spec.py (the specification and its cells),
sweep_commands.py (the binaries' command lines), sweep_plan.py (--plan, cells.json), sweep_status.py (where each cell
stands, the datasets to build), sweep_run.py (--local, Slurm) — with qwen3_common.py, which tools/common holds in the
source tree.
"""
import argparse, json, os, shlex, shutil, sys

HERE = os.path.dirname(os.path.realpath(__file__))
if not os.path.isfile(os.path.join(HERE, "qwen3_common.py")):  # the source tree: tools/sweep beside tools/common
    sys.path.insert(1, os.path.join(HERE, os.pardir, "common"))
from qwen3_common import failer, parse_or_usage, quiet_broken_pipe  # noqa: E402
from sweep_commands import ToolError, error_reason, pretrain_args, run_tool, tool, write_if_changed  # noqa: E402
from sweep_plan import check_spec_options, manifest_text, plan_cells, print_plan_table  # noqa: E402
from sweep_run import build_datasets, run_local, submit  # noqa: E402
from sweep_spec import PRESETS, RUN_OPTIONS, cells_of, read_spec, select_cells  # noqa: E402
from sweep_status import classify, dataset_builds, summary  # noqa: E402

EXIT_CODES = """exit codes:
  0  done: cells ran (--local), were submitted, or nothing was left to do
  1  some cells failed (--local): an error, out of memory or diverged (each cell's line says which)
  2  bad option or specification (qwen3-pretrain --plan refusing the specification's options included)
  3  a missing binary, or a tool that failed (qwen3-dataset, qwen3-pretrain --plan, sbatch, squeue)
  4  the sweep folder cannot be written"""
fail = failer("qwen3-sweep")


def parse_command_line():
    ap = argparse.ArgumentParser(prog="qwen3-sweep", description=__doc__.split("\n\n")[0], epilog=EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="sweep specification (INI: [sweep], optional [slurm]; see inputs/ and docs/cli.md)")
    ap.add_argument("--dir", required=True, help="sweep folder: data/, results/, logs/, jobs/, cells.json go under it")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run the cells one after another on this machine")
    mode.add_argument("--dry-run", action="store_true", help="print the cells and commands, run and write nothing")
    mode.add_argument("--plan", action="store_true",
                      help="print every cell's memory plan per rank (qwen3-pretrain --plan) as a Markdown table; run nothing")
    ap.add_argument("--retry-failed", action="store_true",
                    help="run again the cells whose results file says 'error' (oom, oom_predicted and diverged are "
                         "answers, never re-run)")
    ap.add_argument("--only", metavar="PATTERNS",
                    help="only the cells whose names match one of these comma-separated shell patterns "
                         "(e.g. '0.6B-*,1.7B-L1024-*'); the others are left as they are")
    ap.add_argument("--bin", default=os.path.dirname(os.path.abspath(__file__)), help="folder of the qwen3 binaries")
    ap.add_argument("--mpirun", default="mpirun", help="MPI launcher for --local (default: mpirun)")
    return parse_or_usage(ap)


def print_dry_run(builds, refused, todo, spec, root, bin_dir):
    for cmd, why in builds:
        print(f"dataset ({why}):", shlex.join(cmd))
    for name, reason in refused:
        print(f"refused {name}: {reason}")
    for c in todo:
        print(f"cell {c['name']}:", shlex.join(pretrain_args(spec, c, root, tool(bin_dir, "qwen3-pretrain"))))


def main():
    quiet_broken_pipe()
    try:
        return sweep(parse_command_line())
    except ToolError as e:
        fail(3, str(e))


def model_vocabularies(bin_dir):
    """{preset name: vocabulary size}, as qwen3-pretrain itself lists its presets."""
    r = run_tool([tool(bin_dir, "qwen3-pretrain"), "--list-models", "--format", "json"])
    if r.returncode != 0:
        fail(3, f"qwen3-pretrain --list-models failed: {error_reason(r.stderr, 'qwen3-pretrain')}")
    return {m["name"]: m["vocab_size"] for m in json.loads(r.stdout)}


def run_options(bin_dir):
    """{key: option} of qwen3-pretrain's run options, as its option table lists them (--list-options)."""
    r = run_tool([tool(bin_dir, "qwen3-pretrain"), "--list-options", "--format", "json"])
    if r.returncode != 0:
        fail(3, f"qwen3-pretrain --list-options failed: {error_reason(r.stderr, 'qwen3-pretrain')}")
    return {o["key"]: o for o in json.loads(r.stdout) if o["section"] == "run"}


def sweep(a):
    """Reads the spec, judges every cell, and plans, prints, runs or submits what is left to do."""
    for t in ("qwen3-pretrain", "qwen3-dataset", "qwen3-results"):
        if not os.access(tool(a.bin, t), os.X_OK):
            fail(3, f"'{tool(a.bin, t)}' is missing or not executable (build it, or pass --bin)")
    PRESETS.update(model_vocabularies(a.bin))
    RUN_OPTIONS.update(run_options(a.bin))
    spec = read_spec(a.spec)
    root = os.path.abspath(a.dir)
    if not (a.local or a.dry_run or a.plan) and shutil.which("sbatch") is None:
        fail(3, "sbatch is not on PATH (use --local to run here, or --dry-run)")
    check_spec_options(a.spec, spec, root, a.bin)
    every = cells_of(spec)
    cells = select_cells(every, a.only)
    plans = plan_cells(spec, every, root, a.bin)  # every cell's, for the manifest
    if a.plan:
        print_plan_table(spec, cells, plans)
        return 0
    state = classify(cells, plans, root, a.bin, a.retry_failed)
    print(summary(spec, cells, state))
    todo = [c for c in cells if state[c["name"]] in ("todo", "failed")]
    refused = [(c["name"], plans[c["name"]][2]) for c in cells if state[c["name"]] == "refused"]
    builds = dataset_builds(spec, todo, root, a.bin)
    if a.dry_run:
        print_dry_run(builds, refused, todo, spec, root, a.bin)
        return 0
    for name, reason in refused:
        print(f"qwen3-sweep: {name} not run: {reason}")
    try:
        for sub in ("data", "results", "logs", "jobs"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        write_if_changed(os.path.join(root, "cells.json"), manifest_text(spec, every, plans))
    except OSError as e:
        fail(4, f"cannot write the sweep folder '{root}': {e.strerror}")
    if not todo:
        print("qwen3-sweep: nothing to run" if a.local else "qwen3-sweep: nothing to submit")
        return 0
    build_datasets(builds)
    return run_local(spec, todo, root, a) if a.local else submit(spec, todo, root, a.bin)


if __name__ == "__main__":
    sys.exit(main())
