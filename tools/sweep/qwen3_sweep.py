#!/usr/bin/python3
"""qwen3-sweep: expands a sweep specification (model × sequence length × layout, inputs/*.sweep.ini) into cells,
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
"""
import argparse, concurrent.futures, configparser, difflib, fnmatch, json, os, re, shlex, shutil, signal, subprocess, sys, time

EXIT_CODES = """exit codes:
  0  done: cells ran (--local), were submitted, or nothing was left to do
  1  some cells failed (--local): an error, out of memory or diverged (each cell's line says which)
  2  bad option or specification (qwen3-pretrain --plan refusing the specification's options included)
  3  a missing binary, or a tool that failed (qwen3-dataset, qwen3-pretrain --plan, sbatch, squeue)
  4  the sweep folder cannot be written"""

# Each model preset's vocabulary size (one dataset per vocabulary), filled from qwen3-pretrain --list-models --format
# json when the sweep starts (model_vocabularies): the binary is the one source of its presets.
PRESETS = {}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # nothing a shell or Slurm would interpret
LAYOUT = re.compile(r"^T(\d+)P(\d+)(?:C(\d+))?(?:D(\d+))?$")
SWEEP_KEYS = {"name", "models", "lengths", "layouts", "global_batch", "micro_batch", "steps", "documents", "device",
              "nodes", "gpus_per_node", "extra_args", "seed", "device_memory", "host_memory", "recompute",
              "save_interval"}
SLURM_KEYS = {"partition", "time", "account", "launcher", "cpus_per_task"}
ANSWERS = {"ok", "oom", "oom_predicted", "diverged"}  # statuses that answer the cell's question: never re-run
DIVERGED, EXIT_DIVERGED, EXIT_PREEMPTED = "diverged", 8, 7  # qwen3-pretrain's status and exit codes (docs/exit-codes.md)
FAILED = "error"  # a cell that failed for a reason of its own: complete unless --retry-failed
SLURM_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
MANIFEST_FORMAT, SUBMISSION_FORMAT = "qwen3-sweep-cells", "qwen3-sweep-submission"


def fail(code, message):
    print(f"qwen3-sweep: error: {message}", file=sys.stderr)
    sys.exit(code)


# ---- the specification ------------------------------------------------------------------------------------------

def parse_list(value, what):
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        fail(2, f"{what} is empty")
    return items


def positive(value, what):
    try:
        n = int(value)
    except ValueError:
        fail(2, f"{what} must be a positive integer, got '{value}'")
    if n < 1:
        fail(2, f"{what} must be a positive integer, got '{value}'")
    return n


def section_keys(path, section, items, valid):
    """A section's keys with '-' read as '_' (qwen3-pretrain's config files write global-batch); an unknown key's
    message names the closest valid spelling."""
    out = {}
    for key, value in items:
        k = key.replace("-", "_")
        if k in out:
            fail(2, f"{path}: [{section}] sets '{k}' twice (as '_' and '-' spellings of one key)")
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            fail(2, f"{path}: unknown key '{key}' in [{section}] ({hint}valid: {', '.join(sorted(valid))})")
        out[k] = value.strip()
    return out


def read_ini(path):
    """The spec's [sweep] and [slurm] sections as dicts of normalised keys."""
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        with open(path) as f:
            cp.read_file(f)
    except OSError as e:
        fail(2, f"cannot read the sweep specification '{path}': {e.strerror}")
    except configparser.Error as e:
        fail(2, f"sweep specification '{path}': {e}")
    for section in cp.sections():
        if section not in ("sweep", "slurm"):
            fail(2, f"{path}: unknown section [{section}] (valid: [sweep], [slurm])")
    if not cp.has_section("sweep"):
        fail(2, f"{path}: no [sweep] section")
    return (section_keys(path, "sweep", cp.items("sweep"), SWEEP_KEYS),
            section_keys(path, "slurm", cp.items("slurm"), SLURM_KEYS) if cp.has_section("slurm") else {})


