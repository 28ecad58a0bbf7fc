"""Where each cell of qwen3-sweep stands, and what it needs before it can run: its results file's status read back by
qwen3-results (an answer — ok, out of memory, diverged — is never run again; an error only with --retry-failed), the
cells an earlier Slurm submission of the same folder still has queued or running (squeue), the one line that sums it
up, and the datasets to build or rebuild — missing, or lacking a length, enough documents or the spec's seed, as
qwen3-dataset info reads them back. Standard library only."""
import json
import os
import shutil
import sys

from sweep_commands import ToolError, dataset_path, parallel_map, results_path, run_tool, tool, tool_json
from sweep_spec import PRESETS

ANSWERS = {"ok", "oom", "oom_predicted", "diverged"}  # statuses that answer the cell's question: never re-run
FAILED = "error"  # a cell that failed for a reason of its own: complete unless --retry-failed
SLURM_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
DIVERGED = "diverged"  # qwen3-pretrain's status for a loss or gradient norm that was not finite
SUBMISSION_FORMAT = "qwen3-sweep-submission"  # DIR/jobs/submission-<job>.json: which task runs which cell


def result_status(path, bin_dir):
    """The status a final results file records (qwen3-results --format json reads it), or None when there is none to
    read. The final name appears only once a run has ended (docs/results.md): a killed run leaves only its .partial
    file."""
    if not os.path.isfile(path):
        return None
    summary = tool_json([tool(bin_dir, "qwen3-results"), path, "--format", "json"], (0, 1))  # 1: status not ok
    return summary.get("status") if summary else None


def submissions(root):
    """Every Slurm submission recorded under DIR/jobs: {array job id: [cell name of task 0, 1, ...]}."""
    out = {}
    folder = os.path.join(root, "jobs")
    for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if f.startswith("submission-") and f.endswith(".json"):
            try:
                with open(os.path.join(folder, f)) as fh:
                    rec = json.load(fh)
            except (OSError, ValueError):
                continue  # not a record this sweep wrote (they are written whole, by rename)
            if rec.get("format") == SUBMISSION_FORMAT:
                out[str(rec["job"])] = rec["cells"]
    return out


def queued_cells(root):
    """Cells that an earlier submission of this DIR still has pending or running in Slurm (squeue, one line per
    array task)."""
    jobs = submissions(root)
    if not jobs:
        return set()
    if shutil.which("squeue") is None:
        print(f"qwen3-sweep: note: {len(jobs)} earlier Slurm submissions are recorded, but squeue is not on PATH: "
              "their cells are not checked for being queued", file=sys.stderr)
        return set()
    r = run_tool(["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%F %K %T"])
    if r.returncode != 0:
        if "Invalid job id" in r.stderr:
            return set()  # Slurm has forgotten every one of them: none is queued
        raise ToolError(f"squeue failed, so the cells already queued cannot be left out: {r.stderr.strip()}")
    out = set()
    for line in r.stdout.splitlines():
        job, task, state = (line.split() + ["", "", ""])[:3]
        if state in SLURM_ACTIVE and job in jobs and task.isdigit() and int(task) < len(jobs[job]):
            out.add(jobs[job][int(task)])
    return out


def classify(cells, plans, root, bin_dir, retry_failed):
    """Each cell's state: 'refused' (qwen3-pretrain --plan refuses its layout at its length), 'complete' (its results
    answer it: ok, oom, oom_predicted), 'diverged' (an answer too: never run again, --retry-failed or not),
    'complete-failed' (error, kept unless --retry-failed), 'failed' (error, to run
    again with --retry-failed), 'queued' (pending or running from an earlier submission), else 'todo'. Slurm is asked first:
    a task that ends after that has its final results file in place when the files are read."""
    queued = queued_cells(root)
    statuses = parallel_map(lambda c: result_status(results_path(root, c), bin_dir), cells)
    state = {}
    for c, status in zip(cells, statuses):
        if plans[c["name"]][2] is not None:
            state[c["name"]] = "refused"
        elif status == DIVERGED:
            state[c["name"]] = "diverged"
        elif status in ANSWERS:
            state[c["name"]] = "complete"
        elif status == FAILED and not retry_failed:
            state[c["name"]] = "complete-failed"
        elif c["name"] in queued:
            state[c["name"]] = "queued"
        else:
            state[c["name"]] = "failed" if status == FAILED else "todo"
    return state


