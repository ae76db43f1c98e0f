"""ROMER: exact re-routing, percentile maps, replacement choices, zero-noise identity, end to end."""

from __future__ import annotations

import pytest
import torch

from simcim.crossbar import CrossbarConfig
from simcim.models import load_model
from simcim.moe.diagnostics import find_routers
from simcim.moe.experiment import Params, run_trial
from simcim.moe.romer import (
    LogitMaps,
    Programming,
    RomerConfig,
    choose_replacements,
    expert_parameters,
    percentile_maps,
    replace_experts_,
)
from simcim.noise_models.presets import gaussian

ARCHS = ["olmoe", "qwen2_moe", "mixtral", "deepseek_v3"]
FAST = dict(device="cpu", dtype="float32", eval_tokens=200, seq_len=64, batch_size=4, calib_tokens=128,
            diag_tokens=128)


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_logit_maps_reproduce_each_routers_own_routing(moe_models, arch):
    model = load_model(str(moe_models[arch]), "cpu", "float32")
    routers = find_routers(model)
    ids = torch.randint(0, 2048, (2, 32), generator=torch.Generator().manual_seed(1))
    identity = {r.layer: (torch.ones(r.num_experts), torch.zeros(r.num_experts)) for r in routers}
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with LogitMaps(routers, identity):
            mapped = model(input_ids=ids).logits
    assert torch.equal(plain, mapped)


def test_percentile_map_undoes_an_affine_distortion_per_expert():
    clean = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    scale = torch.tensor([2.0, 0.5, 1.0, 3.0])
    noisy = clean * scale + torch.tensor([1.0, -2.0, 0.0, 0.5])
    rec = {0: (noisy, torch.zeros(1000, 2, dtype=torch.long))}
    ref = {0: (clean, torch.zeros(1000, 2, dtype=torch.long))}
    s, b = percentile_maps(rec, ref, RomerConfig(replace=False))[0]
    torch.testing.assert_close(noisy * s + b, clean, atol=1e-4, rtol=0)
    # one map per layer cannot undo per-expert distortions, but it does match the pooled percentiles
    s, b = percentile_maps(rec, ref, RomerConfig(replace=False, norm_scope="layer"))[0]
    assert torch.equal(s, s[:1].expand(4)) and torch.equal(b, b[:1].expand(4))
    q = torch.tensor([0.05, 0.95])
    torch.testing.assert_close(torch.quantile((noisy * s + b).flatten(), q), torch.quantile(clean.flatten(), q),
                               atol=1e-4, rtol=0)


def test_choose_replacements_pairs_most_collapsed_with_most_active():
    clean = torch.tensor([0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25])
    noisy = torch.tensor([0.05, 0.60, 0.20, 0.10, 0.40, 0.25, 0.30, 0.10])
    cfg = RomerConfig(replace_threshold=0.5, replace_max_fraction=0.5)
    # under-activated: 0.05, 0.10, 0.10 < 0.125 (experts 0, 3, 7); donors by frequency: 1, 4, 6
    assert choose_replacements(noisy, clean, 2, cfg) == [(0, 1), (3, 4), (7, 6)]
    assert choose_replacements(noisy, clean, 2, RomerConfig(replace_max_fraction=0.125)) == [(0, 1)]
    assert choose_replacements(clean, clean, 2, cfg) == []  # nothing collapsed, nothing replaced


def test_replaced_expert_is_donor_on_its_own_devices(moe_models):
    model = load_model(str(moe_models["olmoe"]), "cpu", "float32")
    router = find_routers(model)[0]
    named = expert_parameters(model, router)
    clean = {n: p.data.clone() for n, p in named}
    try:
        exact = Programming(gaussian(0.0), CrossbarConfig(), seed=0, t_inference=0.0)
        replace_experts_(model, router, [(5, 2)], clean, set(clean), exact, copy_router_row=False)
        for n, p in named:
            assert torch.equal(p.data[5], clean[n][2]) and torch.equal(p.data[3], clean[n][3])
        noisy = Programming(gaussian(0.05), CrossbarConfig(), seed=0, t_inference=0.0)
        replace_experts_(model, router, [(5, 2)], clean, set(clean), noisy, copy_router_row=False)
        for n, p in named:
            err = p.data[5] - clean[n][2]
            rel = float(err.std() / clean[n][2].abs().amax(-1).mean())
            assert 0.02 < rel < 0.1  # programmed with 5% noise, not a bitwise copy of the donor
    finally:
        for n, p in named:
            p.data.copy_(clean[n])


def test_bad_romer_settings_are_errors():
    with pytest.raises(ValueError, match="norm_percentiles"):
        RomerConfig(norm_percentiles=(95.0, 5.0))
    with pytest.raises(ValueError, match="both off"):
        RomerConfig(replace=False, logit_norm=False)
    with pytest.raises(ValueError, match="norm_percentiles"):
        Params(repair="romer", norm_percentiles=[5.0])


@pytest.mark.parametrize("arch", ARCHS)
def test_romer_end_to_end_exact_at_zero_noise_and_restores_weights(moe_models, arch):
    """Zero noise, tolerance 1e-9 relative: the noisy routing is then the clean routing, so nothing
    is replaced and every logit map is exactly scale 1, shift 0. Under noise every step runs and
    the model's weights are restored afterwards."""
    path = str(moe_models[arch])
    m = run_trial(Params(model=path, level=0.0, repair="romer", **FAST), seed=0)
    assert m["romer_replaced_experts"] == 0 and m["topk_mismatch"] == 0.0
    assert m["perplexity"] == pytest.approx(m["clean_perplexity"], rel=1e-9)
    assert m["unrepaired_perplexity"] == pytest.approx(m["clean_perplexity"], rel=1e-9)

    model = load_model(path, "cpu", "float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    p = Params(model=path, level=0.3, repair="romer", replace_reference="uniform", replace_threshold=1.0, **FAST)
    m = run_trial(p, seed=3)
    assert m["romer_replaced_experts"] > 0  # the uniform reference always finds below-average experts
    for key in ("perplexity", "unrepaired_perplexity", "ppl_reduction_pct", "load_cv", "topk_mismatch"):
        assert torch.isfinite(torch.tensor(float(m[key]))), key
    assert m["topk_mismatch"] > 0 and len(m["expert_freq"]) == 2 * 8
    after = dict(load_model(path, "cpu", "float32").named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    if arch == "olmoe":
        assert run_trial(p, seed=3)["perplexity"] == m["perplexity"]  # same chip, same result