def layout_name(tp, pp, cp, dp):
    """The one name of a layout in every tool (qwen3-report's too): T<tp>P<pp>[C<cp>]D<dp>, C only with cp > 1."""
    return f"T{tp}P{pp}" + (f"C{cp}" if cp > 1 else "") + f"D{dp}"


def parse_layouts(path, value, ranks, where):
    """T<tp>P<pp>[C<cp>][D<dp>] → (name, tp, pp, cp, dp); dp is what the ranks leave, and must match when given."""
    out = []
    for l in parse_list(value, "layouts"):
        m = LAYOUT.match(l)
        if not m:
            fail(2, f"{path}: layout '{l}' is not of the form T<tp>P<pp>, T<tp>P<pp>C<cp> or T<tp>P<pp>[C<cp>]D<dp> "
                    "(e.g. T4P2, T4P2D1)")
        tp, pp, cp = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if min(tp, pp, cp) < 1 or ranks % (tp * pp * cp) != 0:
            fail(2, f"{path}: layout {l} needs tp·pp·cp = {tp * pp * cp} to divide the {ranks} ranks ({where})")
        dp = ranks // (tp * pp * cp)
        if m.group(4) is not None and int(m.group(4)) != dp:
            fail(2, f"{path}: layout {l} says D{m.group(4)}, but {ranks} ranks over tp·pp·cp = {tp * pp * cp} "
                    f"leave dp = {dp} ({layout_name(tp, pp, cp, dp)})")
        out.append((layout_name(tp, pp, cp, dp), tp, pp, cp, dp))
    return out


def parse_options(path, s, spec):
    """The run options every cell shares; device_memory is only checked for safe characters here, qwen3-pretrain
    --plan judges its meaning (a size or a GPU name)."""
    for k, default in (("global_batch", "32"), ("micro_batch", "1"), ("steps", "50"), ("documents", "100"),
                       ("seed", "1234")):
        spec[k] = positive(s.get(k, default), k)
    spec["device"] = s.get("device", "cuda")
    if spec["device"] not in ("cpu", "cuda"):
        fail(2, f"{path}: device must be cpu or cuda, got '{spec['device']}'")
    spec["recompute"] = s.get("recompute", "none")
    if spec["recompute"] not in ("none", "selective", "full", "auto"):
        fail(2, f"{path}: recompute '{spec['recompute']}' is not one of none, selective, full, auto")
    interval = s.get("save_interval", "0")
    if not interval.isdigit():
        fail(2, f"{path}: save_interval must be 0 (no checkpoints) or a number of steps, got '{interval}'")
    spec["save_interval"] = int(interval)
    spec["device_memory"] = s.get("device_memory", "80GB")
    if not re.match(r"^[A-Za-z0-9.+-]+$", spec["device_memory"]):
        fail(2, f"{path}: device_memory '{spec['device_memory']}' is neither a memory size (e.g. 141GB) nor a GPU name "
                "(e.g. h200): only letters, digits, '.', '+' and '-'")
    spec["host_memory"] = s.get("host_memory", "")  # a node's memory, for the plan only (a run knows its host's)
    if not re.match(r"^[A-Za-z0-9.+-]*$", spec["host_memory"]):
        fail(2, f"{path}: host_memory '{spec['host_memory']}' is not a memory size (e.g. 2TB): only letters, digits, "
                "'.', '+' and '-'")
    spec["extra_args"] = shlex.split(s.get("extra_args", ""))
    for a in spec["extra_args"]:
        if not re.match(r"^[A-Za-z0-9._=/:-]+$", a):
            fail(2, f"{path}: extra_args item '{a}' holds characters a job script must not receive")


def parse_slurm(path, sl):
    """[slurm]: values that reach sbatch's command line, checked for safe characters."""
    for k, v in sl.items():
        if k != "launcher" and not re.match(r"^[A-Za-z0-9._:-]+$", v):
            fail(2, f"{path}: [slurm] {k} = '{v}' holds characters a job script must not receive")
    if sl.get("launcher", "mpirun") not in ("mpirun", "srun"):
        fail(2, f"{path}: [slurm] launcher must be mpirun or srun")
    if "cpus_per_task" in sl:
        positive(sl["cpus_per_task"], "[slurm] cpus_per_task")
    return sl


