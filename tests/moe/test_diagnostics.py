"""Router diagnostics: exact values on a router whose load is known, and hooks that change nothing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simcim.models import load_model
from simcim.moe.diagnostics import (
    RouterRecorder,
    expert_frequency,
    find_routers,
    record_routing,
    routing_metrics,
    routing_stats,
)

# token logits; with an identity router weight the logits are the hidden states themselves
TOKENS = [[3.0, 2.0, 1.0, 0.0],   # top-2 {0, 1}
          [0.0, 1.0, 2.0, 3.0],   # {2, 3}
          [3.0, 0.0, 2.0, 1.0],   # {0, 2}
          [1.0, 3.0, 2.0, 0.0]]   # {1, 2}
REFERENCE = [[2.0, 3.0, 1.0, 0.0],  # {0, 1}: same set, other order
             [0.0, 3.0, 2.0, 1.0],  # {1, 2}: differs
             [3.0, 0.0, 2.0, 1.0],  # same
             [1.0, 3.0, 2.0, 0.0]]  # same


def known_router_model() -> nn.Module:
    from transformers import OlmoeConfig
    from transformers.models.olmoe.modeling_olmoe import OlmoeTopKRouter

    router = OlmoeTopKRouter(OlmoeConfig(hidden_size=4, num_experts=4, num_experts_per_tok=2))
    with torch.no_grad():
        router.weight.copy_(torch.eye(4))
    mlp = nn.Module()
    mlp.gate = router
    block = nn.Module()
    block.mlp = mlp
    model = nn.Module()
    model.layers = nn.ModuleList([block])
    return model


def record(model: nn.Module, tokens: list[list[float]]):
    (router,) = find_routers(model)
    with RouterRecorder(model) as rec:
        router.module(torch.tensor(tokens))
    return rec.recording()


def test_every_diagnostic_on_a_router_with_known_load():
    model = known_router_model()
    (router,) = find_routers(model)
    assert (router.name, router.layer, router.num_experts, router.top_k) == ("layers.0.mlp.gate", 0, 4, 2)
    (s,) = routing_stats(record(model, TOKENS), reference=record(model, REFERENCE))
    assert s.freq == [0.5, 0.5, 0.75, 0.25]  # expert 2 in three top-2 sets of four tokens, expert 3 in one
    assert s.load_cv == pytest.approx(math.sqrt((0 + 0 + 0.25 ** 2 + 0.25 ** 2) / 4) / 0.5, rel=1e-12)
    assert s.load_max_over_mean == pytest.approx(1.5, rel=1e-12)
    z = sum(math.exp(v) for v in (3, 2, 1, 0))  # every token's logits are a permutation of 3, 2, 1, 0
    entropy = -sum(math.exp(v) / z * (v - math.log(z)) for v in (3, 2, 1, 0))
    assert s.routing_entropy == pytest.approx(entropy, rel=1e-12)
    assert s.topk_mismatch == pytest.approx(0.25, rel=1e-12)
    assert s.logit_mean == pytest.approx(1.5, rel=1e-12)
    assert s.logit_std == pytest.approx(math.sqrt(1.25), rel=1e-12)
    assert s.logit_margin == pytest.approx(1.0, rel=1e-12)  # 2nd largest (2) minus 3rd largest (1)
    # shift d = TOKENS - REFERENCE: token 0 (1, -1, 0, 0), token 1 (0, -2, 0, 2), tokens 2, 3 zero
    bias = [0.25, -0.75, 0.0, 0.5]
    assert s.logit_bias_std == pytest.approx(math.sqrt(sum(b * b for b in bias) / 4 - (sum(bias) / 4) ** 2))
    d = [[1, -1, 0, 0], [0, -2, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]]
    resid = [d[t][e] - bias[e] for t in range(4) for e in range(4)]
    mean_r = sum(resid) / 16
    assert s.logit_jitter_std == pytest.approx(math.sqrt(sum((r - mean_r) ** 2 for r in resid) / 16), rel=1e-12)
    m = routing_metrics([s])
    assert m["expert_freq"] == [0.5, 0.5, 0.75, 0.25] and m["topk_mismatch"] == pytest.approx(0.25)


def test_balanced_load_has_zero_cv():
    idx = torch.tensor([[0, 1], [2, 3], [0, 2], [1, 3]])
    f = expert_frequency(idx, 4)
    assert f.tolist() == [0.5] * 4
    (s,) = routing_stats({0: (torch.zeros(4, 4), idx)})
    assert s.load_cv == 0.0 and s.load_max_over_mean == 1.0 and s.topk_mismatch is None


def test_mismatched_reference_shapes_are_an_error():
    model = known_router_model()
    with pytest.raises(ValueError, match="same tokens"):
        routing_stats(record(model, TOKENS), reference=record(model, TOKENS[:2]))


@pytest.mark.parametrize("arch", ["olmoe", "qwen2_moe", "mixtral", "deepseek_v3"])
def test_recorder_sees_every_layer_and_changes_no_output(moe_models, arch):
    model = load_model(str(moe_models[arch]), "cpu", "float32")
    routers = find_routers(model)
    assert [r.layer for r in routers] == [0, 1] and all(r.num_experts == 8 and r.top_k == 2 for r in routers)
    ids = torch.randint(0, 2048, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with RouterRecorder(model) as rec:
            hooked = model(input_ids=ids).logits
    assert torch.equal(plain, hooked)
    recording = rec.recording()
    for logits, indices in recording.values():
        assert logits.shape == (64, 8) and indices.shape == (64, 2)
    stats = routing_stats(recording, reference=recording)
    assert all(abs(sum(s.freq) - 2.0) < 1e-12 and s.topk_mismatch == 0.0 for s in stats)
    again = record_routing(model, ids.reshape(-1), 32, 2)
    assert all(torch.equal(again[k][1], recording[k][1]) for k in recording)


def test_model_without_router_is_an_error():
    from simcim.moe.diagnostics import require_routers

    with pytest.raises(ValueError, match="no top-k expert router"):
        require_routers(nn.Sequential(nn.Linear(4, 4)))
