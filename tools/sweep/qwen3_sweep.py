#!/usr/bin/python3
"""qwen3-sweep: expands a sweep specification (model × sequence length × layout, inputs/*.sweep.ini) into cells,
builds the datasets the cells need, and runs them — submitted to Slurm as one array job (default), one after another
on this machine (--local), or only printed (--dry-run). Each cell writes <dir>/results/<cell>.h5; re-running skips the
cells whose results file is complete, so an interrupted sweep resumes. One failing cell never stops the others.
With `save_interval = N` in the spec each cell checkpoints under <dir>/checkpoints/<cell> and continues from there
(--auto-resume): a cell pre-empted by Slurm (status "preempted", exit code 7) is requeued by its array task, and
re-running the sweep runs it again from its checkpoint.

Exit codes: 0 done (or submitted); 1 some cells failed (--local); 2 bad option or specification; 3 missing binary;
4 output folder not writable.
"""
import argparse, signal, configparser, os, re, shlex, shutil, subprocess, sys, time

PRESETS = {"tiny": 512, "0.6B": 151936, "1.7B": 151936, "4B": 151936, "8B": 151936, "14B": 151936, "32B": 151936}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # nothing a shell or Slurm would interpret
LAYOUT = re.compile(r"^T(\d+)P(\d+)(?:C(\d+))?$")
SWEEP_KEYS = {"name", "models", "lengths", "layouts", "global_batch", "micro_batch", "steps", "documents", "device",
              "nodes", "gpus_per_node", "extra_args", "seed", "device_memory", "recompute", "save_interval"}
SLURM_KEYS = {"partition", "time", "account", "launcher"}


def fail(code, message):
    print(f"qwen3-sweep: error: {message}", file=sys.stderr)
    sys.exit(code)


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


def read_spec(path):
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
    for section, keys in (("sweep", SWEEP_KEYS), ("slurm", SLURM_KEYS)):
        if cp.has_section(section):
            for k in cp[section]:
                if k not in keys:
                    fail(2, f"{path}: unknown key '{k}' in [{section}] (valid: {', '.join(sorted(keys))})")
    s = cp["sweep"]
    for k in ("name", "models", "lengths", "layouts"):
        if k not in s:
            fail(2, f"{path}: [sweep] needs '{k}'")
    spec = {"name": s["name"].strip()}
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
    spec["layouts"] = []
    for l in parse_list(s["layouts"], "layouts"):
        m = LAYOUT.match(l)
        if not m:
            fail(2, f"{path}: layout '{l}' is not of the form T<tp>P<pp> or T<tp>P<pp>C<cp> (e.g. T4P2)")
        tp, pp, cp_ = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if min(tp, pp, cp_) < 1 or spec["ranks"] % (tp * pp * cp_) != 0:
            fail(2, f"{path}: layout {l} needs tp·pp·cp = {tp * pp * cp_} to divide the {spec['ranks']} ranks "
                    f"(nodes {spec['nodes']} × gpus_per_node {spec['gpus_per_node']})")
        spec["layouts"].append((l, tp, pp, cp_))
    for k, default in (("global_batch", "32"), ("micro_batch", "1"), ("steps", "50"), ("documents", "100"), ("seed", "1234")):
        spec[k] = positive(s.get(k, default), k)
    spec["device"] = s.get("device", "cuda").strip()
    if spec["device"] not in ("cpu", "cuda"):
        fail(2, f"{path}: device must be cpu or cuda, got '{spec['device']}'")
    spec["recompute"] = s.get("recompute", "none").strip()
    if spec["recompute"] not in ("none", "selective", "full", "auto"):
        fail(2, f"{path}: recompute '{spec['recompute']}' is not one of none, selective, full, auto")
    interval = s.get("save_interval", "0").strip()
    if not interval.isdigit():
        fail(2, f"{path}: save_interval must be 0 (no checkpoints) or a number of steps, got '{interval}'")
    spec["save_interval"] = int(interval)
    spec["device_memory"] = s.get("device_memory", "80GB").strip()
    if not re.match(r"^[0-9.eE+]+[A-Za-z]*$", spec["device_memory"]):
        fail(2, f"{path}: device_memory '{spec['device_memory']}' is not a memory size (e.g. 141GB)")
    spec["extra_args"] = shlex.split(s.get("extra_args", ""))
    for a in spec["extra_args"]:
        if not re.match(r"^[A-Za-z0-9._=/:-]+$", a):
            fail(2, f"{path}: extra_args item '{a}' holds characters a job script must not receive")
    sl = cp["slurm"] if cp.has_section("slurm") else {}
    spec["slurm"] = {k: sl[k].strip() for k in sl}
    for k, v in spec["slurm"].items():
        if k != "launcher" and not re.match(r"^[A-Za-z0-9._:-]+$", v):
            fail(2, f"{path}: [slurm] {k} = '{v}' holds characters a job script must not receive")
    if spec["slurm"].get("launcher", "mpirun") not in ("mpirun", "srun"):
        fail(2, f"{path}: [slurm] launcher must be mpirun or srun")
    return spec


