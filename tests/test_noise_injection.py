"""Noise injection: reaches every selected matrix (stacked experts, routers), is seeded, exact at zero."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import simcim
from simcim.crossbar import CrossbarConfig, program_matrices, program_targets_, tile_scales
from simcim.experiments.cli import main
from simcim.models import load_model
from simcim.noise_injection import Params, restored, run_trial, selected_targets
from simcim.noise_models.presets import gaussian, pcm_programming
from simcim.targets import find_targets, select_targets

FAST = dict(eval_tokens=600, seq_len=64, batch_size=4, device="cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ crossbar mapping

def test_gaussian_weight_sigma_is_level_times_column_max():
    torch.manual_seed(0)
    w = torch.randn(1, 64, 4096) * torch.linspace(0.1, 3.0, 64)[None, :, None]
    level = 0.05
    out = program_matrices(w, gaussian(level), CrossbarConfig(tile_rows=4096), gen())
    err = out - w
    colmax = w.abs().amax(-1)
    rel = err.std(-1) / colmax  # per output column
    n = w.shape[-1]
    tol = 4 * level / (2 * (n - 1)) ** 0.5  # 4 standard errors of a sample standard deviation
    assert (rel - level).abs().max() < tol
    assert err.mean(-1).abs().div(colmax).max() < 4 * level / n ** 0.5


def test_zero_noise_and_ideal_device_are_exact():
    w = torch.randn(3, 17, 33)
    for dev in (gaussian(0.0), pcm_programming(0.0)):
        for cfg in (CrossbarConfig(8, 8), CrossbarConfig(mapping="offset"), CrossbarConfig(4, 4, scaling="tile")):
            assert torch.equal(program_matrices(w, dev, cfg, gen()), w)


def test_tile_scales_per_column_and_per_tile():
    w = torch.zeros(1, 4, 6)
    w[0, 0, 1], w[0, 0, 4], w[0, 3, 5] = -2.0, 5.0, 7.0
    s = tile_scales(w, CrossbarConfig(tile_rows=3, tile_cols=2))  # blocks of inputs [0:3], [3:6]
    assert s[0, 0].tolist() == [2.0, 5.0] and s[0, 3].tolist() == [0.0, 7.0]
    st = tile_scales(w, CrossbarConfig(tile_rows=3, tile_cols=2, scaling="tile"))
    assert st[0, 0].tolist() == st[0, 1].tolist() == [2.0, 5.0]  # outputs 0-1 share a tile
    assert st[0, 2].tolist() == st[0, 3].tolist() == [0.0, 7.0]


def test_pcm_noise_follows_published_sigma_at_full_scale():
    # every weight at +max: G+ = g_max, G- = 0; sigma(G+) = 0.26348 + 1.9650 - 1.1731 uS (x = 1)
    # and sigma(G-) = 0.26348 uS clipped at zero conductance
    w = torch.ones(1, 1, 200_000)
    out = program_matrices(w, pcm_programming(1.0), CrossbarConfig(tile_rows=200_000), gen())
    g_pos_err_sigma = (0.26348 + 1.9650 - 1.1731) / 25.0
    # G- noise is a half-normal after clipping at 0: mean sigma*sqrt(2/pi), var sigma^2 (1 - 1/pi) ... on weight
    s0 = 0.26348 / 25.0
    expected_var = g_pos_err_sigma ** 2 + s0 ** 2 * (0.5 - 1 / (2 * torch.pi))
    # G- after clamp: E = s0/sqrt(2 pi); it lowers the weight on average
    assert abs(float((out - w).mean()) + s0 / (2 * torch.pi) ** 0.5) < 5 * expected_var ** 0.5 / 200_000 ** 0.5
    assert abs(float((out - w).var()) / expected_var - 1) < 0.02


def test_nan_weights_are_refused():
    w = torch.randn(1, 4, 4)
    w[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        program_matrices(w, gaussian(0.1), CrossbarConfig(), gen())


# ------------------------------------------------------------------ models and selection

@pytest.mark.parametrize("arch", ["olmoe", "qwen2_moe", "mixtral"])
def test_roles_cover_stacked_experts_and_routers(tiny_models, arch):
    model = load_model(str(tiny_models[arch]), "cpu")
    targets = {t.name: t for t in find_targets(model)}
    roles = {t.role for t in targets.values()}
    assert {"attention", "experts", "router", "embeddings", "lm_head"} <= roles
    experts = [t for t in targets.values() if t.role == "experts"]
    assert experts and all(t.param.ndim == 3 for t in experts)
    routers = [t for t in targets.values() if t.role == "router"]
    assert len(routers) == model.config.num_hidden_layers
    assert all("router" in type(m).__name__.lower() for n, m in model.named_modules() if n.endswith("mlp.gate"))
    if arch == "qwen2_moe":
        assert "shared_expert" in roles
    assert "other" not in roles, [t.name for t in targets.values() if t.role == "other"]


@pytest.mark.parametrize("arch", ["olmoe", "qwen2_moe", "mixtral"])
def test_noise_reaches_every_selected_matrix_and_restores(tiny_models, arch):
    p = Params(model=str(tiny_models[arch]), level=0.05, roles=["experts", "router"], layers=[1], **FAST)
    model = load_model(p.model, "cpu")
    chosen = selected_targets(p, model)
    assert {t.role for t in chosen} == {"experts", "router"} and {t.layer for t in chosen} == {1}
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    with restored(chosen):
        program_targets_(chosen, p.device_model(), p.crossbar, seed=0)
        names = {t.name for t in chosen}
        for n, q in model.named_parameters():
            if n in names:
                changed = (q != before[n]).reshape(q.shape[0], -1).any(-1) if q.ndim == 3 else (q != before[n]).any()
                assert bool(changed.all()), f"{n}: not every expert matrix was perturbed"
            else:
                assert torch.equal(q, before[n]), f"{n} changed but was not selected"
    for n, q in model.named_parameters():
        assert torch.equal(q, before[n])


def test_each_expert_is_scaled_to_its_own_tiles(tiny_models):
    model = load_model(str(tiny_models["olmoe"]), "cpu")
    t = next(t for t in find_targets(model) if t.name.endswith("layers.0.mlp.experts.down_proj"))
    w = t.matrices().clone()
    w[0] *= 1e-3  # expert 0 tiny, the others as they are
    out = program_matrices(w, gaussian(0.05), CrossbarConfig(), gen())
    err0 = (out[0] - w[0]).std() / w[0].abs().amax(-1).mean()
    err1 = (out[1] - w[1]).std() / w[1].abs().amax(-1).mean()
    assert 0.5 < float(err0 / err1) < 2.0  # relative noise is the same: expert 0 did not borrow expert 1's scale


def test_selection_errors_are_clear(tiny_models):
    model = load_model(str(tiny_models["olmoe"]), "cpu")
    targets = find_targets(model)
    with pytest.raises(ValueError, match="matches no weight"):
        select_targets(targets, include=["*.nonexistent"])
    with pytest.raises(ValueError, match=r"layers \[7\] do not exist"):
        select_targets(targets, roles=["experts"], layers=[7])
    with pytest.raises(ValueError, match="unknown role"):
        select_targets(targets, roles=["ffn"])


def test_evaluation_shorter_than_one_window_is_refused_at_config_time():
    with pytest.raises(ValueError, match=r"eval_tokens \(256\) must exceed seq_len \(256\)"):
        Params(eval_tokens=256, seq_len=256, device="cpu")


# ------------------------------------------------------------------ trials

def test_same_seed_same_weights_bitwise(tiny_models):
    p = Params(model=str(tiny_models["qwen2_moe"]), noise="pcm_programming", level=1.0, **FAST)
    model = load_model(p.model, "cpu")
    chosen = selected_targets(p, model)

    def noisy(seed):
        with restored(chosen):
            program_targets_(chosen, p.device_model(), p.crossbar, seed)
            return [t.param.detach().clone() for t in chosen]

    a, b, c = noisy(3), noisy(3), noisy(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_level_zero_gives_exactly_clean_perplexity(tiny_models):
    for noise in ("gaussian", "pcm_programming"):
        r = run_trial(Params(model=str(tiny_models["mixtral"]), noise=noise, level=0.0, **FAST), seed=5)
        assert r["perplexity"] == r["clean_perplexity"] and r["weight_rel_error"] == 0.0


def test_bundled_model_perplexity_rises_with_noise():
    base = dict(eval_tokens=2048, seq_len=128, device="cpu")
    ppl = {lvl: [run_trial(Params(level=lvl, **base), seed=s)["perplexity"] for s in (0, 1)] for lvl in (0, 0.05, 0.1)}
    means = [sum(v) / len(v) for v in ppl.values()]
    assert means[0] < means[1] < means[2]
    assert 10 < means[0] < 40  # the bundled model is a real language model, not random weights


def test_user_checkpoint_through_cli_serial_and_dask_agree(tiny_models, tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text("""
[experiment]
name = "tiny"
kind = "noise_injection"
seeds = 2
[params]
device = "cpu"
eval_tokens = 600
seq_len = 64
[sweep]
level = [0.0, 0.1]
""")
    model = str(tiny_models["olmoe"])
    assert main(["sweep", str(cfg), "--model", model, "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert main(["sweep", str(cfg), "--model", model, "--out", str(tmp_path / "d"), "--workers", "2",
                 "--no-progress"]) == 0
    a = simcim.load(tmp_path / "s").set_index("trial_id").sort_index()
    b = simcim.load(tmp_path / "d").set_index("trial_id").sort_index()
    assert list(a.index) == list(b.index) and len(a) == 4
    assert (a["perplexity"] == b["perplexity"]).all(), (a["perplexity"] - b["perplexity"]).abs().max()
    assert (a["model"] == model).all()


def test_params_are_a_frozen_dataclass():
    p = Params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.level = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------ time after programming

def test_drift_compensation_restores_the_mean_decay():
    torch.manual_seed(1)
    w = torch.randn(2, 64, 256)
    from simcim.noise_models.presets import device_model

    drift_only = device_model("pcm", 0.0)  # level 0: programming and read noise off, drift at full strength
    year = 365 * 86400.0
    plain = program_matrices(w, drift_only, CrossbarConfig(128, 32), gen(7), year)
    comp = program_matrices(w, drift_only, CrossbarConfig(128, 32), gen(7), year, drift_compensation="tile")
    gain = lambda out: float((out * w).sum() / (w * w).sum())
    assert gain(plain) < 0.75  # G(t) = G0 (t/t0)^-nu with nu ~ 0.05-0.1 over a year: ~40% lower
    assert abs(gain(comp) - 1) < 0.02
    assert float((comp - w).norm() / w.norm()) < float((plain - w).norm() / w.norm()) / 3
    # at t = 0 there is nothing to compensate
    assert torch.equal(program_matrices(w, drift_only, CrossbarConfig(128, 32), gen(7), 0.0),
                       program_matrices(w, drift_only, CrossbarConfig(128, 32), gen(7), 0.0, "column"))


def test_compensation_without_read_effects_changes_nothing():
    w = torch.randn(1, 8, 40)
    a = program_matrices(w, gaussian(0.05), CrossbarConfig(16, 4), gen(3), 3600.0)
    b = program_matrices(w, gaussian(0.05), CrossbarConfig(16, 4), gen(3), 3600.0, drift_compensation="tile")
    assert torch.equal(a, b)


def test_same_chip_read_at_two_times_shares_its_programming(tiny_models):
    p0 = Params(model=str(tiny_models["olmoe"]), noise="pcm", level=1.0, t_inference=1.0, **FAST)
    p1 = dataclasses.replace(p0, t_inference=86400.0)
    model = load_model(p0.model, "cpu")
    chosen = selected_targets(p0, model)
    clean = torch.cat([t.param.detach().flatten() for t in chosen])

    def error(p, seed):
        with restored(chosen):
            program_targets_(chosen, p.device_model(), p.crossbar, seed=seed, t_inference=p.t_inference)
            return torch.cat([t.param.detach().flatten() for t in chosen]) - clean

    e_second, e_day, e_day_other_chip = error(p0, 2), error(p1, 2), error(p1, 3)
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    # a day later the same chip still carries its programming error; another chip does not
    assert corr(e_second, e_day) > corr(e_second, e_day_other_chip) + 0.1
    assert (clean + e_day).norm() < (clean + e_second).norm()  # and it has drifted toward zero


def test_calibrated_model_file_as_noise(tiny_models, tmp_path):
    from pathlib import Path

    from simcim.noise_models.calibrate import calibrate

    curve = Path(__file__).parent / "data" / "pcm_prog_sigma_nandakumar2019.csv"
    path = calibrate(curve).save(tmp_path / "chip.json")
    base = dict(model=str(tiny_models["olmoe"]), noise=str(path), **FAST)
    noisy = run_trial(Params(level=1.0, **base), seed=0)
    assert noisy["weight_rel_error"] > 0 and "calibrated" in noisy["device_model"]
    clean = run_trial(Params(level=0.0, **base), seed=0)
    assert clean["perplexity"] == clean["clean_perplexity"]
    with pytest.raises(ValueError, match="calibrated device-model file not found"):
        Params(noise=str(tmp_path / "absent.json"))
