"""The blind protocol of the GPU model: drawing, predicting before timing, the blind label, resuming, scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simcim.experiments.config import ConfigError, load_config
from simcim.experiments.kinds import TrialContext
from simcim.gpu import counts
from simcim.validation import blind, blind_report, measure
from simcim.validation.decode_step import Op

DATA = Path(__file__).parent / "data"
CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "gpu_model_blind.toml"

# one small call of each kernel of the space, to build on the CPU (kernels fall back to their references there)
TINY = {
    "linear_bf16": {"m": 2, "n": 8, "k": 16},
    "quant_gemv": {"n": 8, "k": 128, "scheme": "int2", "group": 64},
    "sdpa_decode": {"b": 1, "h": 2, "hkv": 1, "t": 64, "d": 16},
    "kv_decode": {"b": 1, "h": 2, "hkv": 1, "t": 80, "d": 32, "bits": 4},
    "fused_attention": {"b": 1, "h": 2, "n": 32, "d": 16, "hkv": 1, "causal": False},
    "unfused_attention": {"b": 1, "h": 2, "n": 32, "d": 16, "hkv": 1},
    "spmm": {"m": 8, "k": 16, "ncols": 2, "nnz": 40},
    "embedding_bag": {"bags": 4, "per_bag": 3, "dim": 8, "vocab": 20, "elem_bytes": 2},
    "fwht": {"rows": 4, "d": 16, "elem_bytes": 4},
}


def test_draw_is_seeded_distinct_and_covers_every_kernel():
    calls = blind.draw(7, 64)
    assert calls == blind.draw(7, 64) and calls != blind.draw(8, 64)
    keys = {blind.call_key(k, a) for k, a in calls}
    assert len(keys) == 64
    per_kernel = {k: sum(1 for c, _ in calls if c == k) for k in blind.SPACE}
    assert min(per_kernel.values()) >= 64 // len(blind.SPACE)
    assert all(blind.SPACE[k].fits(a) for k, a in calls)
    assert len({a.get("group") for k, a in calls if k == "quant_gemv"} | {None}) > 2  # group sizes vary too


def test_every_drawn_call_predicts():
    from simcim.gpu import load_spec

    rows = blind.predict_calls(blind.draw(3, 200), load_spec("h100"))
    assert all(np.isfinite(r["pred_us"]) and r["pred_us"] > 0 for r in rows)
    assert {r["kernel"] for r in rows} == set(blind.SPACE) <= set(counts.COUNTERS)


@pytest.mark.parametrize("kernel", sorted(blind.SPACE))
def test_the_gpu_runner_builds_every_kernel_of_the_space(kernel):
    assert set(TINY) == set(blind.SPACE)  # a kernel added to the space needs a runner in measure.build
    op = Op("blind", kernel, tuple(TINY[kernel].items()))
    out = measure.build(op, torch.Generator().manual_seed(0), torch.device("cpu"))()
    assert torch.isfinite(out.float()).all()


def test_only_the_smallest_calls_stay_in_l2():
    l2 = 50 * 2**20
    small, large = Op("b", "fwht", (("rows", 64), ("d", 128))), Op("b", "fwht", (("rows", 4096), ("d", 128)))
    assert measure.input_bytes(small) == 2 * 64 * 128 * 2 and measure.stays_in_l2(small, l2)
    assert not measure.stays_in_l2(large, l2) and measure.rotated_copies(large, l2) == 50
    # a gathered table counts whole: a few small bags from a 256 MB table get one copy of it, not 256
    bags = Op("b", "embedding_bag", (("bags", 256), ("per_bag", 4), ("dim", 64), ("vocab", 10**6), ("elem_bytes", 4)))
    assert measure.rotated_copies(bags, l2) == 1 and not measure.stays_in_l2(bags, l2)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU whose every call takes 1.25x its prediction; each timing checks that all predictions were on disk."""
    state = {"timed": [], "fail_after": None}

    def time_op(op, env, seed=0):
        pred_file = next(Path(state["dir"]).rglob("predictions.json"))
        record = json.loads(pred_file.read_text())
        assert len(record["predictions"]) == state["calls"]  # every prediction written before this timing
        if state["fail_after"] is not None and len(state["timed"]) >= state["fail_after"]:
            raise KeyboardInterrupt  # a killed run
        state["timed"].append(op.key)
        pred = {p["call"]: p["pred_us"] for p in record["predictions"]}[blind.call_key(op.kernel, op.args)]
        return 1.25 * pred * 1e-6, False

    monkeypatch.setattr(measure, "gpu_env", lambda: object())
    monkeypatch.setattr(measure, "time_op", time_op)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    return state


