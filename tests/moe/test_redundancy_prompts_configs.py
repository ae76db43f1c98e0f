"""Module redundancy, prompt strategies, the moe_noise Params checks and the bundled moe_* configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from simcim.crossbar import CrossbarConfig, program_targets_
from simcim.evaluate import perplexity
from simcim.experiments.config import ConfigError, load_config
from simcim.models import load_model
from simcim.moe.experiment import Params
from simcim.moe.prompts import prefixed_perplexity, prompt_text
from simcim.moe.redundancy import add_redundant_copies_, redundant_layers
from simcim.moe.romer import Programming
from simcim.noise_models.presets import gaussian
from simcim.targets import WeightTarget

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("experiments", "configs").glob("moe_*.toml"))


def test_redundant_layers_shallow_and_deep():
    assert redundant_layers(16, 3, "shallow") == [0, 1, 2]
    assert redundant_layers(16, 3, "deep") == [13, 14, 15]
    with pytest.raises(ValueError, match="redundancy_depth"):
        redundant_layers(4, 5, "shallow")


@pytest.mark.parametrize("copies", [1, 4])
def test_averaged_copies_divide_the_noise_variance_by_k(copies):
    torch.manual_seed(0)
    layer0 = WeightTarget("layers.0.w", "mlp", torch.nn.Parameter(torch.randn(64, 2048)), 0, -1)
    layer1 = WeightTarget("layers.1.w", "mlp", torch.nn.Parameter(torch.randn(64, 2048)), 1, -1)
    clean = {t.name: t.param.data.clone() for t in (layer0, layer1)}
    level, cfg = 0.05, CrossbarConfig(tile_rows=2048)
    program_targets_([layer0, layer1], gaussian(level), cfg, seed=0)
    extra = add_redundant_copies_([layer0, layer1], [0], copies, clean,
                                  Programming(gaussian(level), cfg, seed=0, t_inference=0.0))
    assert extra == (copies - 1) * layer0.param.numel()
    for t, k in ((layer0, copies), (layer1, 1)):
        rel = ((t.param.data - clean[t.name]).std(-1) / clean[t.name].abs().amax(-1)).mean()
        assert float(rel) == pytest.approx(level / k ** 0.5, rel=0.05)


def test_zero_noise_copies_are_exact():
    t = WeightTarget("layers.0.w", "mlp", torch.nn.Parameter(torch.randn(8, 16)), 0, -1)
    clean = {t.name: t.param.data.clone()}
    add_redundant_copies_([t], [0], 3, clean, Programming(gaussian(0.0), CrossbarConfig(), 0, 0.0))
    torch.testing.assert_close(t.param.data, clean[t.name], rtol=1e-6, atol=1e-7)


def test_prompt_prefix_is_conditioning_only(tiny_models):
    model = load_model(str(tiny_models["olmoe"]), "cpu", "float32")
    ids = torch.randint(2, 2048, (300,), generator=torch.Generator().manual_seed(0))
    plain = perplexity(model, ids, 64, 4)
    assert prefixed_perplexity(model, ids, 64, 4, torch.zeros(0, dtype=torch.long)) == plain
    prefixed = prefixed_perplexity(model, ids, 64, 4, torch.tensor([5, 6, 7]))
    assert prefixed != plain and prefixed < 10 * plain
    assert prompt_text("few_shot", 3).count("Example:\n") == 3
    assert prompt_text("reasoning").startswith("Read the following text")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        prefixed_perplexity(model, ids, 250, 4, torch.arange(10))


def test_params_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="digital_router"):
        Params(repair="digital_router", roles=["experts"])
    with pytest.raises(ValueError, match="prompt_template"):
        Params(prompt="template")
    with pytest.raises(ValueError, match="replace_threshold"):
        Params(repair="romer", replace_threshold=2.0)
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nkind = "moe_noise"\n[params]\nrepair = "magic"\n')
    with pytest.raises(ConfigError, match="params.repair"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_bundled_moe_configs_validate(path):
    cfg = load_config(path)
    trials = cfg.trials()
    assert cfg.kind == "moe_noise" and len(cfg.seeds) >= 5 and trials
    model = "bundled-64e" if path.stem.endswith("_64e") else "bundled"
    assert {t.params.model for t in trials} == {model}
    if model == "bundled-64e":  # the same experiment as the first model's config, on the second model
        first = load_config(path.with_name(path.stem.removesuffix("_64e") + ".toml")).trials()
        same = [dataclasses.replace(t.params, model="bundled-64e") for t in first]
        assert [(t.params, t.seed) for t in trials] == [(p, t.seed) for p, t in zip(same, first)]


def test_random_checkpoint_has_the_real_olmoe_shape(tmp_path):
    from transformers import AutoModelForCausalLM

    from simcim.moe.random_checkpoint import build_config, write_random_checkpoint

    cfg = build_config("olmoe-1b-7b")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_experts, cfg.num_experts_per_tok,
            cfg.intermediate_size, cfg.vocab_size, cfg.num_attention_heads) == (2048, 16, 64, 8, 1024, 50304, 16)
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    assert 6.8e9 < n < 7.0e9  # OLMoE-1B-7B: 6.9B parameters in total
    write_random_checkpoint("olmoe-small", tmp_path / "small")
    model = load_model(str(tmp_path / "small"), "cpu", "auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="arch"):
        build_config("gpt-5")


def test_bench_reports_time_per_trial_against_no_repair(tiny_models, tmp_path, capsys):
    from simcim.experiments.config import Trial
    from simcim.experiments.runner import run_trials
    from simcim.moe.bench import main as bench_main

    fast = dict(model=str(tiny_models["olmoe"]), device="cpu", dtype="float32", eval_tokens=200, seq_len=64,
                calib_tokens=128, diag_tokens=0, level=0.05)
    trials = [Trial("moe_noise", Params(repair=r, **fast), s) for r in ("none", "romer") for s in (0, 1)]
    run_trials(trials, tmp_path / "run", progress=False)
    assert bench_main([str(tmp_path / "run"), "--trials-csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "ratio_to_none" in out and "romer" in out
    import pandas as pd

    table = pd.read_csv(tmp_path / "run" / "bench_times.csv")
    assert float(table.loc[table["repair"] == "none", "ratio_to_none"].iloc[0]) == 1.0
    assert len(pd.read_csv(tmp_path / "t.csv")) == 4
