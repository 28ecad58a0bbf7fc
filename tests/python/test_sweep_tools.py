"""The pure functions of qwen3-sweep (tools/sweep: sweep_spec, sweep_status, sweep_plan, sweep_run): layout names and
parsing, a specification read from its INI file, the cells and their names, precision as a dimension of the grid,
--only's cell selection, why a dataset cannot serve a sweep's cells, the line that says where the sweep stands, the
--plan table, cells.json, and the Slurm job's script and sbatch command. Bad input ends the tool with exit 2 and one
message naming it."""
import json

import pytest

import qwen3_common
import sweep_commands
import sweep_plan
import sweep_run
import sweep_spec
import sweep_status


def refused(capsys, fn, *args):
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_layouts_take_the_data_parallel_size_the_ranks_leave():
    assert sweep_spec.parse_layouts("s.ini", "T4P2, T2P2C2, T1P1D8", 8, "8 GPUs") == [
        ("T4P2D1", 4, 2, 1, 1), ("T2P2C2D1", 2, 2, 2, 1), ("T1P1D8", 1, 1, 1, 8)]
    assert qwen3_common.layout_name(2, 1, 2, 1) == "T2P1C2D1" and qwen3_common.layout_name(2, 1, 1, 4) == "T2P1D4"


def test_bad_layouts_are_refused_by_name(capsys):
    assert "layout 'X4' is not of the form" in refused(capsys, sweep_spec.parse_layouts, "s.ini", "X4", 8, "8 GPUs")
    assert "tp·pp·cp = 3 to divide the 8 ranks" in refused(capsys, sweep_spec.parse_layouts, "s.ini", "T3P1", 8, "8 GPUs")
    assert "says D4, but 8 ranks" in refused(capsys, sweep_spec.parse_layouts, "s.ini", "T2P2D4", 8, "8 GPUs")


def test_only_selects_cells_and_refuses_a_pattern_that_matches_none(capsys):
    cells = [{"name": n} for n in ("0.6B-L1024-T8P1D1", "0.6B-L4096-T8P1D1", "8B-L1024-T4P2D1")]
    assert [c["name"] for c in sweep_spec.select_cells(cells, "0.6B-*")] == ["0.6B-L1024-T8P1D1", "0.6B-L4096-T8P1D1"]
    assert sweep_spec.select_cells(cells, "") == cells
    assert "'14B-*' matches no cell" in refused(capsys, sweep_spec.select_cells, cells, "8B-*,14B-*")


def test_a_dataset_serves_cells_only_of_its_vocabulary_seed_and_lengths():
    have = (151936, 7, {1024: 100, 4096: 50})
    assert sweep_status.stale_reason(have, 151936, 7, [1024], 100, True) == (None, {1024: 100, 4096: 50})
    assert sweep_status.stale_reason(have, 151936, 7, [4096], 100, True)[0] == "lacks 100 documents of length 4096"
    assert sweep_status.stale_reason(have, 512, 7, [1024], 100, True) == ("built with vocab size 151936, not 512", {})
    assert sweep_status.stale_reason(have, 151936, 8, [1024], 100, True)[0] == "built with seed 7, the spec asks for seed 8"
    assert sweep_status.stale_reason(None, 151936, 7, [1024], 100, False) == ("missing", {})
    assert sweep_status.stale_reason(None, 151936, 7, [1024], 100, True) == ("unreadable", {})


SPEC = """[sweep]
name = t
models = tiny
lengths = 32, 64
layouts = T1P1, T2P1
global-batch = 4
device = cpu
gpus_per_node = 2
save_interval = 5
[slurm]
partition = gpu
"""


# A few of qwen3-pretrain's run options, as its --list-options --format json lists them (the sweep fills RUN_OPTIONS
# from the binary when it starts), in the table's order.
RUN_OPTIONS = {k: {"name": k.replace("_", "-"), "key": k, "type": t, "section": "run"}
               for k, t in (("seq_len", "integer"), ("global_batch", "integer"), ("micro_batch", "integer"),
                            ("steps", "integer"), ("lr", "number"), ("seed", "text"), ("device", "text"),
                            ("tp", "integer"), ("recompute", "text"), ("attention", "text"), ("precision", "text"),
                            ("no_gemm_autotune", "flag"))}
RUN_OPTIONS["precision"]["choices"] = ["bf16", "fp8"]  # a choice option lists its values


@pytest.fixture(autouse=True)
def run_options(monkeypatch):
    for k, v in RUN_OPTIONS.items():
        monkeypatch.setitem(sweep_spec.RUN_OPTIONS, k, v)