def _trial(tmp_path, state, **kw):
    params = blind.Params(calls=60, **kw)
    state["dir"], state["calls"] = tmp_path, params.calls
    return blind.run_trial(params, 0, TrialContext(tmp_path, "t"))


def test_blind_trial_predicts_first_then_times_and_scores(tmp_path, fake_gpu, capsys):
    out = _trial(tmp_path, fake_gpu)
    seed = out["seed_drawn"]
    assert f"draw seed {seed}" in capsys.readouterr().out
    assert out["label"] == "blind" and out["blind"] == 1 and out["device"] == "Fake GPU"
    assert out["predicted_at"] < out["first_measured_at"] and len(fake_gpu["timed"]) == 60
    # every prediction is 1.25x too fast: -20% on every call
    assert out["n_scored"] == 60 and out["mape_pct"] == pytest.approx(20)
    assert out["median_ape_pct"] == pytest.approx(20) and out["p90_ape_pct"] == pytest.approx(20)
    assert len(out["worst5"]) == 5 and all("-20% (under-predicted" in w for w in out["worst5"])
    assert [k for k, _ in blind.draw(seed, 60)] == out["c_kernel"]  # the printed seed reproduces the draw


def test_a_changed_model_is_not_blind(tmp_path, fake_gpu, monkeypatch):
    hashes = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(blind, "model_hash", lambda: next(hashes))
    out = _trial(tmp_path, fake_gpu)
    assert out["label"].startswith("not blind: the model's source changed") and out["blind"] == 0


def test_a_killed_trial_resumes_without_predicting_again(tmp_path, fake_gpu, monkeypatch):
    fake_gpu["fail_after"] = 10
    with pytest.raises(KeyboardInterrupt):
        _trial(tmp_path, fake_gpu)
    first = json.loads(next(tmp_path.rglob("predictions.json")).read_text())
    fake_gpu["fail_after"] = None

    def no_new_predictions(*a):
        raise AssertionError("predicted again")

    monkeypatch.setattr(blind, "predict_calls", no_new_predictions)
    out = _trial(tmp_path, fake_gpu)  # draw_seed unset: a new draw would have a new seed
    assert out["seed_drawn"] == first["draw_seed"] and out["predicted_at"] == first["written_at"]
    assert len(fake_gpu["timed"]) == 60 and len(set(fake_gpu["timed"])) == 60  # 10, then the other 50
    assert out["label"] == "blind" and out["n_scored"] == 60


def test_time_budget_leaves_the_rest_untimed(tmp_path, fake_gpu, monkeypatch):
    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    out = _trial(tmp_path, fake_gpu, time_budget_s=25.0, draw_seed=5)
    # the clock reads 0 at the start, then 10 s more at each call: two calls start within 25 s
    assert out["n_scored"] == 2 and out["n_unscored"] == 58 and out["seed_drawn"] == 5
    assert sum("time budget" in e for e in out["c_error"]) == 58


def test_without_a_gpu_it_predicts_only(tmp_path):
    out = blind.run_trial(blind.Params(calls=60, measure="off"), 0, TrialContext(tmp_path, "t"))
    assert out["label"] == "not measured" and out["n_scored"] == 0 and np.isnan(out["mape_pct"])
    assert all(p > 0 for p in out["c_pred_us"]) and (tmp_path / "artifacts" / "t" / "predictions.json").is_file()


