"""The pure functions of tools/bench's prediction checks: which nvidia-smi samples are a run's own
(predict_check.smi_window), the layout family and error statistics of docs/prediction.md (prediction_table) and the
--plan command line they build (plan_json); fp8_quality's check of fp8 against bf16 training; fp8_budget's sum of
what FP8 saves against what its casts cost; and merge_calibration's adding of measured kernels."""
import datetime

import pytest

import fp8_budget
import fp8_quality
import merge_calibration
import plan_json
import predict_check
import prediction_table


def at(second, fraction=0.0):
    return datetime.datetime(2026, 12, 6, 20, 47, second) + datetime.timedelta(seconds=fraction)


# nvidia-smi every 0.5 s around a run stamped 20:47:49 – 20:47:50 (call 5 of docs/studies/1xh200): the run before
# freed the device at 48.87, this one held 32,193 MiB from 49.37 and was gone by 50.37.
CALL5 = [(at(48, 0.37), 549), (at(48, 0.87), 4), (at(49, 0.37), 32193), (at(49, 0.87), 32193), (at(50, 0.37), 549),
         (at(50, 0.87), 4), (at(51, 0.37), 84281)]


def test_a_short_run_keeps_its_samples_after_the_last_empty_one():
    assert max(predict_check.smi_window(CALL5, at(49), at(51))) == 32193


def test_the_run_before_still_on_the_device_in_the_start_second_is_not_counted():
    samples = [(at(9, 0.2), 60000), (at(9, 0.4), 300), (at(9, 0.7), 20000), (at(10, 0.2), 21000), (at(11, 0.2), 500)]
    assert predict_check.smi_window(samples, at(9), at(11)) == [20000, 21000]


def test_without_an_empty_sample_the_start_second_is_left_out():
    samples = [(at(9, 0.2), 60000), (at(9, 0.7), 60000), (at(10, 0.2), 21000)]
    assert predict_check.smi_window(samples, at(9), at(11)) == [21000]


def run(tp=1, pp=1, cp=1, dp=1, **extra):
    r = {"tp": str(tp), "pp": str(pp), "cp": str(cp), "dp": str(dp), "recompute": "none",
         "recompute_num_layers": "", "offload_inputs": "", "offload_optimizer": "", "shard_optimizer": ""}
    r.update(extra)
    return r


def test_layout_families_partition_the_layouts():
    assert prediction_table.family(run(dp=4)) == "D only"
    assert prediction_table.family(run(tp=4)) == "T only"
    assert prediction_table.family(run(tp=2, pp=2)) == "T×P"
    assert prediction_table.family(run(tp=2, dp=2)) == "T×D"
    assert prediction_table.family(run(tp=2, cp=2)) == "CP"  # context parallelism wins
    assert all(prediction_table.family(run(tp=t, pp=p, dp=d)) in prediction_table.FAMILIES
               for t in (1, 2) for p in (1, 2) for d in (1, 2) if t * p * d > 1)
    assert prediction_table.layout(run(tp=2, cp=2)) == "T2P1C2D1"


def test_error_statistics():
    assert prediction_table.stats([]) is None
    mean, largest, low, high = prediction_table.stats([-2.0, 10.0, -12.0])
    assert (round(mean, 6), largest, low, high) == (8.0, -12.0, -12.0, 10.0)
    assert prediction_table.summary([5.0, -1.0]) == "2 priced, mean |error| 3.0%, largest +5.0% (range -1.0% … +5.0%)"


def test_a_row_beyond_the_bar_is_marked():
    plan = {"predicted": {"tokens_per_s": 1170.0}, "plan_bytes": 2**30}
    measured = run(tp=4, card="h100-80gb", gpus="4", model="8B", seq_len="4096", global_batch="8",
                   measured_tokens_per_s="1000", measured_peak_gib="1.0", commit="abc")
    line, err = prediction_table.table_row(1, measured, plan)
    assert round(err, 6) == 17.0 and "+17.0% ‡" in line
    line, err = prediction_table.table_row(1, measured, {"predicted": {"tokens_per_s": 1100.0}, "plan_bytes": 2**30})
    assert "+10.0% |" in line and "‡" not in line