def test_run_options_pass_through_in_the_tables_order_and_per_cell_ones_are_not_keys(capsys):
    s = {"no_gemm_autotune": "yes", "attention": "own", "lr": "0.001", "steps": "5"}
    assert sweep_spec.run_args("t.ini", s) == ["--lr", "0.001", "--attention", "own", "--no-gemm-autotune"]
    assert sweep_spec.run_args("t.ini", {"no_gemm_autotune": "off"}) == []
    assert "true or false, got 'maybe'" in refused(capsys, sweep_spec.run_args, "t.ini", {"no_gemm_autotune": "maybe"})
    assert "must not receive" in refused(capsys, sweep_spec.run_args, "t.ini", {"attention": "own;rm"})
    assert "must not receive" in refused(capsys, sweep_spec.run_args, "t.ini", {"attention": "--overwrite"})
    assert "tp" not in sweep_spec.sweep_keys() and "attention" in sweep_spec.sweep_keys()


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.setitem(sweep_spec.PRESETS, "tiny", 512)  # as qwen3-pretrain --list-models would fill it
    (tmp_path / "t.sweep.ini").write_text(SPEC)
    return sweep_spec.read_spec(str(tmp_path / "t.sweep.ini"))


def test_a_specification_reads_into_its_cells_named_as_the_report_reads_them(spec):
    assert (spec["ranks"], spec["global_batch"], spec["steps"], spec["save_interval"]) == (2, 4, 50, 5)
    assert spec["layouts"] == [("T1P1D2", 1, 1, 1, 2), ("T2P1D1", 2, 1, 1, 1)]
    cells = sweep_spec.cells_of(spec)
    assert [c["name"] for c in cells] == ["tiny-L32-T1P1D2", "tiny-L32-T2P1D1", "tiny-L64-T1P1D2", "tiny-L64-T2P1D1"]
    assert all(qwen3_common.cell_of_name(c["name"] + ".h5") == (c["model"], c["seq"], c["layout"], "bf16")
               for c in cells)
    assert spec["precisions"] is None and all(c["precision"] == "bf16" for c in cells)


def test_an_unknown_key_names_the_closest_one(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sweep_spec.PRESETS, "tiny", 512)
    (tmp_path / "t.sweep.ini").write_text(SPEC.replace("global-batch", "global_bach"))
    err = refused(capsys, sweep_spec.read_spec, str(tmp_path / "t.sweep.ini"))
    assert "unknown key 'global_bach' in [sweep] (did you mean 'global_batch'? valid: " in err


def test_the_summary_line_counts_every_state(spec):
    cells = sweep_spec.cells_of(spec)
    state = dict(zip((c["name"] for c in cells), ("complete", "diverged", "refused", "todo")))
    assert sweep_status.summary(spec, cells, state) == (
        "qwen3-sweep: t: 4 cells (1 models × 2 lengths × 2 layouts), 2 ranks each; 2 complete (1 diverged: an "
        "answer, not run again), 1 refused by qwen3-pretrain --plan, 1 to run")


def test_cells_json_is_one_line_per_cell_with_its_plan(spec):
    cells = sweep_spec.cells_of(spec)[:2]
    plans = {cells[0]["name"]: (0, {"peak_bytes": 1024, "fits": True, "predicted": {"step_s": 0.5}}, None),
             cells[1]["name"]: (2, None, "refused")}
    text = sweep_plan.manifest_text(spec, cells, plans)
    assert len(text.splitlines()) == 4
    m = json.loads(text)
    assert (m["format"], m["version"], m["sweep"]) == (qwen3_common.CELLS_FORMAT, qwen3_common.CELLS_VERSION, "t")
    assert m["cells"][0]["results"] == "results/tiny-L32-T1P1D2.h5" and m["cells"][0]["predicted_step_s"] == 0.5
    assert m["cells"][1]["refused"] == "refused" and m["cells"][1]["planned_peak_bytes"] is None


def test_the_slurm_job_requeues_only_a_preempted_cell(spec):
    script = sweep_run.job_script(spec, "/d/jobs/cells-1.tsv")
    assert f'if [ "$rc" -eq {qwen3_common.EXIT_PREEMPTED} ]' in script and "scontrol requeue" in script
    assert "mpirun --bind-to none" in script and "sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" /d/jobs/cells-1.tsv" in script
    cmd = sweep_run.sbatch_command(spec, "/d", 4, "/d/jobs/s.sbatch")
    assert cmd[:3] == ["sbatch", "--parsable", "--array=0-3"] and cmd[-1] == "/d/jobs/s.sbatch"
    assert "--requeue" in cmd and "--partition=gpu" in cmd and not any(a.startswith("--gpus") for a in cmd)


# ------------------------------------------------------------------------------------------------- precision
def read(tmp_path, monkeypatch, text):
    monkeypatch.setitem(sweep_spec.PRESETS, "tiny", 512)
    (tmp_path / "t.sweep.ini").write_text(text)
    return sweep_spec.read_spec(str(tmp_path / "t.sweep.ini"))


