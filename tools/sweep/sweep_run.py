"""How qwen3-sweep runs the cells left to run, after building the datasets they need: here (--local), one after another
under mpirun with a fair share of the cores per rank, each cell's log ending with its exit code (qwen3-report reads
that line); or on Slurm, as one array job per submission — its own table of cells, a job script that passes Slurm's
warning to the ranks as "save and stop" and requeues a pre-empted cell (never a diverged one), and a record of which
task runs which cell so that the next submission leaves out what is still queued. Standard library only."""
import json
import os
import shlex
import subprocess
import time

from qwen3_common import EXIT_DIVERGED, EXIT_PREEMPTED, LOG_END
from sweep_commands import ToolError, pretrain_args, results_path, run_tool, tool, tool_json, write_if_changed
from sweep_status import SUBMISSION_FORMAT


def build_datasets(builds):
    """Runs each dataset build (sweep_status.dataset_builds), saying why; a failed one ends the sweep (ToolError)."""
    for cmd, why in builds:
        print(f"qwen3-sweep: building {cmd[3]} ({why})")
        r = run_tool(cmd)
        if r.returncode != 0:
            raise ToolError(f"building {cmd[3]} failed: {r.stderr.strip()}")


def cores_per_rank(ranks):
    """A fair share of this machine's cores (those this process may use) for each rank."""
    return max(1, len(os.sched_getaffinity(0)) // ranks)


def run_local(spec, todo, root, a):
    """Runs the cells one after another under mpirun: no core binding (mpirun's default would give a rank one core)
    and OpenMP threads = cores per rank, unless OMP_NUM_THREADS is set; rank 0 given time to finish a failed cell's
    results file, as jobs/pretrain.sbatch gives it (Open MPI's odls_base_sigkill_timeout, 5 s unless set)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(cores_per_rank(spec["ranks"]))),
           "OMPI_MCA_odls_base_sigkill_timeout": os.environ.get("OMPI_MCA_odls_base_sigkill_timeout", "5")}
    print(f"qwen3-sweep: {spec['ranks']} ranks per cell, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, mpirun --bind-to none")
    failed = []
    for i, c in enumerate(todo):
        log = os.path.join(root, "logs", c["name"] + ".log")
        cmd = [a.mpirun, "--oversubscribe", "--bind-to", "none", "-x", "NCCL_NVLS_ENABLE=0", "-x", "OMP_NUM_THREADS",
               "-np", str(spec["ranks"])] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + \
            pretrain_args(spec, c, root, tool(a.bin, "qwen3-pretrain"))
        with open(log, "w") as f:
            try:
                code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            except OSError as e:
                raise ToolError(f"cannot run {a.mpirun}: {e.strerror} (pass --mpirun)")
            # The log's last line: how the cell ended, for qwen3-report when the run left no results file to say so.
            f.write(f"{LOG_END} {code}\n")
        outcome = ("ok" if code == 0 else
                   f"diverged (exit {code}: {diverged_step(results_path(root, c), a.bin)}, {log})" if code == EXIT_DIVERGED
                   else f"failed (exit {code}, {log})")
        print(f"[{i + 1}/{len(todo)}] {c['name']}: {outcome}")
        if code != 0:
            failed.append(c["name"])
    print(f"qwen3-sweep: {len(todo) - len(failed)} of {len(todo)} cells ran to the end; results in "
          f"{os.path.join(root, 'results')}")
    return 1 if failed else 0


def diverged_step(path, bin_dir):
    """The error message of a diverged run (it names the step), as qwen3-results reads it from the results file."""
    summary = tool_json([tool(bin_dir, "qwen3-results"), path, "--format", "json"], (0, 1)) or {}
    return summary.get("error_message") or "a loss or gradient norm was not finite"


def job_script(spec, table):
    """The array job's script: task i runs line i of this submission's cells table. It takes no name from the spec
    unquoted."""
    run = ('srun --mpi=pmix --cpu-bind=none --cpus-per-task=$cpus' if spec["slurm"].get("launcher") == "srun"
           else "mpirun --bind-to none -x NCCL_NVLS_ENABLE -x OMP_NUM_THREADS")
    return (f"#!/usr/bin/env bash\n# Written by qwen3-sweep: task i runs line i of {os.path.basename(table)} (one cell).\n"
            "set -uo pipefail\nexport NCCL_NVLS_ENABLE=\"${NCCL_NVLS_ENABLE:-0}\"\n"
            # A fair share of the node's allocated cores per rank, no binding; OpenMP threads to match unless set.
            "cpus=$(( ${SLURM_CPUS_ON_NODE:-$(nproc)} / ${SLURM_NTASKS_PER_NODE:-1} )); [ \"$cpus\" -ge 1 ] || cpus=1\n"
            "export OMP_NUM_THREADS=\"${OMP_NUM_THREADS:-$cpus}\"\n"
            "if [ \"$(id -u)\" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi\n"
            f"line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {shlex.quote(table)})\n"
            # The launcher runs in the background so that this shell can pass on Slurm's warning (sbatch
            # --signal=B:USR1, before the time limit) and a SIGTERM as SIGUSR1, which the ranks take as "save and
            # stop" (--save) and which mpirun forwards — a SIGTERM to mpirun itself would kill them.
            f"eval \"{run} $line\" &\npid=$!\n"
            "trap 'kill -USR1 \"$pid\" 2>/dev/null' USR1 TERM\n"
            "while :; do wait \"$pid\"; rc=$?; kill -0 \"$pid\" 2>/dev/null || break; done\n"
            # A cell stopped after saving a checkpoint (exit code 7) goes back in the queue; --auto-resume continues.
            # Any other code stays as it ended: a diverged cell (8) would diverge again, a failed one fail again.
            f"if [ \"$rc\" -eq {EXIT_PREEMPTED} ] && command -v scontrol >/dev/null; then\n"
            "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\" || true\nfi\nexit \"$rc\"\n")


def sbatch_command(spec, root, tasks, script):
    """The sbatch command line of an array job of `tasks` cells, with the spec's [slurm] options."""
    cmd = ["sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--job-name={spec['name']}", f"--nodes={spec['nodes']}",
           f"--ntasks-per-node={spec['gpus_per_node']}", f"--output={os.path.join(root, 'logs', '%x-%A_%a.out')}"] + \
        (["--requeue", "--signal=B:USR1@300"] if spec["save_interval"] > 0 else [])
    if spec["device"] == "cuda":
        cmd.append(f"--gpus-per-node={spec['gpus_per_node']}")
    for k in ("partition", "time", "account", "cpus_per_task"):
        if k in spec["slurm"]:
            cmd.append(f"--{k.replace('_', '-')}={spec['slurm'][k]}")
    return cmd + [script]


def submit(spec, todo, root, bin_dir):
    """One array job for the cells to run: its own task table and script (a requeued task of an earlier array still
    reads its own table), and a record of which task runs which cell (DIR/jobs/submission-<job>.json), so that the
    next submission leaves out what is still queued."""
    stamp = f"{os.getpid()}-{int(time.time())}"
    table = os.path.join(root, "jobs", f"cells-{stamp}.tsv")
    with open(table, "w") as f:
        f.writelines(shlex.join(pretrain_args(spec, c, root, tool(bin_dir, "qwen3-pretrain"))) + "\n" for c in todo)
    script = os.path.join(root, "jobs", f"sweep-{stamp}.sbatch")
    with open(script, "w") as f:
        f.write(job_script(spec, table))
    r = run_tool(sbatch_command(spec, root, len(todo), script))
    if r.returncode != 0:
        raise ToolError(f"sbatch refused the array job: {r.stderr.strip()}")
    job = r.stdout.strip().split(";")[0]
    write_if_changed(os.path.join(root, "jobs", f"submission-{job}.json"), json.dumps(
        {"format": SUBMISSION_FORMAT, "version": 1, "job": job, "table": os.path.basename(table),
         "cells": [c["name"] for c in todo]}, indent=1) + "\n")
    print(f"qwen3-sweep: submitted array job {job} ({len(todo)} tasks); logs in {os.path.join(root, 'logs')}")
    return 0