def test_the_plan_command_carries_every_layout_field(monkeypatch):
    seen = {}

    class Done:
        returncode, stdout, stderr = 0, "{}", ""

    def fake_run(cmd, **_):
        seen["cmd"] = cmd
        return Done()

    monkeypatch.setattr(plan_json.subprocess, "run", fake_run)
    layout = {"model": "8B", "seq_len": 4096, "global_batch": 32, "micro_batch": 1, "tp": 2, "pp": 2, "cp": 1,
              "world_size": 4, "device_memory": "h100-80gb", "recompute": "full", "recompute_num_layers": 3,
              "offload_inputs": True, "offload_optimizer": 0.25, "pp_layers": "18,18", "shard_optimizer": False,
              "precision": "fp8", "fp8_weights": "per-layer", "fp8_scaling": "delayed"}
    assert plan_json.plan("/bin", layout, calibration="c.json") == {}
    cmd = " ".join(seen["cmd"])
    for part in ("--model 8B", "--seq-len 4096", "--tp 2", "--pp 2", "--world-size 4", "--recompute full",
                 "--recompute-num-layers 3", "--offload-inputs", "--offload-optimizer=0.25", "--pp-layers 18,18",
                 "--no-shard-optimizer", "--precision fp8", "--fp8-weights per-layer", "--fp8-scaling delayed",
                 "--calibration c.json"):
        assert part in cmd, part
    del layout["precision"], layout["fp8_weights"], layout["fp8_scaling"]  # a bf16 file records none: the defaults
    plan_json.plan("/bin", layout)
    assert not {"--precision", "--fp8-weights", "--fp8-scaling"} & set(seen["cmd"])


# ---- fp8_quality.py: fp8 against bf16 training on the Markov data ----

def test_the_markov_entropy_is_the_one_docs_datasets_states():
    assert abs(fp8_quality.markov_entropy(151936) - 2.7658) < 1e-4
    assert abs(fp8_quality.markov_entropy(512) - 2.1903) < 1e-4


def test_the_gap_is_measured_from_the_given_step_and_the_verdict_needs_both_criteria():
    bf16 = [6.0] * 49 + [3.0] * 51
    fp8 = [9.0] * 49 + [3.02] * 51  # far apart before step 50, 0.67% after
    v = fp8_quality.verdict(bf16, fp8, 512, 60, 0.01)  # from step 60 the 10-step means hold steps 50.. only
    assert abs(v["max_gap"] - 0.02 / 3) < 1e-12 and v["closer_to_entropy"] and v["pass"]
    assert not fp8_quality.verdict(bf16, fp8, 512, 50, 0.01)["pass"]  # step 50's mean still holds steps 41-49
    assert abs(fp8_quality.verdict(bf16, fp8, 512, 50, 0.01, smooth=1)["max_gap"] - 0.02 / 3) < 1e-12
    noisy = [3.0 + (0.1 if i % 2 else -0.1) for i in range(100)]  # one step's noise, even out over two
    assert fp8_quality.verdict([3.0] * 100, noisy, 512, 50, 0.01, smooth=10)["pass"]
    assert not fp8_quality.verdict([3.0] * 100, noisy, 512, 50, 0.01, smooth=1)["pass"]
    stuck = [6.0] * 100  # near ln(512) = 6.24: not learning
    assert not fp8_quality.verdict(stuck, stuck, 512, 50, 0.01)["pass"]


def test_the_halfway_crossing_names_the_steps_by_which_a_run_leads():
    entropy, top = fp8_quality.markov_entropy(512), 6.2383
    bf16 = [6.1] * 45 + [2.3] * 55
    fp8 = [6.1] * 43 + [2.3] * 57  # leaves the plateau two steps sooner
    v = fp8_quality.verdict(bf16, fp8, 512, 50, 0.01, smooth=1)
    assert abs(v["halfway"] - (entropy + top) / 2) < 1e-3
    assert v["crossing"] == {"bf16": 46, "fp8": 44}
    assert fp8_quality.verdict([6.1] * 100, [6.1] * 100, 512, 50, 0.01)["crossing"] == {"bf16": None, "fp8": None}


def test_the_step_from_which_the_curves_stay_within_the_bound():
    bf16 = [6.1] * 45 + [2.3] * 55
    fp8 = [6.1] * 43 + [2.3] * 57
    v = fp8_quality.verdict(bf16, fp8, 512, 40, 0.01, smooth=1)
    assert v["settled"] == 46  # apart at steps 44 and 45 only
    assert fp8_quality.verdict(bf16, bf16, 512, 40, 0.01)["settled"] == 40
    assert fp8_quality.verdict(bf16, bf16[:-1] + [3.0], 512, 40, 0.01, smooth=1)["settled"] is None


def test_runs_that_differ_in_more_than_precision_are_named():
    a = {"model.name": "0.6B", "seed": "1", "precision": "bf16", "out": "a.h5"}
    b = {"model.name": "0.6B", "seed": "2", "precision": "fp8", "out": "b.h5"}
    assert fp8_quality.differing(a, b, {"precision"}) == ["seed"]


