"""Inputs the CLI used to ignore or answer with a traceback: overrides of swept keys, bad swept
values, huge sweeps, a quickstart whose trials all fail, damaged trial and weight files, reports."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

import simcim
from simcim.experiments import cli
from simcim.experiments.cli import main
from simcim.experiments.config import ExperimentConfig
from simcim.experiments.report import plot_metric, write_report
from simcim.experiments.store import DamagedTrialWarning, stored_status

SWEPT = """
[experiment]
name = "swept"
kind = "selftest"
seeds = 2

[params]
scale = 0.5
{extra}

[sweep]
x = [0.0, 1.0, 2.0]
"""


def config(tmp_path: Path, extra: str = "", text: str = SWEPT) -> Path:
    path = tmp_path / "swept.toml"
    path.write_text(text.format(extra=extra))
    return path


def sweep(tmp_path: Path, cfg: Path, *args: str) -> int:
    return main(["sweep", str(cfg), "--out", str(tmp_path / "run"), "--no-progress", *args])


def test_an_override_of_a_swept_key_replaces_its_axis(tmp_path, capsys):
    assert sweep(tmp_path, config(tmp_path), "--set", "params.x=0.5") == 0
    assert "replaces that sweep axis" in capsys.readouterr().err
    df = simcim.load(tmp_path / "run")
    assert sorted(df["x"].tolist()) == [0.5, 0.5] and sorted(df["seed"].tolist()) == [0, 1]


@pytest.mark.parametrize("override", ['params.x="0.05"', "params.x=nan", "params.x=[0.1", "params.x=inf"])
def test_a_bad_override_of_a_swept_key_is_refused_before_anything_runs(tmp_path, capsys, override):
    assert sweep(tmp_path, config(tmp_path), "--set", override) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "params.x" in err and err.startswith("simcim: error:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra", ['x = "abc"', "x = nan"])
def test_a_bad_params_value_of_a_swept_key_is_refused(tmp_path, capsys, extra):
    assert sweep(tmp_path, config(tmp_path, extra)) == 2
    assert "params.x" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bad_swept_value_is_refused_and_named(tmp_path, capsys):
    cfg = config(tmp_path, text=SWEPT.replace("x = [0.0, 1.0, 2.0]", "x = [0.0, nan, 2.0]"))
    assert sweep(tmp_path, cfg) == 2
    assert "sweep.x[1]" in capsys.readouterr().err


def test_a_sweep_is_expanded_once_and_a_large_one_warns_with_its_count_first(tmp_path, capsys, monkeypatch):
    calls = []
    expand = ExperimentConfig.trials

    def counted(self, **kw):
        calls.append(kw)
        return expand(self, **kw)

    monkeypatch.setattr(ExperimentConfig, "trials", counted)
    monkeypatch.setattr(cli, "LARGE_SWEEP", 5)
    cfg = config(tmp_path, text=SWEPT.replace("x = [0.0, 1.0, 2.0]", "x = [0.0, 1.0, 2.0]\nscale = [0.5, 1.0]"))
    assert sweep(tmp_path, cfg) == 0
    assert len(calls) == 1
    assert "expands to 12 trials" in capsys.readouterr().err
    assert len(simcim.load(tmp_path / "run")) == 12


def test_quickstart_whose_trials_all_fail_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    failing = tmp_path / "quickstart.toml"
    failing.write_text(SWEPT.format(extra="fail_above = -1.0"))
    monkeypatch.setattr(cli, "bundled_config", lambda name: failing)
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("simcim: error: quickstart has no result to report") for line in err.splitlines())


def test_a_damaged_trial_file_is_named_on_load_and_recomputed_on_resume(tmp_path, capsys):
    cfg = config(tmp_path)
    assert sweep(tmp_path, cfg) == 0
    trials = sorted((tmp_path / "run" / "trials").glob("*.parquet"))
    assert len(trials) == 6
    damaged = trials[2]
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated
    with pytest.warns(DamagedTrialWarning, match=damaged.name):
        df = simcim.load(tmp_path / "run")
    assert len(df) == 5
    with pytest.warns(DamagedTrialWarning):
        write_report(tmp_path / "run")
    capsys.readouterr()
    assert sweep(tmp_path, cfg) == 0
    captured = capsys.readouterr()
    assert f"{damaged} is damaged" in captured.err and "5 already stored, 1 ran ok" in captured.out
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedTrialWarning)
        assert len(simcim.load(tmp_path / "run")) == 6
    assert set(stored_status(tmp_path / "run").values()) == {"ok"}


def test_a_truncated_safetensors_file_is_named(tmp_path):
    from simcim.bundled import MODEL_DIR
    from simcim.models import load_model

    model = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated or corrupted"):
        load_model(str(model), device="cpu")


def test_a_single_seed_report_shows_no_spread_and_labels_carry_help(tmp_path):
    cfg = config(tmp_path, text=SWEPT.replace("seeds = 2", "seeds = 1") + '\n[report]\nx = "x"\nmetrics = ["y"]\n')
    assert sweep(tmp_path, cfg) == 0
    report, table = write_report(tmp_path / "run")
    text = report.read_text()
    assert "±" not in table and "no spread" in text
    assert "`x`: input value" in text


def test_many_series_are_split_into_panels(tmp_path):
    rows = [dict(x=x, pf=pf, l2=l2, cache=c, n=1, y_mean=float(x), y_std=0.0)
            for x in (1, 2) for pf in "abcd" for l2 in (1, 2, 3) for c in (0, 16, 32)]
    summary = pd.DataFrame(rows)
    assert plot_metric(summary, "x", ["pf", "l2", "cache"], "y", tmp_path / "p.png", False, "t") == 9
    assert plot_metric(summary[(summary.l2 == 1) & (summary.cache == 0)], "x", ["pf", "l2", "cache"], "y",
                       tmp_path / "q.png", False, "t") == 1
    assert (tmp_path / "p.png").stat().st_size > 0


def test_parameters_paired_with_x_make_no_series_of_their_own():
    from simcim.experiments.report import series_params

    df = pd.DataFrame([dict(workload=w, rows=r, prefetcher=p) for w, r in (("a", 1), ("b", 2), ("c", 3))
                       for p in ("none", "nvr")])
    assert series_params(df, "workload", "prefetcher", ["workload", "rows", "prefetcher"]) == ["prefetcher"]
    df["cache"] = [0, 16] * 3
    df = pd.concat([df, df.assign(cache=df.cache + 32)])
    assert series_params(df, "workload", "prefetcher", ["workload", "rows", "prefetcher", "cache"]) == \
        ["prefetcher", "cache"]
