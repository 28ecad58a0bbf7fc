"""qwen3-sweep's calls of the qwen3 binaries: where a sweep folder keeps a vocabulary's dataset and a cell's results
file, the qwen3-pretrain command line of a cell (what --plan judges, what --local runs, what a Slurm task runs), and
running a tool — with its output captured, several at once on a few threads, its JSON answer read and its error
message's last line taken — and writing a file of the sweep's atomically, only when it changes. A tool that cannot
run or gives no answer raises ToolError, which the command line turns into exit code 3. Standard library only."""
import concurrent.futures
import json
import os
import subprocess

from sweep_spec import PRESETS, precision_args


def tool(bin_dir, name):
    """A qwen3 binary of the --bin folder."""
    return os.path.join(bin_dir, name)


def dataset_path(root, vocab):
    """The sweep's dataset of one vocabulary size: DIR/data/data-v<vocab>.h5."""
    return os.path.join(root, "data", f"data-v{vocab}.h5")


def results_path(root, cell):
    """A cell's results file: DIR/results/<cell>.h5."""
    return os.path.join(root, "results", cell["name"] + ".h5")


def pretrain_args(spec, cell, root, binary):
    """The cell's qwen3-pretrain command line, with its --precision when the spec names precision; with the spec's
    save_interval, checkpoints that it resumes from."""
    return [binary, "--model", cell["model"], "--data", dataset_path(root, PRESETS[cell["model"]]),
            "--seq-len", str(cell["seq"]), "--global-batch", str(spec["global_batch"]),
            "--micro-batch", str(spec["micro_batch"]), "--steps", str(spec["steps"]), "--seed", str(spec["seed"]),
            "--tp", str(cell["tp"]), "--pp", str(cell["pp"]), "--cp", str(cell["cp"]), "--device", spec["device"],
            "--recompute", spec["recompute"]] + precision_args(spec, cell) + \
        ["--out", results_path(root, cell), "--overwrite"] + \
        (["--save", os.path.join(root, "checkpoints", cell["name"]), "--save-interval", str(spec["save_interval"]),
          "--save-keep", "1", "--auto-resume"] if spec["save_interval"] > 0 else []) + spec["run_args"] + \
        spec["extra_args"]


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
