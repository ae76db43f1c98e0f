"""The second bundled model (64 experts, top-8, OLMoE routing), its training command and the
router-input massive-activation measure."""

from __future__ import annotations

import json

import pytest
import torch

from simcim.bundled import MODEL_DIR, MOE64_DIR
from simcim.bundled.train import main as train_main
from simcim.bundled.train import parse_args
from simcim.evaluate import eval_token_ids, perplexity
from simcim.models import load_model, resolve_model_path
from simcim.moe.activations import router_input_channels
from simcim.moe.diagnostics import find_routers


def test_bundled_64e_resolves_and_has_olmoe_routing():
    assert resolve_model_path("bundled-64e") == MOE64_DIR
    model = load_model("bundled-64e", "cpu", "auto")
    cfg = model.config
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.norm_topk_prob) == (64, 8, False)
    routers = find_routers(model)
    assert [(r.num_experts, r.top_k) for r in routers] == [(64, 8)] * cfg.num_hidden_layers
    assert next(model.parameters()).dtype == torch.float32  # stored float16, evaluated in float32
    assert (MOE64_DIR / "train.log").is_file()
    assert not (MOE64_DIR / "tokenizer.json").exists()  # it reuses the first model's tokenizer


def test_bundled_64e_is_trained():
    model = load_model("bundled-64e", "cpu", "auto")
    ids = eval_token_ids("bundled-64e", model.config.vocab_size, None, 1025)
    assert torch.equal(ids, eval_token_ids("bundled", 2048, None, 1025))  # the same tokens as the first model
    ppl = perplexity(model, ids, 256, 4)
    assert ppl < 100, f"held-out perplexity {ppl:.1f}: not the trained model (uniform guessing is 2048)"


def test_train_presets_and_size_flags():
    args = parse_args(["--model", "bundled-64e"])
    assert (args.experts, args.top_k, args.hidden, args.intermediate, args.layers) == (64, 8, 128, 16, 4)
    assert args.out == MOE64_DIR
    args = parse_args(["--model", "bundled-64e", "--hidden", "256", "--layers", "8"])
    assert (args.hidden, args.layers, args.experts) == (256, 8, 64)
    assert parse_args([]).out == MODEL_DIR and parse_args([]).experts == 8
    with pytest.raises(SystemExit):
        parse_args(["--model", "bundled-64e", "--experts", "0"])


def test_train_command_writes_a_checkpoint_without_tokenizer(tmp_path, capsys):
    out = tmp_path / "m"
    train_main(["--model", "bundled-64e", "--device", "cpu", "--hidden", "16", "--intermediate", "4",
                "--layers", "1", "--heads", "2", "--experts", "8", "--top-k", "4", "--steps", "2",
                "--eval-every", "1", "--batch", "2", "--out", str(out)])
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_experts"], cfg["num_experts_per_tok"], cfg["norm_topk_prob"], cfg["dtype"]) == (8, 4, False,
                                                                                                   "float32")
    assert (out / "model.safetensors").is_file() and not (out / "tokenizer.json").exists()
    assert "valid ppl" in capsys.readouterr().out


def test_router_input_channels_find_a_massive_channel(tiny_models):
    model = load_model(str(tiny_models["olmoe"]), "cpu", "float32")
    ids = torch.randint(2, 2048, (256,), generator=torch.Generator().manual_seed(0))
    plain = router_input_channels(model, ids, 64, 4)
    assert len(plain) == model.config.num_hidden_layers and all(s.tokens == 256 for s in plain)
    assert max(s.channel_mean_over_rms for s in plain) < 3
    norm = model.model.layers[0].post_attention_layernorm
    handle = norm.register_forward_hook(lambda m, a, out: out + 40.0 * torch.eye(out.shape[-1])[5])
    try:
        massive = router_input_channels(model, ids, 64, 4)
    finally:
        handle.remove()
    assert massive[0].channel == 5 and massive[0].channel_mean_over_rms > 5
    assert router_input_channels(model, ids, 64, 4) == plain  # its own hooks are gone too
    with pytest.raises(ValueError, match="fewer than one window"):
        router_input_channels(model, ids[:10], 64, 4)


def test_scale_trials_time_both_kinds_on_a_reduced_random_checkpoint(tmp_path, capsys):
    from simcim.moe.random_checkpoint import build_config
    from simcim.moe.scale import main as scale_main

    assert build_config("olmoe-1b-7b", layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="layers 17"):
        build_config("olmoe-1b-7b", layers=17)
    out = tmp_path / "scale"
    assert scale_main(["--arch", "olmoe-small", "--layers", "1", "--device", "cpu", "--eval-tokens", "300",
                       "--seq-len", "64", "--diag-tokens", "128", "--trials", "2", "--profile", "--profile-top", "3",
                       "--out", str(out)]) == 0
    result = json.loads((out / "scale.json").read_text())
    assert result["parameters"] > 0 and [r["kind"] for r in result["kinds"]] == ["noise_injection", "moe_noise"]
    for row in result["kinds"]:
        assert row["next_program_s"] > 0 and row["next_eval_s"] > 0 and row["peak_memory_gib"] > 0
        assert row["eval_tokens_used"] == 256 and len(row["profile"]["top_ops"]) == 3
    assert "host syncs" in capsys.readouterr().out


def test_planted_massive_channel_keeps_the_function_and_shows_in_the_measure(tiny_models):
    from transformers import AutoModelForCausalLM

    from simcim.moe.activations import plant_massive_channels_

    model = AutoModelForCausalLM.from_pretrained(tiny_models["olmoe"], local_files_only=True,
                                                 dtype=torch.float32).eval()
    ids = torch.randint(2, 2048, (256,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids[None, :64]).logits
    plain = router_input_channels(model, ids, 64, 4)
    chosen = plant_massive_channels_(model, ids, 64, 16.0)
    assert sorted(chosen) == [s.layer for s in plain]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids[None, :64]).logits, before, rtol=1e-4, atol=1e-4)
    planted = router_input_channels(model, ids, 64, 4)
    for p, s in zip(planted, plain):
        assert p.channel == chosen[p.layer] and p.channel_mean_over_rms > 3 * s.channel_mean_over_rms
    with pytest.raises(ValueError, match="scale"):
        plant_massive_channels_(model, ids, 64, 0.0)