def read_spec(path):
    s, sl = read_ini(path)
    for k in ("name", "models", "lengths", "layouts"):
        if k not in s:
            fail(2, f"{path}: [sweep] needs '{k}'")
    spec = {"name": s["name"]}
    if not NAME.match(spec["name"]):
        fail(2, f"{path}: sweep name '{spec['name']}' may hold only letters, digits, '.', '_' and '-'")
    spec["models"] = parse_list(s["models"], "models")
    for m in spec["models"]:
        if m not in PRESETS:
            fail(2, f"{path}: unknown model '{m}' (valid: {', '.join(PRESETS)})")
    spec["lengths"] = [positive(v, "a sequence length") for v in parse_list(s["lengths"], "lengths")]
    spec["nodes"] = positive(s.get("nodes", "1"), "nodes")
    spec["gpus_per_node"] = positive(s.get("gpus_per_node", "1"), "gpus_per_node")
    spec["ranks"] = spec["nodes"] * spec["gpus_per_node"]
    spec["layouts"] = parse_layouts(path, s["layouts"], spec["ranks"],
                                    f"nodes {spec['nodes']} × gpus_per_node {spec['gpus_per_node']}")
    parse_options(path, s, spec)
    spec["slurm"] = parse_slurm(path, sl)
    return spec


def cells_of(spec):
    return [{"name": f"{m}-L{l}-{name}", "model": m, "seq": l, "layout": name, "tp": tp, "pp": pp, "cp": cp, "dp": dp}
            for m in spec["models"] for l in spec["lengths"] for (name, tp, pp, cp, dp) in spec["layouts"]]


# ---- commands -----------------------------------------------------------------------------------------------------

def tool(bin_dir, name):
    return os.path.join(bin_dir, name)


def dataset_path(root, vocab):
    return os.path.join(root, "data", f"data-v{vocab}.h5")


def results_path(root, cell):
    return os.path.join(root, "results", cell["name"] + ".h5")


def pretrain_args(spec, cell, root, binary):
    return [binary, "--model", cell["model"], "--data", dataset_path(root, PRESETS[cell["model"]]),
            "--seq-len", str(cell["seq"]), "--global-batch", str(spec["global_batch"]),
            "--micro-batch", str(spec["micro_batch"]), "--steps", str(spec["steps"]), "--seed", str(spec["seed"]),
            "--tp", str(cell["tp"]), "--pp", str(cell["pp"]), "--cp", str(cell["cp"]), "--device", spec["device"],
            "--recompute", spec["recompute"], "--out", results_path(root, cell), "--overwrite"] + \
        (["--save", os.path.join(root, "checkpoints", cell["name"]), "--save-interval", str(spec["save_interval"]),
          "--save-keep", "1", "--auto-resume"] if spec["save_interval"] > 0 else []) + spec["extra_args"]


class ToolError(Exception):
    """A tool that could not run or gave no answer; main() turns it into one message and exit code 3 (worker threads
    raise it rather than print)."""


def run_tool(cmd):
    """A tool's run with its output captured."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:  # e.g. a binary being rebuilt at this moment
        raise ToolError(f"cannot run {cmd[0]}: {e.strerror}")


def parallel_map(fn, items):
    """fn over items on a few threads: the calls are short processes (qwen3-pretrain --plan, qwen3-results) that
    spend part of their time waiting (MPI start-up), so twice the cores, at least 4 and at most 16."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, max(4, 2 * (os.cpu_count() or 1)))) as pool:
        return list(pool.map(fn, items))


def error_reason(stderr, program):
    """The last line of a tool's error message, without its 'program: error: ' prefix."""
    return (stderr.strip().splitlines() or ["(no message)"])[-1].replace(f"{program}: error: ", "")


