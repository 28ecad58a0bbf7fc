"""qwen3-sweep's specification (inputs/*.sweep.ini): its [sweep] and [slurm] sections read with every key, value and
layout checked — an unknown key's message names the closest valid one, a layout must divide the ranks and gives its
data-parallel size, and nothing a job script must not receive gets through — then expanded into its cells (model ×
length × layout × precision, each named <model>-L<length>-<layout>, with -<precision> for a precision other than bf16)
and narrowed by --only. A bad specification ends the tool with exit code 2 and one message naming what is wrong.
Standard library only."""
import configparser
import difflib
import fnmatch
import re
import shlex

from qwen3_common import DEFAULT_PRECISION, cell_name, failer, layout_name

# Each model preset's vocabulary size (one dataset per vocabulary), filled from qwen3-pretrain --list-models --format
# json when the sweep starts (model_vocabularies): the binary is the one source of its presets.
PRESETS = {}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # nothing a shell or Slurm would interpret
LAYOUT = re.compile(r"^T(\d+)P(\d+)(?:C(\d+))?(?:D(\d+))?$")
# The sweep's own keys: the grid, the node, the datasets, checkpoints and requeueing, the plan's machine.
OWN_KEYS = {"name", "models", "lengths", "layouts", "precision", "documents", "nodes", "gpus_per_node",
            "extra_args", "save_interval", "device_memory", "host_memory"}
# Every other [sweep] key is a qwen3-pretrain run option, as its option table lists them (qwen3-pretrain
# --list-options --format json, section "run"; filled when the sweep starts by run_options): {key: option}. The ones
# each cell sets for itself are not keys of the spec; precision is one, but the spec names it as its own key, a list
# like lengths (a dimension of the grid).
RUN_OPTIONS = {}
PER_CELL = {"model", "model_config", "seq_len", "tp", "pp", "cp", "pp_layers", "precision", "data", "out",
            "overwrite", "save", "save_keep", "auto_resume", "resume", "init_from_hf"}
# Run options the sweep gives a default of its own (the study's), always on the cell's command line.
SWEEP_DEFAULTS = {"global_batch": "32", "micro_batch": "1", "steps": "50", "seed": "1234", "device": "cuda",
                  "recompute": "none"}


def sweep_keys():
    """The keys a [sweep] section may set: the sweep's own and qwen3-pretrain's run options but the per-cell ones."""
    return OWN_KEYS | {k for k in RUN_OPTIONS if k not in PER_CELL}
SLURM_KEYS = {"partition", "time", "account", "launcher", "cpus_per_task"}

fail = failer("qwen3-sweep")


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
    return (section_keys(path, "sweep", cp.items("sweep"), sweep_keys()),
            section_keys(path, "slurm", cp.items("slurm"), SLURM_KEYS) if cp.has_section("slurm") else {})


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


def run_args(path, s):
    """The spec's other run options as qwen3-pretrain arguments, in the option table's order: a flag's key takes true
    or false (--name when true), any other key its value (--name VALUE), checked for characters a job script must not
    receive; qwen3-pretrain --plan judges the values (check_spec_options)."""
    args = []
    for key, option in RUN_OPTIONS.items():
        if key not in s or key in PER_CELL or key in SWEEP_DEFAULTS or key in OWN_KEYS:
            continue
        value = s[key]
        if option["type"] == "flag":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                fail(2, f"{path}: {key} is a flag of qwen3-pretrain (--{option['name']}): true or false, got '{value}'")
            args += [f"--{option['name']}"] if value.lower() in ("true", "yes", "1", "on") else []
        elif not re.match(r"^[A-Za-z0-9._=/:,+][A-Za-z0-9._=/:,+-]*$", value):  # no option smuggled in as a value
            fail(2, f"{path}: {key} = '{value}' holds characters a job script must not receive")
        else:
            args += [f"--{option['name']}", value]
    return args


def parse_precisions(path, s):
    """The spec's precisions (`precision = bf16, fp8`, a dimension of the grid like lengths), each one of
    qwen3-pretrain's --precision choices; None when the spec does not name the key: its cells pass no --precision and
    run in qwen3-pretrain's default, bf16, with the command lines they always had."""
    if "precision" not in s:
        return None
    option = RUN_OPTIONS.get("precision")
    if option is None:
        fail(2, f"{path}: [sweep] precision: this qwen3-pretrain has no --precision option (rebuild it, or pass --bin)")
    choices = option.get("choices")
    if not choices:
        fail(2, f"{path}: [sweep] precision: this qwen3-pretrain does not list --precision's values (rebuild it)")
    out = parse_list(s["precision"], f"{path}: [sweep] precision")
    for p in out:
        if p not in choices:
            fail(2, f"{path}: [sweep] precision '{p}' is not one of {', '.join(choices)}")
        if out.count(p) > 1:
            fail(2, f"{path}: [sweep] precision lists '{p}' twice")
    return out


def precision_args(spec, cell):
    """A cell's --precision, when its spec names precision (a spec that does not passes none: bf16)."""
    return ["--precision", cell["precision"]] if spec.get("precisions") else []


def parse_options(path, s, spec):
    """The run options every cell shares; device_memory is only checked for safe characters here, qwen3-pretrain
    --plan judges its meaning (a size or a GPU name)."""
    for k in ("global_batch", "micro_batch", "steps", "seed"):
        spec[k] = positive(s.get(k, SWEEP_DEFAULTS[k]), k)
    spec["documents"] = positive(s.get("documents", "100"), "documents")
    spec["device"] = s.get("device", SWEEP_DEFAULTS["device"])
    if spec["device"] not in ("cpu", "cuda"):
        fail(2, f"{path}: device must be cpu or cuda, got '{spec['device']}'")
    spec["recompute"] = s.get("recompute", SWEEP_DEFAULTS["recompute"])
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
    spec["run_args"] = run_args(path, s)
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
    spec["precisions"] = parse_precisions(path, s)
    parse_options(path, s, spec)
    spec["slurm"] = parse_slurm(path, sl)
    return spec


def cells_of(spec):
    """Every cell of the spec: each model, at each length, in each layout, in each precision (bf16 alone when the spec
    names none), in that order."""
    return [{"name": cell_name(m, l, name, p), "model": m, "seq": l, "layout": name, "tp": tp, "pp": pp, "cp": cp,
             "dp": dp, "precision": p}
            for m in spec["models"] for l in spec["lengths"] for (name, tp, pp, cp, dp) in spec["layouts"]
            for p in spec.get("precisions") or [DEFAULT_PRECISION]]


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