def summary(spec, cells, state):
    """The one line that says where the sweep stands."""
    n = {k: sum(1 for v in state.values() if v == k) for k in
         ("complete", "diverged", "complete-failed", "failed", "refused", "queued", "todo")}
    done = f"{n['complete'] + n['diverged'] + n['complete-failed']} complete"
    notes = ([f"{n['diverged']} diverged: an answer, not run again"] if n["diverged"] else []) + \
        ([f"{n['complete-failed']} failed: {FAILED}; --retry-failed re-runs them"] if n["complete-failed"] else [])
    if notes:
        done += f" ({'; '.join(notes)})"
    parts = [done]
    if n["refused"]:
        parts.append(f"{n['refused']} refused by qwen3-pretrain --plan")
    if n["queued"]:
        parts.append(f"{n['queued']} queued or running in Slurm")
    run = f"{n['todo'] + n['failed']} to run"
    if n["failed"]:
        run += f" ({n['failed']} failed before: {FAILED})"
    parts.append(run)
    grid = f"{len(spec['models'])} models × {len(spec['lengths'])} lengths × {len(spec['layouts'])} layouts" + \
        (f" × {len(spec['precisions'])} precisions" if spec.get("precisions") else "")
    return f"qwen3-sweep: {spec['name']}: {len(cells)} cells ({grid}), {spec['ranks']} ranks each; " + ", ".join(parts)


def dataset_contents(path, bin_dir):
    """What a dataset file holds, read back by qwen3-dataset info --format json: (vocab, seed or None,
    {length: documents}), or None when there is no readable file."""
    if not os.path.isfile(path):
        return None
    info = tool_json([tool(bin_dir, "qwen3-dataset"), "info", path, "--format", "json"], (0,))
    if info is None:
        return None
    return info["vocab_size"], info["seed"], {b["seq_len"]: b["documents"] for b in info["buckets"]}


def stale_reason(have, vocab, seed, lengths, documents, exists):
    """Why a dataset (dataset_contents) cannot serve cells of these lengths, or None; with the buckets to keep."""
    if have is None:
        return ("unreadable" if exists else "missing"), {}
    file_vocab, file_seed, buckets = have
    lacking = sorted(l for l in lengths if buckets.get(l, 0) < documents)
    if file_vocab != vocab:
        return f"built with vocab size {file_vocab}, not {vocab}", {}
    if file_seed != seed:
        return (f"built with seed {file_seed}, the spec asks for seed {seed}" if file_seed is not None
                else f"not a synthetic dataset of seed {seed}"), buckets
    if lacking:
        return f"lacks {documents} documents of length {', '.join(map(str, lacking))}", buckets
    return None, buckets


def dataset_builds(spec, todo, root, bin_dir):
    """(command, why) for every dataset the cells to run need that is missing or lacks what the spec asks (a length,
    enough documents, the seed). A rebuild keeps the file's other lengths, so that cells still queued from an earlier
    submission find their bucket; the tool writes a .partial file and renames it, so a running cell keeps its copy."""
    documents = max(spec["documents"], spec["global_batch"])
    builds = []
    for v in sorted({PRESETS[c["model"]] for c in todo}):
        path = dataset_path(root, v)
        have = dataset_contents(path, bin_dir)
        why, buckets = stale_reason(have, v, spec["seed"], {c["seq"] for c in todo if PRESETS[c["model"]] == v},
                                    documents, os.path.exists(path))
        if why:
            builds.append(([tool(bin_dir, "qwen3-dataset"), "synthetic", "--out", path, "--vocab-size", str(v),
                            "--lengths", ",".join(map(str, sorted(set(buckets) | set(spec["lengths"])))),
                            "--documents", str(max([documents] + list(buckets.values()))),
                            "--seed", str(spec["seed"]), "--overwrite"], why))
    return builds