# ---- qwen3-pretrain --plan: the one judge of every layout against a length -----------------------------------------

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
    probe = {"name": "options-check", "model": spec["models"][0], "seq": spec["lengths"][0], "tp": 1, "pp": 1, "cp": 1}
    code, _, err = plan_cell(spec, probe, root, bin_dir, 1)
    if code == 2:
        fail(2, f"{path}: qwen3-pretrain refuses the specification's options: {error_reason(err, 'qwen3-pretrain')}")


def plan_cells(spec, cells, root, bin_dir):
    """Every cell's plan, in cell order: {name: (exit code, stdout, refusal reason or None)}."""
    plans = parallel_map(lambda c: plan_cell(spec, c, root, bin_dir, spec["ranks"]), cells)
    return {c["name"]: (code, out, error_reason(err, "qwen3-pretrain") if code == 2 else None)
            for c, (code, out, err) in zip(cells, plans)}


def print_plan_table(spec, cells, plans):
    """--plan: every cell's planned peak per rank and, where the GPU kind has a calibration, its predicted step time,
    tokens/s, MFU and run time (the spec's steps), as a Markdown table (docs/study-plan.md is one)."""
    # A CPU run has no device limit: its peak is the CUDA engine's plan for the cell, for comparison, with no verdict.
    on_cpu = spec["device"] == "cpu"
    memory = "planned peak per rank (GiB)" if on_cpu else f"planned peak per rank (GiB, {spec['device_memory']} device)"
    print(f"| model | length | layout | memory policy | {memory} "
          "| pinned host memory per rank (GiB) | verdict | predicted step (s) | tokens/s | MFU | "
          f"{spec['steps']} steps (min) | not measured on this card |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    total, unpriced, sources = 0.0, 0, {}
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
                row += ("no prediction (unpriced)",) + ("—",) * 4
            else:
                row += ("—",) * 5
        else:
            row = ("—", "—", "—", reason or "?") + ("—",) * 5
        print(f"| {c['model']} | {c['seq']} | {c['layout']} | {' | '.join(row)} |")
    if total > 0:
        print(f"\nPredicted time of every cell that fits, {spec['steps']} steps each: {total / 3600:.2f} h "
              "(steps only: start-up and the dataset are not counted)"
              + (f", leaving out {unpriced} cell{'s' if unpriced != 1 else ''} with no prediction." if unpriced else "."))
    for term, source in sorted(sources.items()):
        print(f"\n- {term}: {source}")
    if unpriced:
        print(f"\n{unpriced} cell{'s' if unpriced != 1 else ''} that fit{'s' if unpriced == 1 else ''} "
              f"{'have' if unpriced != 1 else 'has'} no predicted step: the calibration lacks operations of "
              f"{'them' if unpriced != 1 else 'it'} (`qwen3-pretrain --plan` on such a cell says which, and the "
              "qwen3-calibrate command that measures them).")


def select_cells(cells, patterns):
    """The cells whose names match one of the comma-separated shell patterns (--only), or all; a pattern that matches
    nothing is an error (a typo would otherwise run nothing, silently)."""
    if not patterns:
        return cells
    pats = [p for p in patterns.split(",") if p]
    for p in pats:
        if not any(fnmatch.fnmatchcase(c["name"], p) for c in cells):
            fail(2, f"--only: '{p}' matches no cell (cells are named like {cells[0]['name']})")
    return [c for c in cells if any(fnmatch.fnmatchcase(c["name"], p) for p in pats)]


# ---- which cells are done, queued, refused or to run --------------------------------------------------------------

def tool_json(cmd, codes):
    """A tool's --format json answer as a dict, or None when it ended with an exit code not in codes (e.g. 3: the
    file is not one it reads) or printed no JSON object."""
    r = run_tool(cmd)
    if r.returncode not in codes:
        return None
    try:
        out = json.loads(r.stdout)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


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
    return (f"qwen3-sweep: {spec['name']}: {len(cells)} cells ({len(spec['models'])} models × {len(spec['lengths'])} "
            f"lengths × {len(spec['layouts'])} layouts), {spec['ranks']} ranks each; " + ", ".join(parts))


# ---- DIR/cells.json: the cells and their refusals, for qwen3-report --------------------------------------------------

def predicted_step(plan):
    """The plan's predicted step time in seconds (qwen3-pretrain --plan with a calibration of the GPU kind), or None."""
    p = (plan or {}).get("predicted")
    return p["step_s"] if p and (plan or {}).get("fits") else None


def manifest_text(spec, cells, plans):
    """DIR/cells.json (format qwen3-sweep-cells, version 1; docs/cli.md): one line per cell, so that it diffs well;
    with the planned peak and predicted step time where --plan gives them, and the spec's steps."""
    rows = [json.dumps({**{k: c[k] for k in ("name", "model", "seq", "layout", "tp", "pp", "cp", "dp")},
                        "device": spec["device"], "results": f"results/{c['name']}.h5", "refused": plans[c["name"]][2],
                        "steps": spec["steps"],
                        "planned_peak_bytes": (plans[c["name"]][1] or {}).get("peak_bytes"),
                        "plan_fits": (plans[c["name"]][1] or {}).get("fits"),
                        "predicted_step_s": predicted_step(plans[c["name"]][1])}, ensure_ascii=False)
            for c in cells]
    head = json.dumps({"format": MANIFEST_FORMAT, "version": 1, "sweep": spec["name"]}, ensure_ascii=False)[:-1]
    return head + ', "cells": [\n  ' + ",\n  ".join(rows) + "\n]}\n"


def write_if_changed(path, text):
    """Writes text to path atomically (temporary file, rename) unless the file already holds exactly that."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# ---- datasets: built from what the spec asks, rebuilt when a file lacks it ------------------------------------------

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


def build_datasets(builds):
    for cmd, why in builds:
        print(f"qwen3-sweep: building {cmd[3]} ({why})")
        r = run_tool(cmd)
        if r.returncode != 0:
            raise ToolError(f"building {cmd[3]} failed: {r.stderr.strip()}")


# ---- running here (--local) ----------------------------------------------------------------------------------------

def cores_per_rank(ranks):
    """A fair share of this machine's cores (those this process may use) for each rank."""
    return max(1, len(os.sched_getaffinity(0)) // ranks)


def run_local(spec, todo, root, a):
    """Runs the cells one after another under mpirun: no core binding (mpirun's default would give a rank one core)
    and OpenMP threads = cores per rank, unless OMP_NUM_THREADS is set."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(cores_per_rank(spec["ranks"])))}
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


LOG_END = "qwen3-sweep: cell ended with exit code"  # qwen3-report reads this line (docs/cli.md)


def diverged_step(path, bin_dir):
    """The error message of a diverged run (it names the step), as qwen3-results reads it from the results file."""
    summary = tool_json([tool(bin_dir, "qwen3-results"), path, "--format", "json"], (0, 1)) or {}
    return summary.get("error_message") or "a loss or gradient norm was not finite"


# ---- Slurm ---------------------------------------------------------------------------------------------------------

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


# ---- main ----------------------------------------------------------------------------------------------------------

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
    try:
        return ap.parse_args()
    except SystemExit as e:
        sys.exit(2 if e.code else 0)


def print_dry_run(builds, refused, todo, spec, root, bin_dir):
    for cmd, why in builds:
        print(f"dataset ({why}):", shlex.join(cmd))
    for name, reason in refused:
        print(f"refused {name}: {reason}")
    for c in todo:
        print(f"cell {c['name']}:", shlex.join(pretrain_args(spec, c, root, tool(bin_dir, "qwen3-pretrain"))))


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
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


def sweep(a):
    """Reads the spec, judges every cell, and plans, prints, runs or submits what is left to do."""
    for t in ("qwen3-pretrain", "qwen3-dataset", "qwen3-results"):
        if not os.access(tool(a.bin, t), os.X_OK):
            fail(3, f"'{tool(a.bin, t)}' is missing or not executable (build it, or pass --bin)")
    PRESETS.update(model_vocabularies(a.bin))
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
