"""The pure functions of qwen3-report (tools/report: report_results, report_manifest, report_tables, report_plots) and
of the module the Python tools share (tools/common/qwen3_common.py): layout and cell names, the one-line error,
results files read from small synthetic HDF5 files written here, a sweep's cells.json as qwen3-sweep writes it and the
rows of the cells without results, the newest result of a cell, the tables' numbers and Markdown, and how runs in more
than one precision are told apart in the tables and figures."""
import argparse
import json
import math
import os

import h5py
import numpy as np
import pytest

import qwen3_common as common
import report_manifest
import report_plots
import report_results
import report_tables
import study_figures
import sweep_plan
import sweep_spec

NAN = math.nan


def exits(capsys, code, fn, *args):
    """fn(*args) ends the tool with `code`; its stderr."""
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code == code
    return capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- qwen3_common
def test_layout_and_cell_names_are_one_spelling_read_back():
    assert common.layout_name(4, 2, 1, 1) == "T4P2D1" and common.layout_name(2, 1, 2, 2) == "T2P1C2D2"
    name = common.cell_name("0.6B", 4096, "T2P1C2D2")
    assert name == "0.6B-L4096-T2P1C2D2"
    assert common.cell_of_name(name + ".h5") == ("0.6B", 4096, "T2P1C2D2", "bf16")
    assert common.cell_of_name(name + ".h5.partial") == ("0.6B", 4096, "T2P1C2D2", "bf16")
    assert common.cell_of_name("my-run.h5") is None and common.cell_of_name(name + ".csv") is None
    assert common.cell_name("0.6B", 4096, "T2P1C2D2", "bf16") == name  # bf16 names stay as they always were
    fp8 = common.cell_name("0.6B-base", 4096, "T1P1D1", "fp8")
    assert fp8 == "0.6B-base-L4096-T1P1D1-fp8"
    assert common.cell_of_name(fp8 + ".h5.partial") == ("0.6B-base", 4096, "T1P1D1", "fp8")


def test_strings_bytes_and_the_error_line(capsys):
    assert common.text(b"h200") == "h200" and common.text("h200") == "h200" and common.text(3) == "3"
    assert common.gib(3 * 2**29) == 1.5
    fail = common.failer("qwen3-test")
    assert exits(capsys, 4, fail, 4, "cannot write") == "qwen3-test: error: cannot write\n"


def test_a_refused_command_line_is_a_usage_error(monkeypatch, capsys):
    ap = argparse.ArgumentParser(prog="t")
    ap.add_argument("--n", type=int)
    monkeypatch.setattr("sys.argv", ["t", "--n", "x"])
    assert "invalid int value" in exits(capsys, common.EXIT_USAGE, common.parse_or_usage, ap)
    monkeypatch.setattr("sys.argv", ["t", "--help"])
    exits(capsys, 0, common.parse_or_usage, ap)
    monkeypatch.setattr("sys.argv", ["t", "--n", "3"])
    assert common.parse_or_usage(ap).n == 3


