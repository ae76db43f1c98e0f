"""The analog forward on whole models: stacked experts on their own tiles, only routed tokens, clear refusals."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from simcim.analog import AnalogForward, PeripheryConfig
from simcim.crossbar import CrossbarConfig
from simcim.experiments.cli import main
from simcim.models import load_model
from simcim.noise_injection import Params, restored, run_trial, selected_targets
from simcim.noise_models.presets import ideal
from simcim.targets import find_targets

FAST = dict(eval_tokens=300, seq_len=32, batch_size=4, device="cpu")
IDEAL = PeripheryConfig(dac_bits=16, adc_bits=16, adc_bound=64.0)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("arch", ["olmoe", "qwen2_moe", "mixtral"])
def test_ideal_periphery_reproduces_the_digital_model(tiny_models, arch):
    model = load_model(str(tiny_models[arch]), "cpu")
    p = Params(model=str(tiny_models[arch]), roles=["attention", "experts", "router", "shared_expert", "mlp",
                                                     "lm_head"], **FAST)
    targets = selected_targets(p, model)
    ids = torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(0))
    clean = logits(model, ids)
    with restored(targets):
        fwd = AnalogForward(model, targets, ideal(), CrossbarConfig(tile_rows=16), IDEAL, seed=0)
        with fwd:
            got = logits(model, ids)
        assert all(a.hits > 0 for a in fwd._armed.values())  # every selected matrix went through the periphery
    assert float((got - clean).abs().max() / clean.abs().max()) < 2e-3
    # and coarse converters do change it (the test would pass vacuously if nothing were intercepted)
    with restored(targets), AnalogForward(model, targets, ideal(), CrossbarConfig(tile_rows=16),
                                          PeripheryConfig(dac_bits=3, adc_bits=3), seed=0):
        assert float((logits(model, ids) - clean).abs().max() / clean.abs().max()) > 0.05


def test_each_expert_computes_only_its_routed_tokens_on_its_own_tiles(tiny_models, monkeypatch):
    import simcim.analog.model as amod

    model = load_model(str(tiny_models["olmoe"]), "cpu")
    targets = [t for t in find_targets(model) if t.role == "experts" and t.layer == 0]
    calls: list[tuple[str, int, int]] = []
    real = amod.AnalogForward._linear

    def spy(self, x, w, bias, armed, index):
        calls.append((armed.target.name, index, x.reshape(-1, x.shape[-1]).shape[0]))
        return real(self, x, w, bias, armed, index)

    monkeypatch.setattr(amod.AnalogForward, "_linear", spy)
    ids = torch.randint(0, 2048, (1, 40), generator=torch.Generator().manual_seed(1))
    routed = {}
    router = model.model.layers[0].mlp.gate

    def record(module, args, out) -> None:
        routed["idx"] = out[2]

    handle = router.register_forward_hook(record)
    with restored(targets), AnalogForward(model, targets, ideal(), CrossbarConfig(tile_rows=16), IDEAL, seed=0):
        logits(model, ids)
    handle.remove()
    counts = torch.bincount(routed["idx"].flatten(), minlength=8)
    gate_up = {i: n for name, i, n in calls if name.endswith("gate_up_proj")}
    down = {i: n for name, i, n in calls if name.endswith("down_proj")}
    assert gate_up == down == {i: int(c) for i, c in enumerate(counts) if c > 0}
    assert sum(gate_up.values()) == 40 * model.config.num_experts_per_tok  # tokens x top-k rows, no more


def test_trial_runs_with_device_read_noise_and_counts_saturation(tiny_models):
    p = Params(model=str(tiny_models["olmoe"]), noise="pcm", level=1.0, t_inference=3600.0, forward="analog",
               tile_rows=16, adc_bits=6, **FAST)
    a, b = run_trial(p, 0), run_trial(p, 0)
    assert a["perplexity"] == b["perplexity"]  # seeded: the same chip and the same reads
    assert 0 <= a["adc_saturation"] < 1 and a["perplexity"] > a["clean_perplexity"]
    c = run_trial(dataclasses.replace(p, adc_bits=3), 0)
    assert c["perplexity"] > a["perplexity"]


def test_programmed_read_noise_variance_follows_the_device_model(tiny_models):
    from simcim.noise_models.base import DeviceModel
    from simcim.noise_models.presets import PCM_READ
    from simcim.noise_models.read import ReadNoise

    model = load_model(str(tiny_models["olmoe"]), "cpu")
    t = next(t for t in find_targets(model) if t.name.endswith("layers.0.mlp.experts.down_proj"))
    read_only = DeviceModel("read", 25.0, (ReadNoise(**PCM_READ),))  # no programming noise, no drift: G = G_target
    clean = t.matrices().clone()
    with restored([t]):
        fwd = AnalogForward(model, [t], read_only, CrossbarConfig(tile_rows=16), PeripheryConfig(), seed=0,
                            t_inference=3600.0)
        armed = next(iter(fwd._armed.values()))
        assert torch.equal(t.matrices(), clean)  # read noise is not frozen into the weights
    # differential pair: the device carrying |u| = |w| / s has x = |u|; sigma_G / g_max = |u| Q(|u|) sqrt(ln(...))
    s = armed.scales.repeat_interleave(16, dim=-1)[..., : clean.shape[-1]]
    u = (clean / s).abs()
    q = torch.clamp(0.0088 / torch.clamp(u ** 0.65, min=1e-3), max=0.2)
    tf = ReadNoise(**PCM_READ).time_factor(3600.0)
    expected = (u * q * tf) ** 2
    assert torch.allclose(armed.read_var, expected, rtol=1e-4, atol=1e-12)
    assert float(expected.max()) == pytest.approx((0.0088 * tf) ** 2, rel=1e-5)  # a column max: x = 1, Q = 0.0088


def test_unmappable_parts_and_bad_settings_are_refused(tiny_models, tmp_path, capsys):
    model = load_model(str(tiny_models["olmoe"]), "cpu")
    emb = [t for t in find_targets(model) if t.role == "embeddings"]
    with pytest.raises(ValueError, match="embed_tokens.weight .embeddings. is a lookup table"):
        AnalogForward(model, emb, ideal(), CrossbarConfig(), PeripheryConfig(), seed=0)
    with pytest.raises(ValueError, match=r"tile_rows \(64\) is larger than every selected layer"):
        run_trial(Params(model=str(tiny_models["olmoe"]), forward="analog", tile_rows=64, **FAST), 0)
    for bad, match in (("dac_bits=0", "dac_bits"), ("adc_bits=17", "adc_bits"), ("adc_bound=0.0", "adc_bound"),
                       ('forward="digital"', "forward"), ("tile_rows=64", "tile_rows (64) is larger"),
                       ('roles=["embeddings"]', "embed_tokens.weight is an embedding lookup")):
        cfg = tmp_path / "c.toml"
        cfg.write_text('[experiment]\nname = "x"\nkind = "noise_injection"\n[params]\n'
                       f'model = "{tiny_models["olmoe"]}"\ndevice = "cpu"\nforward = "analog"\n')
        assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--set", f"params.{bad}"]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def test_a_weight_that_never_reaches_f_linear_is_named(tiny_models):
    model = load_model(str(tiny_models["olmoe"]), "cpu")
    t = next(t for t in find_targets(model) if t.role == "attention")
    lin = model.get_submodule(t.name.rsplit(".", 1)[0])
    with restored([t]):
        fwd = AnalogForward(model, [t], ideal(), CrossbarConfig(tile_rows=16), PeripheryConfig(), seed=0)
        lin.forward = lambda x: x @ lin.weight.t()  # a matmul the forward cannot see
        try:
            with pytest.raises(ValueError, match=f"{t.name} never reaches a linear layer"):
                fwd.check_mapped(torch.ones(1, 8, dtype=torch.long))
        finally:
            del lin.forward


@pytest.mark.parametrize("repair", ["romer", "digital_router", "redundancy"])
def test_moe_repairs_run_on_top_of_the_analog_forward(tiny_models, repair):
    from simcim.moe import experiment as moe

    p = moe.Params(model=str(tiny_models["olmoe"]), noise="pcm", level=1.0, forward="analog", tile_rows=16,
                   repair=repair, calib_tokens=256, diag_tokens=128, **FAST)
    m = moe.run_trial(p, 0)
    assert math.isfinite(m["perplexity"]) and 0 <= m["adc_saturation"] <= 1
    if repair == "romer":
        assert math.isfinite(m["unrepaired_perplexity"])
    fresh = dict(load_model.__wrapped__(p.model, "cpu").named_parameters())
    for name, q in load_model(p.model, "cpu").named_parameters():  # the clean weights are back
        assert torch.equal(q, fresh[name]), name


def test_a_matrix_rewritten_after_programming_is_remapped_before_the_next_forward(tiny_models):
    """ROMER writes a donor's copy into an expert's slice through ``.data``; the next forward maps that slice with
    its own full scale (an unchanged slice keeps its programmed scale, drift compensation included)."""
    model = load_model(str(tiny_models["olmoe"]), "cpu")
    t = next(t for t in find_targets(model) if t.name.endswith("layers.0.mlp.experts.down_proj"))
    ids = torch.randint(0, 2048, (1, 16), generator=torch.Generator().manual_seed(2))
    with restored([t]):
        fwd = AnalogForward(model, [t], ideal(), CrossbarConfig(tile_rows=16), IDEAL, seed=0)
        armed = next(iter(fwd._armed.values()))
        before = armed.scales.clone()
        t.param.data[3] *= 3.0
        with fwd:
            logits(model, ids)
        assert torch.allclose(armed.scales[3], 3 * before[3])
        assert torch.equal(armed.scales[:3], before[:3]) and torch.equal(armed.scales[4:], before[4:])
