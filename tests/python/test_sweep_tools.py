"""The pure functions of qwen3-sweep (tools/sweep/qwen3_sweep.py): layout names and parsing, --only's cell selection,
and why a dataset cannot serve a sweep's cells. Bad input ends the tool with exit 2 and one message naming it."""
import pytest

import qwen3_sweep as sweep


def refused(capsys, fn, *args):
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_layouts_take_the_data_parallel_size_the_ranks_leave():
    assert sweep.parse_layouts("s.ini", "T4P2, T2P2C2, T1P1D8", 8, "8 GPUs") == [
        ("T4P2D1", 4, 2, 1, 1), ("T2P2C2D1", 2, 2, 2, 1), ("T1P1D8", 1, 1, 1, 8)]
    assert sweep.layout_name(2, 1, 2, 1) == "T2P1C2D1" and sweep.layout_name(2, 1, 1, 4) == "T2P1D4"


def test_bad_layouts_are_refused_by_name(capsys):
    assert "layout 'X4' is not of the form" in refused(capsys, sweep.parse_layouts, "s.ini", "X4", 8, "8 GPUs")
    assert "tp·pp·cp = 3 to divide the 8 ranks" in refused(capsys, sweep.parse_layouts, "s.ini", "T3P1", 8, "8 GPUs")
    assert "says D4, but 8 ranks" in refused(capsys, sweep.parse_layouts, "s.ini", "T2P2D4", 8, "8 GPUs")


def test_only_selects_cells_and_refuses_a_pattern_that_matches_none(capsys):
    cells = [{"name": n} for n in ("0.6B-L1024-T8P1D1", "0.6B-L4096-T8P1D1", "8B-L1024-T4P2D1")]
    assert [c["name"] for c in sweep.select_cells(cells, "0.6B-*")] == ["0.6B-L1024-T8P1D1", "0.6B-L4096-T8P1D1"]
    assert sweep.select_cells(cells, "") == cells
    assert "'14B-*' matches no cell" in refused(capsys, sweep.select_cells, cells, "8B-*,14B-*")


def test_a_dataset_serves_cells_only_of_its_vocabulary_seed_and_lengths():
    have = (151936, 7, {1024: 100, 4096: 50})
    assert sweep.stale_reason(have, 151936, 7, [1024], 100, True) == (None, {1024: 100, 4096: 50})
    assert sweep.stale_reason(have, 151936, 7, [4096], 100, True)[0] == "lacks 100 documents of length 4096"
    assert sweep.stale_reason(have, 512, 7, [1024], 100, True) == ("built with vocab size 151936, not 512", {})
    assert sweep.stale_reason(have, 151936, 8, [1024], 100, True)[0] == "built with seed 7, the spec asks for seed 8"
    assert sweep.stale_reason(None, 151936, 7, [1024], 100, False) == ("missing", {})
    assert sweep.stale_reason(None, 151936, 7, [1024], 100, True) == ("unreadable", {})
