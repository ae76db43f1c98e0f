from pathlib import Path

import pandas as pd
import pytest

from simcim.experiments.config import ConfigError, load_config, validate_params
from simcim.experiments.kinds import TrialContext
from simcim.npu.dataflow.experiment import Params, run_trial

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def ctx(tmp_path: Path) -> TrialContext:
    return TrialContext(tmp_path, "trial0")


def test_point_mode_reports_ratios_and_components(tmp_path):
    p = validate_params(Params, {"model": "BERT", "seq_len": 4096})
    out = run_trial(p, 0, ctx(tmp_path))
    assert out["passes"] == 1 and out["bottleneck"] in {"1d_array", "2d_array"}
    assert out["speedup_vs_baseline"] > 5 and 0.5 < out["energy_vs_baseline"] < 1
    assert 1 < out["e2e_speedup_vs_baseline"] < out["speedup_vs_baseline"]
    parts = ("energy_mac_2d_pj", "energy_ops_pj", "energy_reg_pj", "energy_glb_pj", "energy_dram_pj")
    assert out["energy_pj"] == pytest.approx(sum(out[k] for k in parts))
    same = run_trial(validate_params(Params, {"design": "flat", "seq_len": 4096}), 0, ctx(tmp_path))
    assert same["speedup_vs_baseline"] == pytest.approx(1.0) and same["passes"] == 3


def test_user_cascade_file(tmp_path):
    path = tmp_path / "linear.einsum"
    path.write_text("KV[e,f] = K[e,m] * V[f,m]\nO[f,p] = Q[e,p] * KV[e,f]\n")
    out = run_trial(validate_params(Params, {"cascade": str(path), "seq_len": 65536}), 0, ctx(tmp_path))
    assert out["passes"] == 1 and out["latency_s"] > 0


def test_design_space_mode_writes_every_point(tmp_path):
    raw = {
        "mode": "design_space",
        "dse_array_dim": [64, 256],
        "dse_pes_1d": [64, 256],
        "dse_glb_mib": [4.0],
        "dse_dram_gib_s": [100.0, 400.0],
        "dse_seq_len": [1024, 1 << 20],
    }
    out = run_trial(validate_params(Params, raw), 0, ctx(tmp_path))
    assert out["points"] == 16
    table = pd.read_csv(tmp_path / "artifacts" / "trial0" / "design_space.csv")
    assert len(table) == 16 and {"latency_s", "util_2d", "bottleneck"} <= set(table.columns)


def test_10000_point_design_space_config(tmp_path):
    cfg = load_config(CONFIGS / "fusemax_design_space.toml")
    trial = cfg.trials()[0]
    out = run_trial(trial.params, 0, ctx(tmp_path))
    assert out["points"] == 10_000 and out["points_per_second"] > 0  # speed is measured by simcim.npu.dataflow.bench


@pytest.mark.parametrize(
    "name",
    ["fusemax_seq_len.toml", "fusemax_models.toml", "fusemax_hardware.toml", "fusemax_design_space.toml"],
)
def test_shipped_configs_validate(name):
    assert load_config(CONFIGS / name).trials()


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"seq_len": 0}, "params.seq_len"),
        ({"design": "tpu"}, "params.design"),
        ({"cascade": "nope"}, "unknown cascade 'nope'"),
        ({"glb_mib": -1.0}, "params.glb_mib"),
        ({"mode": "design_space", "dse_seq_len": []}, "dse_seq_len"),
        ({"model": "BERT", "kv_group": 5}, "kv_group: 5 does not divide"),
    ],
)
def test_bad_params(raw, words):
    with pytest.raises(ConfigError, match=words):
        validate_params(Params, raw)


def test_a_buffer_too_small_for_one_tile_is_refused_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match=r"glb_mib: .*glb_bytes = 1 B cannot hold"):
        validate_params(Params, {"glb_mib": 0.000001})
    with pytest.raises(ConfigError, match=r"dse_glb_mib: .*cannot hold"):
        validate_params(Params, {"mode": "design_space", "dse_glb_mib": [0.01, 16.0], "dse_array_dim": [512]})
    # a buffer of a fractional number of MiB is rounded down to whole bytes, not refused
    p = validate_params(Params, {"glb_mib": 0.3, "seq_len": 1024, "end_to_end": False})
    assert run_trial(p, 0, ctx(tmp_path))["latency_s"] > 0