def test_the_control_compares_two_bf16_runs_apart_only_in_micro_batch(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    def run(name, micro_batch, precision="bf16", seed="5"):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            config = f.create_group("config")
            for k, v in {"model.name": "0.6B", "model.vocab_size": "512", "seq_len": "1024", "micro_batch": micro_batch,
                         "precision": precision, "seed": seed, "out": name}.items():
                config.attrs[k] = v
            f["steps/loss"] = [6.0] * 10 + [2.3] * 90
        return str(path)
    a, b = run("a.h5", "8"), run("b.h5", "4")
    assert fp8_quality.main([a, b, "--vocab", "512", "--control"]) == 0
    out = capsys.readouterr().out
    assert "bf16, micro-batch 4's loss curve" in out and "of bf16, micro-batch 8's" in out
    for other, why in ((run("c.h5", "8"), "must differ in their micro-batch"), (run("d.h5", "4", "fp8"), "two bf16 runs"),
                       (run("e.h5", "4", seed="6"), "more than micro-batch: seed")):
        with pytest.raises(SystemExit) as e:
            fp8_quality.main([a, other, "--vocab", "512", "--control"])
        assert why in str(e.value)


def test_how_the_fp8_run_scales_is_part_of_its_precision_and_named(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    def run(name, precision, scaling, seed="5"):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            config = f.create_group("config")
            for k, v in {"model.name": "0.6B", "model.vocab_size": "512", "seq_len": "1024", "micro_batch": "8",
                         "precision": precision, "fp8_scaling": scaling, "fp8_weights": "auto", "seed": seed,
                         "out": name}.items():
                config.attrs[k] = v
            f["steps/loss"] = [6.0] * 10 + [2.3] * 90
        return str(path)
    bf16 = run("a.h5", "bf16", "current")
    assert fp8_quality.main([bf16, run("b.h5", "fp8", "delayed"), "--vocab", "512"]) == 0
    assert "fp8 (delayed scaling)'s loss curve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        fp8_quality.main([bf16, run("c.h5", "fp8", "delayed", seed="6"), "--vocab", "512"])
    assert "more than precision: seed" in str(e.value)


# ---- fp8_budget.py: what FP8 saves in the GEMMs against what its casts cost ----

def test_the_budget_takes_the_plans_gemms_and_tells_a_micro_batchs_casts_from_the_weights():
    op = lambda key, group, calls, alone: {"key": key, "in_step_group": group, "calls": calls, "alone_s": alone}
    bf16 = [op("gemm_fwd 8x8", "gemm", 4, 3.0), op("rmsnorm_fwd 8", "other", 4, 1.0)]
    fp8_one = [op("gemm8_fwd 8x8", "gemm", 4, 1.0), op("fp8_cast 8", "other", 4, 0.5), op("fp8_cast_both 8", "other", 2, 0.25)]
    fp8_two = [op("gemm8_fwd 8x8", "gemm", 8, 1.0), op("fp8_cast 8", "other", 8, 0.5), op("fp8_cast_both 8", "other", 2, 0.25)]
    saved, casts, weights = fp8_budget.budget(bf16, fp8_one, fp8_two)
    assert (saved, casts, weights) == (8.0, 2.0, 0.5)  # the norms are no GEMM; the weights' casts do not grow

# ---- merge_calibration.py: kernels a same-kind calibration measured, added where the base lacks them ----
def test_merging_adds_only_missing_kernels_of_the_prefixes_and_says_whence():
    base = {"kind": "h100-80gb", "measured": "first", "ops": {"gemm_fwd 8x8": [[8, 1.0]], "fp8_amax 8": [[8, 2.0]]}}
    other = {"kind": "h100-80gb", "measured": "a; b, commit x", "ops": {
        "gemm_fwd 8x8": [[8, 9.0]], "fp8_amax 8": [[8, 9.0]], "fp8_cast 8": [[8, 3.0]], "gemm8_fwd 8x8": [[8, 4.0]]}}
    merged, added = merge_calibration.merge(base, [("o.json", other)], ["gemm8_", "fp8_"])
    assert merged["ops"] == {"gemm_fwd 8x8": [[8, 1.0]], "fp8_amax 8": [[8, 2.0]], "fp8_cast 8": [[8, 3.0]],
                             "gemm8_fwd 8x8": [[8, 4.0]]}  # the base's own kept, bf16 kernels not taken
    assert added == ["o.json"] and merged["measured"].startswith("first; 2 kernels (gemm8_, fp8_) added from o.json")
    assert "b, commit x" in merged["measured"]
    again, _ = merge_calibration.merge({"kind": "h100-80gb", "measured": "first", "ops": {"fp8_amax 8": [[8, 2.0]],
                                        "gemm_fwd 8x8": [[8, 1.0]]}}, [("o.json", other)], ["fp8_"], replace=True)
    assert again["ops"] == {"fp8_amax 8": [[8, 9.0]], "fp8_cast 8": [[8, 3.0]], "gemm_fwd 8x8": [[8, 1.0]]}  # re-measured
    assert again["measured"].startswith("first; 2 kernels (fp8_) taken from o.json")
    other["kind"] = "h200"
    try:
        merge_calibration.merge(base, [("o.json", other)], ["fp8_"])
        assert False, "another card's kernels were taken"
    except ValueError as e:
        assert "h200" in str(e)