def cells_of(spec):
    out = []
    for m in spec["models"]:
        for l in spec["lengths"]:
            for (name, tp, pp, cp_) in spec["layouts"]:
                out.append({"name": f"{m}-L{l}-{name}", "model": m, "seq": l, "tp": tp, "pp": pp, "cp": cp_})
    return out


def results_complete(path, bin_dir):
    # The final name appears only once the run has ended (docs/results.md); a pre-empted cell has still to finish.
    # qwen3-results reads the status (exit 0 only for "ok"): whatever it cannot read as ended counts as not complete.
    if not os.path.isfile(path):
        return False
    r = subprocess.run([os.path.join(bin_dir, "qwen3-results"), path], capture_output=True, text=True)
    status = re.search(r"^\s*status\s+(\w+)", r.stdout, re.M)
    return status is not None and status.group(1) != "preempted"


def dataset_path(root, vocab):
    return os.path.join(root, "data", f"data-v{vocab}.h5")


def pretrain_args(spec, cell, root, binary):
    return [binary, "--model", cell["model"], "--data", dataset_path(root, PRESETS[cell["model"]]),
            "--seq-len", str(cell["seq"]), "--global-batch", str(spec["global_batch"]),
            "--micro-batch", str(spec["micro_batch"]), "--steps", str(spec["steps"]), "--seed", str(spec["seed"]),
            "--tp", str(cell["tp"]), "--pp", str(cell["pp"]), "--cp", str(cell["cp"]), "--device", spec["device"],
            "--recompute", spec["recompute"], "--out", os.path.join(root, "results", cell["name"] + ".h5"), "--overwrite"] + \
        (["--save", os.path.join(root, "checkpoints", cell["name"]), "--save-interval", str(spec["save_interval"]),
          "--save-keep", "1", "--auto-resume"] if spec["save_interval"] > 0 else []) + spec["extra_args"]


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    ap = argparse.ArgumentParser(prog="qwen3-sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="sweep specification (INI: [sweep], optional [slurm]; see inputs/)")
    ap.add_argument("--dir", required=True, help="sweep folder: data/, results/, logs/, jobs/ go under it")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run the cells one after another on this machine")
    mode.add_argument("--dry-run", action="store_true", help="print the cells and commands, run nothing")
    mode.add_argument("--plan", action="store_true",
                      help="print every cell's memory plan per rank (qwen3-pretrain --plan) as a Markdown table; run nothing")
    ap.add_argument("--bin", default=os.path.dirname(os.path.abspath(__file__)), help="folder of the qwen3 binaries")
    ap.add_argument("--mpirun", default="mpirun", help="MPI launcher for --local (default: mpirun)")
    try:
        a = ap.parse_args()
    except SystemExit as e:
        sys.exit(2 if e.code else 0)
    spec = read_spec(a.spec)
    root = os.path.abspath(a.dir)
    for tool in ("qwen3-pretrain", "qwen3-dataset", "qwen3-results"):
        if not os.access(os.path.join(a.bin, tool), os.X_OK):
            fail(3, f"'{os.path.join(a.bin, tool)}' is missing or not executable (build it, or pass --bin)")
    cells = cells_of(spec)
    todo = [c for c in cells if not results_complete(os.path.join(root, "results", c["name"] + ".h5"), a.bin)]
    print(f"qwen3-sweep: {spec['name']}: {len(cells)} cells ({len(spec['models'])} models × {len(spec['lengths'])} "
          f"lengths × {len(spec['layouts'])} layouts), {spec['ranks']} ranks each; {len(cells) - len(todo)} complete, "
          f"{len(todo)} to run")
    vocabs = sorted({PRESETS[c["model"]] for c in todo})
    data_cmds = [[os.path.join(a.bin, "qwen3-dataset"), "synthetic", "--out", dataset_path(root, v), "--vocab-size", str(v),
                  "--lengths", ",".join(str(l) for l in spec["lengths"]), "--documents",
                  str(max(spec["documents"], spec["global_batch"])), "--seed", str(spec["seed"])] for v in vocabs]
    if a.plan:
        rows = []
        for c in cells:
            cmd = [os.path.join(a.bin, "qwen3-pretrain"), "--plan", "--model", c["model"], "--seq-len", str(c["seq"]),
                   "--micro-batch", str(spec["micro_batch"]), "--global-batch", str(spec["global_batch"]), "--tp",
                   str(c["tp"]), "--pp", str(c["pp"]), "--cp", str(c["cp"]), "--world-size", str(spec["ranks"]), "--device-memory", spec["device_memory"],
                   "--recompute", spec["recompute"]]
            r = subprocess.run(cmd, capture_output=True, text=True)
            peak = re.search(r"peak per rank\s+([0-9.]+) GiB", r.stdout)
            policy = re.search(r"recomputation ([^;]+);", r.stdout)
            if r.returncode in (0, 3) and peak:
                rows.append((c, policy.group(1) if policy else "?", f"{float(peak.group(1)):.1f}",
                             "✔ fits" if r.returncode == 0 else "✖ does not fit"))
            else:
                why = (r.stderr.strip().splitlines() or ["?"])[-1].replace("qwen3-pretrain: error: ", "")
                rows.append((c, "—", "—", why))
        print(f"| model | length | layout | recomputation | planned peak per rank (GiB, {spec['device_memory']} device) "
              "| verdict |")
        print("|---|---|---|---|---|---|")
        for c, policy, peak, verdict in rows:
            print(f"| {c['model']} | {c['seq']} | T{c['tp']}P{c['pp']}{'C' + str(c['cp']) if c['cp'] > 1 else ''} | "
                  f"{policy} | {peak} | {verdict} |")
        return 0
    if a.dry_run:
        for cmd in data_cmds:
            print("dataset:", shlex.join(cmd))
        for c in todo:
            print(f"cell {c['name']}:", shlex.join(pretrain_args(spec, c, root, os.path.join(a.bin, "qwen3-pretrain"))))
        return 0
    try:
        for sub in ("data", "results", "logs", "jobs"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
    except OSError as e:
        fail(4, f"cannot create the sweep folder '{root}': {e.strerror}")
    for cmd, v in zip(data_cmds, vocabs):
        if not os.path.isfile(dataset_path(root, v)):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                fail(3, f"building {dataset_path(root, v)} failed: {r.stderr.strip()}")
    if a.local:
        failed = []
        for i, c in enumerate(todo):
            log = os.path.join(root, "logs", c["name"] + ".log")
            cmd = [a.mpirun, "--oversubscribe", "-x", "NCCL_NVLS_ENABLE=0", "-x", "OMP_NUM_THREADS", "-np",
                   str(spec["ranks"])] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + \
                  pretrain_args(spec, c, root, os.path.join(a.bin, "qwen3-pretrain"))
            with open(log, "w") as f:
                code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                      env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}).returncode
            print(f"[{i + 1}/{len(todo)}] {c['name']}: {'ok' if code == 0 else f'failed (exit {code}, {log})'}")
            if code != 0:
                failed.append(c["name"])
        print(f"qwen3-sweep: {len(todo) - len(failed)} of {len(todo)} cells ran to the end; results in "
              f"{os.path.join(root, 'results')}")
        return 1 if failed else 0
    # Slurm: one array job, task i runs line i of this submission's cells table; the job script takes no name from the spec unquoted.
    if shutil.which("sbatch") is None:
        fail(3, "sbatch is not on PATH (use --local to run here, or --dry-run)")
    # One task table and script per submission: a requeued task of an earlier array still reads its own table.
    stamp = f"{os.getpid()}-{int(time.time())}"
    table = os.path.join(root, "jobs", f"cells-{stamp}.tsv")
    with open(table, "w") as f:
        for c in todo:
            f.write(shlex.join(pretrain_args(spec, c, root, os.path.join(a.bin, "qwen3-pretrain"))) + "\n")
    launcher = spec["slurm"].get("launcher", "mpirun")
    run = ("srun --mpi=pmix" if launcher == "srun" else "mpirun -x NCCL_NVLS_ENABLE" +
           (" --allow-run-as-root" if os.geteuid() == 0 else ""))
    script = os.path.join(root, "jobs", f"sweep-{stamp}.sbatch")
    with open(script, "w") as f:
        f.write(f"#!/usr/bin/env bash\n# Written by qwen3-sweep: task i runs line i of {os.path.basename(table)} (one cell).\n")
        f.write("set -uo pipefail\nexport NCCL_NVLS_ENABLE=\"${NCCL_NVLS_ENABLE:-0}\"\n")
        f.write(f"line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {shlex.quote(table)})\n")
        # The launcher runs in the background so that this shell can pass on Slurm's warning (sbatch --signal=B:USR1,
        # before the time limit) and a SIGTERM as SIGUSR1, which the ranks take as "save and stop" (--save) and which
        # mpirun forwards — a SIGTERM to mpirun itself would kill them.
        f.write(f"eval \"{run} $line\" &\npid=$!\n")
        f.write("trap 'kill -USR1 \"$pid\" 2>/dev/null' USR1 TERM\n")
        f.write("while :; do wait \"$pid\"; rc=$?; kill -0 \"$pid\" 2>/dev/null || break; done\n")
        # A cell stopped after saving a checkpoint (exit code 7) goes back in the queue; --auto-resume continues it.
        f.write("if [ \"$rc\" -eq 7 ] && command -v scontrol >/dev/null; then\n"
                "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\" || true\nfi\nexit \"$rc\"\n")
    sbatch = ["sbatch", "--parsable", f"--array=0-{len(todo) - 1}", f"--job-name={spec['name']}",
              f"--nodes={spec['nodes']}", f"--ntasks-per-node={spec['gpus_per_node']}",
              f"--output={os.path.join(root, 'logs', '%x-%A_%a.out')}"] + \
        (["--requeue", "--signal=B:USR1@300"] if spec["save_interval"] > 0 else [])
    if spec["device"] == "cuda":
        sbatch.append(f"--gpus-per-node={spec['gpus_per_node']}")
    for k in ("partition", "time", "account"):
        if k in spec["slurm"]:
            sbatch.append(f"--{k}={spec['slurm'][k]}")
    if not todo:
        print("qwen3-sweep: nothing to submit")
        return 0
    r = subprocess.run(sbatch + [script], capture_output=True, text=True)
    if r.returncode != 0:
        fail(3, f"sbatch refused the array job: {r.stderr.strip()}")
    print(f"qwen3-sweep: submitted array job {r.stdout.strip()} ({len(todo)} tasks); logs in {os.path.join(root, 'logs')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