def test_config_and_bad_params():
    assert len(load_config(CONFIG).trials(sweep=False)) == 1
    with pytest.raises(ConfigError, match="calls"):
        load_config(CONFIG, {"params.calls": 10})
    with pytest.raises(ConfigError, match="gpu_spec"):
        load_config(CONFIG, {"params.gpu_spec": "a100"})


def test_stored_cpu_run_reports_and_its_seed_redraws_it(tmp_path):
    run = tmp_path / "cpu"
    shutil.copytree(DATA / "gpu_model_blind_cpu", run)
    text = blind_report.write(run).read_text()
    assert "**not measured**" in text and "Not measured: 64 predictions only." in text
    record = json.loads(next(run.rglob("predictions.json")).read_text())
    assert blind.draw(record["draw_seed"], 64) == [(p["kernel"], p["args"]) for p in record["predictions"]]
    text = blind_report.write(run, spec="h100").read_text()
    assert "re-predicted" in text and "spec h100" in text


def test_suite_run_is_scored_as_not_blind(tmp_path):
    from simcim.validation import report

    run = tmp_path / "h200"
    shutil.copytree(DATA / "sim_vs_measured_h200", run)
    text = blind_report.write(run).read_text()
    kt = report.kernel_table(report.load(run))
    ape = (100 * (kt["pred_us"] - kt["meas_us"]) / kt["meas_us"]).abs()
    assert "**not blind**" in text and f"**{len(kt)} calls scored**" in text
    assert f"**{ape.mean():.1f}%**, median {ape.median():.1f}%, 90th percentile {np.percentile(ape, 90):.1f}%" in text
    assert text.count("\n1. ") == 1 and "\n5. " in text


@pytest.mark.parametrize("run", sorted(p.name for p in DATA.glob("gpu_model_blind_h*")))
def test_stored_gpu_runs_were_predicted_before_timing(run, tmp_path):
    shutil.copytree(DATA / run, tmp_path / run)
    df = blind_report.load(tmp_path / run)
    for _, r in df.iterrows():
        assert r["predicted_at"] < r["first_measured_at"] and r["n_scored"] >= 60
        assert r["blind"] == (r["model_hash_predicted"] == r["model_hash_scored"])
        t = blind_report.trial_table(r)
        assert blind.score(t)["mape_pct"] == pytest.approx(r["mape_pct"])
    assert "calls scored" in blind_report.write(tmp_path / run).read_text()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert blind_report.main([str(tmp_path / "none")]) == 2 and "error:" in capsys.readouterr().err
    run = tmp_path / "cpu"
    shutil.copytree(DATA / "sim_vs_measured_cpu", run)
    (run / "experiment.json").write_text(json.dumps({"kind": "npu_sim"}))
    assert blind_report.main([str(run)]) == 2 and "not gpu_model_blind or sim_vs_measured" in capsys.readouterr().err


def test_a_gpu_described_only_by_its_microbenchmark_spec(tmp_path):
    from simcim.gpu.model import write_spec
    from tests.gpu.spec import SPEC

    path = tmp_path / "fresh.toml"
    write_spec(SPEC, path)  # what kernels.gpu_microbench --out writes
    out = blind.run_trial(blind.Params(gpu_spec=str(path), measure="off", draw_seed=1), 0, TrialContext(tmp_path, "x"))
    record = json.loads((tmp_path / "artifacts" / "x" / "predictions.json").read_text())
    assert out["gpu_spec_name"] == "unit" and record["spec"]["copy_gbps"] == SPEC.copy_gbps
    h200 = blind.run_trial(blind.Params(measure="off", draw_seed=1), 0, TrialContext(tmp_path, "y"))
    assert h200["c_call"] == out["c_call"] and h200["c_pred_us"] != out["c_pred_us"]  # same draw, other rates
