"""The npu_sim experiment kind: trial metrics, parameter errors, and the bundled configs."""

from pathlib import Path

import pytest

from simcim.experiments.config import ConfigError, load_config, validate_params
from simcim.experiments.kinds import TrialContext
from simcim.npu.experiment import DEFAULT_METRICS, Params, run_trial

CONFIGS = sorted((Path(__file__).parents[2] / "experiments" / "configs").glob("npu_*.toml"))
SMALL = dict(rows=128, cols=8192, sparsity=0.99, l2_kib=32.0)


def test_trial_reports_speedup_and_prefetch_metrics(tmp_path):
    ctx = TrialContext(tmp_path, "t0")
    m = run_trial(Params(prefetcher="nvr", save_trace=True, **SMALL), 0, ctx)
    for k in DEFAULT_METRICS + ("l2_mpki", "dram_bytes", "pf_timeliness", "stall_cycles", "pf_budget_bytes"):
        assert k in m, k
    assert m["speedup"] > 1.0
    assert 0 < m["miss_reduction"] <= 1
    assert (ctx.artifact_dir / "trace.npz").is_file()
    base = run_trial(Params(prefetcher="none", **SMALL), 0, ctx)
    assert base["speedup"] == 1.0 and base["cycles"] == m["baseline_cycles"]


def test_metric_names_do_not_collide_with_parameters(tmp_path):
    import dataclasses

    m = run_trial(Params(prefetcher="imp", npu_cache_kib=16.0, llc_kib=512.0, **SMALL), 0,
                  TrialContext(tmp_path, "t2"))
    assert not set(m) & {f.name for f in dataclasses.fields(Params)}


def test_npu_cache_level_appears_in_metrics(tmp_path):
    m = run_trial(Params(prefetcher="stride", npu_cache_kib=16.0, **SMALL), 1, TrialContext(tmp_path, "t1"))
    assert m["npu_cache_accesses"] > 0 and "l2_misses" in m


def test_bad_params_are_one_line_errors():
    with pytest.raises(ConfigError, match="whole number of sets"):
        validate_params(Params, {"l2_kib": 100.5})
    with pytest.raises(ConfigError, match="prefetcher"):
        validate_params(Params, {"prefetcher": "markov"})
    with pytest.raises(ConfigError, match="sparsity"):
        validate_params(Params, {"sparsity": 1.0})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_bundled_configs_validate(path):
    cfg = load_config(path)
    assert cfg.kind == "npu_sim"
    assert len(cfg.trials()) >= 2


def test_reproduce_tables_compute_the_claims():
    import pandas as pd

    from simcim.npu.reproduce import claim1, claim2, claim3

    c1 = claim1(pd.DataFrame({
        "workload": ["a"] * 4 + ["b"] * 4,
        "prefetcher": ["none", "stride", "imp", "nvr"] * 2,
        "misses": [100, 50, 20, 2, 10, 8, 9, 4],
    }))
    assert c1.loc["a", "best_other"] == "imp" and c1.loc["a", "reduction_vs_best"] == pytest.approx(0.9)
    assert c1.loc["b", "best_other"] == "stride" and c1.loc["b", "reduction_vs_best"] == pytest.approx(0.5)
    assert c1.loc["a", "reduction_vs_best_general"] == pytest.approx(1 - 2 / 50)
    c2 = claim2(pd.DataFrame({"workload": ["a", "a"], "npu_cache_kib": [0.0, 16.0], "speedup": [2.0, 5.0]}))
    assert c2.loc["a", 16.0] == 5.0
    c3 = claim3(pd.DataFrame({
        "workload": ["a"] * 5,
        "npu_cache_kib": [0.0, 16.0, 0.0, 32.0, 16.0],
        "l2_kib": [256.0, 256.0, 272.0, 256.0, 272.0],
        "cycles": [1000, 500, 900, 400, 480],
    }))
    assert c3.loc["a", "add_npu_cache"] == pytest.approx(1.0)
    assert c3.loc["a", "add_l2"] == pytest.approx(1000 / 900 - 1)
    assert c3.loc["a", "expand_npu_cache"] == pytest.approx(0.25)
    assert c3.loc["a", "expand_l2"] == pytest.approx(500 / 480 - 1)