def test_precision_multiplies_the_cells_and_only_fp8_names_say_it(tmp_path, monkeypatch):
    spec = read(tmp_path, monkeypatch, SPEC.replace("[slurm]", "precision = bf16, fp8\n[slurm]"))
    assert spec["precisions"] == ["bf16", "fp8"]
    cells = sweep_spec.cells_of(spec)
    assert [c["name"] for c in cells] == [
        "tiny-L32-T1P1D2", "tiny-L32-T1P1D2-fp8", "tiny-L32-T2P1D1", "tiny-L32-T2P1D1-fp8",
        "tiny-L64-T1P1D2", "tiny-L64-T1P1D2-fp8", "tiny-L64-T2P1D1", "tiny-L64-T2P1D1-fp8"]
    assert [c["precision"] for c in cells[:2]] == ["bf16", "fp8"]
    assert all(qwen3_common.cell_of_name(c["name"] + ".h5") == (c["model"], c["seq"], c["layout"], c["precision"])
               for c in cells)
    assert [c["name"] for c in sweep_spec.select_cells(cells, "*-fp8")] == [c["name"] for c in cells[1::2]]
    state = {c["name"]: "todo" for c in cells}
    assert "8 cells (1 models × 2 lengths × 2 layouts × 2 precisions), 2 ranks each" in \
        sweep_status.summary(spec, cells, state)


def test_each_cell_passes_its_precision_only_when_the_spec_names_precision(spec, tmp_path, monkeypatch):
    bf16 = sweep_spec.cells_of(spec)[0]
    assert "--precision" not in sweep_commands.pretrain_args(spec, bf16, "/d", "qwen3-pretrain")
    both = read(tmp_path, monkeypatch, SPEC.replace("[slurm]", "precision = fp8, bf16\n[slurm]"))
    fp8, named_bf16 = sweep_spec.cells_of(both)[:2]
    args = sweep_commands.pretrain_args(both, fp8, "/d", "qwen3-pretrain")
    assert args[args.index("--precision") + 1] == "fp8" and "/d/results/tiny-L32-T1P1D2-fp8.h5" in args
    args = sweep_commands.pretrain_args(both, named_bf16, "/d", "qwen3-pretrain")
    assert args[args.index("--precision") + 1] == "bf16" and "/d/results/tiny-L32-T1P1D2.h5" in args
    assert "--precision" not in both["run_args"]  # a dimension, not a shared run option


def test_bad_precisions_are_refused_naming_the_file_and_key(capsys, tmp_path, monkeypatch):
    def err(value):
        return refused(capsys, read, tmp_path, monkeypatch, SPEC.replace("[slurm]", f"precision = {value}\n[slurm]"))
    path = tmp_path / "t.sweep.ini"
    assert err("bf16, fp9") == f"qwen3-sweep: error: {path}: [sweep] precision 'fp9' is not one of bf16, fp8\n"
    assert err("fp8, fp8") == f"qwen3-sweep: error: {path}: [sweep] precision lists 'fp8' twice\n"
    assert err(",") == f"qwen3-sweep: error: {path}: [sweep] precision is empty\n"
    monkeypatch.setitem(sweep_spec.RUN_OPTIONS["precision"], "choices", ["bf16"])  # the binary's list decides
    assert "precision 'fp8' is not one of bf16\n" in err("fp8")
    monkeypatch.setitem(sweep_spec.RUN_OPTIONS["precision"], "choices", None)  # a binary that lists no values
    assert "does not list --precision's values" in err("fp8")
    monkeypatch.delitem(sweep_spec.RUN_OPTIONS, "precision")  # a binary from before --precision
    assert "precision: this qwen3-pretrain has no --precision option" in err("fp8")


def test_the_plan_table_and_cells_json_carry_precision_when_the_spec_names_it(spec, capsys, tmp_path, monkeypatch):
    both = read(tmp_path, monkeypatch, SPEC.replace("[slurm]", "precision = bf16, fp8\n[slurm]"))
    for s, column in ((spec, False), (both, True)):
        cells = sweep_spec.cells_of(s)[:2]
        plans = {c["name"]: (2, None, "refused") for c in cells}
        sweep_plan.print_plan_table(s, cells, plans)
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("| model | length | layout | precision | memory policy |" if column else
                                   "| model | length | layout | memory policy |")
        assert all(l.count("|") == lines[0].count("|") for l in lines[:4])
        assert lines[2] == ("| tiny | 32 | T1P1D2 | bf16 | — | — | — | refused | — | — | — | — | — |" if column else
                            "| tiny | 32 | T1P1D2 | — | — | — | refused | — | — | — | — | — |")
        rows = json.loads(sweep_plan.manifest_text(s, cells, plans))["cells"]
        assert [r.get("precision") for r in rows] == (["bf16", "fp8"] if column else [None, None])


def test_the_unpriced_cells_calibrate_commands_merge_into_one():
    cmds = ["qwen3-calibrate --models 8B --lengths 8192 --tp 1 --base /c/h200.json --out h200-8B.json",
            "qwen3-calibrate --models 0.6B --lengths 1024 --tp 1 --base /c/h200.json --out h200-0.6B.json",
            "qwen3-calibrate --models 8B --lengths 1024 --tp 1 --base /c/h200.json --out h200-8B.json"]
    assert sweep_plan.merged_calibrate(cmds, "h200-study.json") == (
        "qwen3-calibrate --models 8B,0.6B --lengths 1024,8192 --base /c/h200.json --tp 1 --out h200-study.json")
    # cells at another --tp (or base) need their own run: no single command
    assert sweep_plan.merged_calibrate(cmds + [cmds[0].replace("--tp 1", "--tp 2")], "x.json") is None
    assert sweep_plan.merged_calibrate([], "x.json") is None