# ------------------------------------------------------------------------------------------------- results files
def results_file(path, status="ok", config=True, version=1, steps=(2.0, 1.0, 1.5), peaks=(2**30, 2**31), cfg=(),
                 **attrs):
    """A small qwen3-pretrain results file: tiny, 32 tokens, global batch 4, two ranks on the CPU (cfg: more /config
    attributes)."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "qwen3-pretrain-results", "format_version": version, "status": status,
                        "world_size": 2, "end_time_utc": "2026-12-06T20:00:00Z", "git_commit": "0123456789abcdef",
                        "hostnames": [b"a", b"b"], **attrs})
        if config:
            f.create_group("config").attrs.update({"model": "tiny", "seq_len": "32", "global_batch": "4",
                                                   "tp": "1", "pp": "1", "cp": "1", "device": "cpu", **dict(cfg)})
        f["steps/step_time_s"] = np.array(steps)
        f["memory/peak_bytes"] = np.array(peaks, dtype=np.int64)
    return str(path)


def test_a_results_file_reads_as_the_report_shows_it(tmp_path):
    r = report_results.read_run(results_file(tmp_path / "run.h5"), {})
    assert (r["model"], r["seq"], r["layout"], r["world"], r["device"]) == ("tiny", 32, "T1P1D2", 2, "cpu")
    assert (r["status"], r["steps"], r["step_time_s"]) == ("ok", 3, 1.25)  # the first step (warm-up) left out
    assert r["tokens_per_s"] == 4 * 32 / 1.25
    assert r["peaks_gib"] == [1.0, 2.0] and r["hosts"] == ["a", "b"] and r["time"] == "2026-12-06T20:00:00Z"
    assert math.isnan(r["planned_gib"]) and math.isnan(r["capacity_gib"]) and not r["on_gpu"]
    assert r["precision"] == "bf16"  # a file from before --precision records none
    fp8 = results_file(tmp_path / "fp8.h5", cfg={"precision": "fp8"})
    assert report_results.read_run(fp8, {})["precision"] == "fp8"


def test_other_hdf5_files_are_skipped_and_bad_ones_say_why(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.attrs["format"] = "qwen3-dataset"
    assert report_results.read_run(str(tmp_path / "data.h5"), {}) is None
    with pytest.raises(report_results.Unreadable, match="format_version 2; this report reads version 1"):
        report_results.read_run(results_file(tmp_path / "v2.h5", version=2), {})
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(report_results.Unreadable, match="not a readable HDF5 file"):
        report_results.read_run(str(tmp_path / "junk.h5"), {})
    with pytest.raises(report_results.Unreadable, match="no /config group.*status error: no GPU"):
        report_results.read_run(results_file(tmp_path / "x.h5", "error", config=False, error_message="no GPU"), {})


def test_a_file_without_config_is_placed_by_its_cell_name(tmp_path):
    path = results_file(tmp_path / "tiny-L64-T2P1D1.h5", "error", config=False, error_message="no GPU")
    r = report_results.read_run(path, {})
    assert (r["model"], r["seq"], r["layout"], r["device"], r["precision"]) == ("tiny", 64, "T2P1D1", "", "bf16")
    assert r["reason"] == "no GPU [no /config in the file: the cell is named by the sweep]"
    path = results_file(tmp_path / "tiny-L64-T2P1D1-fp8.h5", "error", config=False, error_message="no GPU")
    assert report_results.read_run(path, {})["precision"] == "fp8"


def test_an_out_of_memory_run_names_what_it_was_allocating(tmp_path):
    path = results_file(tmp_path / "oom.h5", "oom", oom_category="activations", oom_requested_bytes=2**30,
                        oom_in_use_bytes=-1, error_message="rank 1 failed")
    assert report_results.read_run(path, {})["reason"] == "out of memory allocating activations (1.00 GiB)"


def test_load_runs_keeps_going_past_files_it_cannot_read(tmp_path):
    good = results_file(tmp_path / "good.h5")
    (tmp_path / "tiny-L32-T1P1D2.h5.partial").write_bytes(b"half written")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    files = report_results.find_files([str(tmp_path)])
    assert [os.path.basename(f) for f in files] == ["good.h5", "junk.h5", "tiny-L32-T1P1D2.h5.partial"]
    runs, unreadable = report_results.load_runs(files, {})
    assert [r["file"] for r in runs] == [good, str(tmp_path / "tiny-L32-T1P1D2.h5.partial")]
    assert runs[1]["status"] == "incomplete" and runs[1]["layout"] == "T1P1D2"
    assert [os.path.basename(p) for p, _ in unreadable] == ["junk.h5"]


def test_a_missing_path_is_a_usage_error(capsys, tmp_path):
    err = exits(capsys, 2, report_results.find_files, [str(tmp_path / "none")])
    assert err == f"qwen3-report: error: '{tmp_path / 'none'}' does not exist\n"


def run(model="tiny", layout="T1P1D2", seq=32, status="ok", **extra):
    r = report_manifest.placeholder(model, layout, seq, status, "")
    r.update({"time": "", "mtime": 0.0, **extra})
    return r


def test_the_newest_result_of_a_cell_decides_and_devices_are_filled_in():
    old, new, other = run(time="2026-01-01", device="cpu"), run(time="2026-02-01", device="cpu"), run(seq=64)
    kept, aside = report_results.newest_per_cell([new, old, other])
    assert new in kept and other in kept and aside == [old]
    report_results.fill_devices(kept)
    assert other["device"] == "cpu" and not other["on_gpu"]
    both = [run(device="cpu"), run(device="cuda")]
    report_results.label_devices(both)
    assert [r["model"] for r in both] == ["tiny (cpu)", "tiny (cuda)"]
    bf16, fp8 = run(device="cpu"), run(device="cpu", precision="fp8")  # one cell in two precisions: two cells
    assert report_results.newest_per_cell([bf16, fp8]) == ([bf16, fp8], [])


# ------------------------------------------------------------------------------------------------- sweep manifest
def sweep_folder(tmp_path):
    """DIR/cells.json as qwen3-sweep writes it: 32 tokens ran, 64 refused, 128 planned (fits, 90 s a step)."""
    spec = {"name": "t", "models": ["tiny"], "lengths": [32, 64, 128], "layouts": [("T1P1D2", 1, 1, 1, 2)],
            "device": "cpu", "steps": 3}
    cells = sweep_spec.cells_of(spec)
    plans = {cells[0]["name"]: (0, {"peak_bytes": 2**30, "fits": True}, None),
             cells[1]["name"]: (2, None, "--seq-len 64 refused"),
             cells[2]["name"]: (0, {"peak_bytes": 2**31, "fits": True, "predicted": {"step_s": 90.0}}, None)}
    (tmp_path / "cells.json").write_text(sweep_plan.manifest_text(spec, cells, plans))
    return str(tmp_path / "cells.json")


def test_the_sweeps_manifest_reads_back_one_row_per_cell_without_results(tmp_path):
    path = sweep_folder(tmp_path)
    manifests = report_manifest.find_manifests([str(tmp_path)])
    assert [(p, name, len(cells)) for p, name, cells in manifests] == [(path, "t", 3)]
    known = report_manifest.manifest_results(manifests)
    assert known[os.path.realpath(tmp_path / "results" / "tiny-L32-T1P1D2.h5")]["seq"] == 32
    rows = report_manifest.manifest_placeholders(manifests, [run(seq=32)])
    assert [(r["seq"], r["status"]) for r in rows] == [(64, "refused"), (128, "not run")]
    assert rows[0]["reason"] == "--seq-len 64 refused"
    assert rows[1]["reason"] == "no results file yet; 3 steps predicted to take 4.5 min" and rows[1]["planned_gib"] == 2


def test_a_cell_whose_log_says_it_ended_is_an_error_with_the_logs_line(tmp_path):
    path = sweep_folder(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "tiny-L128-T1P1D2.log").write_text(
        f"starting\nqwen3-pretrain: error: --device cuda: no usable GPU\n{common.LOG_END} 2\n")
    rows = report_manifest.manifest_placeholders([(path, "t", report_manifest.read_manifest(path)[1])], [run()])
    assert rows[-1]["status"] == "error"
    assert rows[-1]["reason"] == ("no results file; exit code 2; logs/tiny-L128-T1P1D2.log: "
                                  "qwen3-pretrain: error: --device cuda: no usable GPU")


def test_a_manifest_of_another_format_is_an_input_error(capsys, tmp_path):
    (tmp_path / "cells.json").write_text(json.dumps({"format": "qwen3-sweep-cells", "version": 9}))
    err = exits(capsys, 3, report_manifest.read_manifest, str(tmp_path / "cells.json"))
    assert "is not a qwen3-sweep-cells version 1 manifest" in err
    assert report_manifest.manifest_layout({"tp": 2, "pp": 1, "cp": 2, "dp": 1}) == "T2P1C2D1"
    assert report_manifest.manifest_layout({"layout": "T8P1D1"}) == "T8P1D1"


# ------------------------------------------------------------------------------------------------- tables
def test_numbers_words_and_orderings():
    assert report_tables.fmt(12345.678) == "12,345.7" and report_tables.fmt(NAN) == "—"
    assert report_tables.fmt(0.5, 3) == "0.500"
    assert report_tables.plural(1, "run") == "1 run" and report_tables.plural(0, "run") == "0 runs"
    assert sorted(["T16P1D1", "T2P1D8", "T4P2D1"], key=report_tables.natural) == ["T2P1D8", "T4P2D1", "T16P1D1"]


def test_a_runs_marks_and_statistics():
    r = run(peaks_gib=[1.0, 3.0], hosts=["a"], step_time_s=2.0, predicted_step_s=2.5, planned_gib=2.5)
    assert report_tables.peak_stats(r) == (2.0, 1.0, 1.0, 3.0)
    assert all(math.isnan(v) for v in report_tables.peak_stats(run()))
    assert report_tables.host_of(r, 0) == "a" and report_tables.host_of(r, 1) == ""
    assert report_tables.prediction_error(r) == pytest.approx(25.0)
    assert math.isnan(report_tables.prediction_error(run()))
    assert report_tables.cell_mark(r) == "✔ (2.0 GiB, plan 2.5)"
    assert report_tables.cell_mark(run(status="diverged", diverged_at_step=7)) == "✖ diverged at step 7"
    assert report_tables.cell_mark(run(status="not run", predicted_step_s=12.0)) == \
        "not run (predicted 12.0 s per step)"
    assert report_tables.cell_mark(run(status="not run", plan_fits=False, planned_gib=99.0)) == \
        "not run (plan 99.0 GiB with the runtime reserve: does not fit)"


def test_the_feasibility_table_has_a_row_per_model_and_the_reasons_below():
    rows = [run(seq=32), run(seq=64, status="oom", reason="out of memory"), run(model="other", layout="T2P1D1")]
    cells = {(r["model"], r["layout"], r["seq"]): r for r in rows}
    md = report_tables.md_feasibility(rows, cells, ["other", "tiny"], ["T1P1D2", "T2P1D1"], [32, 64])
    assert "| tiny | ✔ | ✖ oom |" in md and "| other | ✔ |  |" in md
    assert md[md.index("### T1P1D2") + 3:md.index("### T1P1D2") + 5] == ["|---|---|---|", "| tiny | ✔ | ✖ oom |"]
    assert md[-2] == "- tiny T1P1D2 64: oom — out of memory"


def test_linear_fits_need_three_lengths_and_say_which_have_fewer():
    runs = [run(seq=s, step_time_s=0.5 + 0.01 * s) for s in (32, 64, 128)] + [run(layout="T2P1D1", step_time_s=1.0)]
    fits, too_few = report_tables.linear_fits(runs, ["tiny"], ["T1P1D2", "T2P1D1"])
    assert len(fits) == 1 and fits[0]["points"] == 3
    assert fits[0]["slope_s_per_token"] == pytest.approx(0.01) and fits[0]["intercept_s"] == pytest.approx(0.5)
    assert fits[0]["r2"] == pytest.approx(1.0)
    assert too_few == [("tiny", "T2P1D1", 1)]
    md = report_tables.md_regression(fits, too_few)
    assert md[-2] == "Too few finished lengths for a fit (three are needed): tiny T2P1D1 (1 finished)."
    assert report_tables.md_regression([], too_few)[2].startswith("No fit (three are needed)")


def test_csv_tables_leave_nan_empty(tmp_path):
    report_tables.write_csv(str(tmp_path / "t.csv"), ["a", "b"], [[1.5, NAN], ["x", 2]])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1.5,\nx,2\n"
    assert report_tables.md_unreadable([]) == []
    assert report_tables.md_unreadable([("f.h5", "junk")])[2] == "- `f.h5`: junk"


def test_the_speed_figures_name_their_cards_and_commits():
    runs = [run(device_name="NVIDIA H200", commit="0123456789abcdef"), run(status="oom", device_name="other")]
    assert report_plots.provenance(runs) == "on NVIDIA H200, commit 0123456789ab"
    cpu = [run(device="cpu", commit="a"), run(device="cpu", commit="b")]
    assert report_plots.provenance(cpu) == "on cpu, 2 commits"
    assert report_plots.provenance([]) == "on —, commit not recorded"


# ------------------------------------------------------------------------------------------------- precision
def two_precisions():
    """tiny T1P1D2 at 32, 64, 128 tokens in bf16 (finished) and fp8 (faster; 128 out of memory); 256 a cell not run."""
    rows = [run(seq=s, precision=p, step_time_s=t * s, tokens_per_s=4 * s / (t * s), run_min=t * s / 60,
                mean_peak_gib=1.0, std_at_peak_gib=0.0, peaks_gib=[1.0, 1.0], device="cpu", device_name="cpu",
                status="oom" if p == "fp8" and s == 128 else "ok")
            for s in (32, 64, 128) for p, t in (("bf16", 0.01), ("fp8", 0.006))]
    return rows + [run(seq=256, precision="fp8", status="not run")]


def test_one_precision_leaves_the_layouts_as_they_were_and_two_name_it():
    rows = [run(), run(seq=64)]
    report_results.label_layouts(rows)
    assert [r["layout"] for r in rows] == ["T1P1D2", "T1P1D2"]
    assert len(report_tables.md_sources(rows, [], [], rows, ["in"])) == 4  # title, blank, what was read, blank
    rows = two_precisions()
    report_results.label_layouts(rows)
    assert sorted({r["layout"] for r in rows}) == ["T1P1D2 (bf16)", "T1P1D2 (fp8)"]
    assert report_tables.md_sources(rows, [], [], rows, ["in"])[4].startswith(
        "Precisions: bf16, fp8. Each layout is named with its precision, as in T1P1D2 (bf16), in every table")


def test_runs_of_two_global_batches_are_two_series_and_both_are_kept():
    small, large = run(global_batch=1, time="2026-02-01"), run(global_batch=32, time="2026-01-01")
    kept, aside = report_results.newest_per_cell([small, large])  # one cell, two batches: both kept
    assert len(kept) == 2 and aside == []
    unknown = run(seq=64, status="not run")  # a manifest cell from before cells.json recorded the batch
    rows = kept + [unknown]
    report_results.label_layouts(rows)
    assert sorted(r["layout"] for r in rows) == ["T1P1D2", "T1P1D2 (gb 1)", "T1P1D2 (gb 32)"]
    assert report_tables.md_sources(rows, [], [], rows, ["in"])[4].startswith(
        "Global batches: 1, 32 sequences a step. Each layout is named with its global batch, as in T1P1D2 (gb 32)")
    both = [run(precision="bf16", global_batch=8), run(precision="fp8", global_batch=32)]
    report_results.label_layouts(both)
    assert [r["layout"] for r in both] == ["T1P1D2 (bf16, gb 8)", "T1P1D2 (fp8, gb 32)"]
    same = [run(global_batch=32), run(seq=64, global_batch=32)]  # one batch: the layouts as they were
    report_results.label_layouts(same)
    assert [r["layout"] for r in same] == ["T1P1D2", "T1P1D2"]


def test_two_precisions_get_their_own_feasibility_tables_fits_and_runs_rows():
    rows = two_precisions()
    report_results.label_layouts(rows)
    layouts = sorted({r["layout"] for r in rows}, key=report_tables.natural)
    cells = {(r["model"], r["layout"], r["seq"]): r for r in rows}
    assert len(cells) == len(rows)  # no two cells collide
    md = report_tables.md_feasibility(rows, cells, ["tiny"], layouts, [32, 64, 128, 256])
    assert "### T1P1D2 (bf16)" in md and "### T1P1D2 (fp8)" in md
    fp8_row = md[md.index("### T1P1D2 (fp8)") + 4]
    assert fp8_row.startswith("| tiny | ✔ (1.0 GiB) | ✔ (1.0 GiB) | ✖ oom (1.0 GiB) | not run")
    assert "- tiny T1P1D2 (fp8) 128: oom — (no message)" in md
    fits, too_few = report_tables.linear_fits([r for r in rows if r["status"] != "not run"], ["tiny"], layouts)
    assert [(f["layout"], f["points"]) for f in fits] == [("T1P1D2 (bf16)", 3)]
    assert too_few == [("tiny", "T1P1D2 (fp8)", 2)]
    assert "| tiny | T1P1D2 (fp8) | 32 | ok |" in "\n".join(report_tables.md_runs(rows))


def description(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.info["Description"]


def test_every_figure_tells_the_precisions_apart(tmp_path):
    rows = two_precisions()
    report_results.label_layouts(rows)
    runs = [r for r in rows if r["status"] != "not run"]
    layouts = sorted({r["layout"] for r in rows}, key=report_tables.natural)
    fits, _ = report_tables.linear_fits(runs, ["tiny"], layouts)
    out = str(tmp_path)
    report_plots.plot_time(out, rows, fits, ["tiny"], layouts)
    report_plots.plot_memory(out, rows, ["tiny"], layouts)
    report_plots.plot_throughput(out, runs, ["tiny"], layouts)
    study_figures.plot(out, rows, ["tiny"], layouts, report_plots.panel_grid, report_plots.save, "on cpu")
    for name in ("time_vs_length.png", "memory.png", "throughput.png"):  # a series per precision, in the legend
        text = description(tmp_path / name)
        legend = next(l for l in text.splitlines() if l.startswith("legend: "))
        assert "T1P1D2 (bf16)" in legend and "T1P1D2 (fp8)" in legend, (name, text)
        markers = next(l for l in text.splitlines() if l.startswith("markers: "))
        if name != "memory.png":  # its bars: a colour and a slot per precision
            assert "T1P1D2 (bf16) o" in markers and "T1P1D2 (fp8) s" in markers, (name, text)
    assert "marks: T1P1D2 (fp8) ✖ oom | T1P1D2 (fp8) not run" in description(tmp_path / "memory.png")
    for name in ("study_runtime.png", "study_memory.png"):  # a panel per precision
        text = description(tmp_path / name)
        assert "panel 'T1P1D2 (bf16)'" in text and "panel 'T1P1D2 (fp8)'" in text, (name, text)


def test_a_sweeps_cells_in_two_precisions_each_have_their_row(tmp_path):
    spec = {"name": "t", "models": ["tiny"], "lengths": [32], "layouts": [("T1P1D2", 1, 1, 1, 2)],
            "precisions": ["bf16", "fp8"], "device": "cpu", "steps": 3}
    cells = sweep_spec.cells_of(spec)
    plans = {c["name"]: (0, {"peak_bytes": 2**30, "fits": True}, None) for c in cells}
    (tmp_path / "cells.json").write_text(sweep_plan.manifest_text(spec, cells, plans))
    manifests = report_manifest.find_manifests([str(tmp_path)])
    known = report_manifest.manifest_results(manifests)
    assert known[os.path.realpath(tmp_path / "results" / "tiny-L32-T1P1D2-fp8.h5")]["precision"] == "fp8"
    rows = report_manifest.manifest_placeholders(manifests, [run(seq=32)])  # the bf16 cell ran, the fp8 one did not
    assert [(r["seq"], r["precision"], r["status"]) for r in rows] == [(32, "fp8", "not run")]


def test_a_model_with_no_finished_run_says_so_in_its_step_time_panel(tmp_path):
    rows = two_precisions()[:2] + [run(model="big", seq=s, status="oom") for s in (32, 64)]
    report_results.label_layouts(rows)
    layouts = sorted({r["layout"] for r in rows}, key=report_tables.natural)
    runs = [r for r in rows if r["status"] == "ok"]
    fits, _ = report_tables.linear_fits(runs, ["big", "tiny"], layouts)
    report_plots.plot_time(str(tmp_path), rows, fits, ["big", "tiny"], layouts)
    panels = [l for l in description(tmp_path / "time_vs_length.png").splitlines() if l.startswith("panel '")]
    big, tiny = next(p for p in panels if p.startswith("panel 'big'")), next(p for p in panels if p.startswith("panel 'tiny'"))
    assert "no run of this model finished" in big and "no run of this model finished" not in tiny
