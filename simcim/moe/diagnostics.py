"""Router diagnostics: which experts each token is sent to, read with forward hooks.

A ``RouterRecorder`` hooks every top-k router of a model (transformers 5 routers return
``(router_logits, scores, indices)``), keeps each layer's logits and chosen experts on the CPU,
and never changes what the model computes. ``routing_stats`` turns a recording into the
numbers a trial reports, per layer:

  * ``freq[e]``: fraction of tokens that have expert ``e`` in their top-k set (sums to k);
  * load CV: population std / mean of ``freq``; max/mean: ``max(freq) / mean(freq)``;
  * routing entropy: mean over tokens of the entropy (nats) of softmax(router logits);
  * top-k mismatch: fraction of tokens whose top-k set differs from a reference recording
    (the clean model on the same tokens);
  * logit mean / std over all tokens and experts, and the mean margin between the k-th and
    (k+1)-th largest logit of a token (how close routing decisions are to flipping);
  * against a reference on the same tokens, the logit shift d = logits - reference split into
    a per-expert systematic part (``logit_bias_std``: std over experts of the token-mean of d)
    and what is left per token (``logit_jitter_std``: std of d minus its expert mean). A
    per-expert affine logit map can undo the first, not the second.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class Router:
    """One top-k router: its module, dotted name, decoder layer, expert count and k."""

    name: str
    module: nn.Module
    layer: int
    num_experts: int
    top_k: int


def find_routers(model: nn.Module) -> list[Router]:
    """Every top-k expert router of the model, in layer order.

    A router is a module whose class name contains "router" (``OlmoeTopKRouter``,
    ``MixtralTopKRouter``, ``DeepseekV3TopkRouter``...) with a 2-D ``weight`` [experts, hidden]
    and a ``top_k``; shared-expert gates are plain ``nn.Linear`` and are not routers.
    """
    routers = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if "router" not in type(m).__name__.lower() or not isinstance(w, torch.Tensor) or w.ndim != 2:
            continue
        top_k = getattr(m, "top_k", None)
        if not isinstance(top_k, int):
            raise ValueError(f"router {name} ({type(m).__name__}) has no integer top_k; unsupported router type")
        match = _LAYER_RE.search(name + ".")
        routers.append(Router(name, m, int(match.group(1)) if match else len(routers), int(w.shape[0]), top_k))
    return sorted(routers, key=lambda r: r.layer)


def require_routers(model: nn.Module) -> list[Router]:
    routers = find_routers(model)
    if not routers:
        raise ValueError(f"model {type(model).__name__} has no top-k expert router: it is not a supported MoE model")
    return routers


def split_router_output(router: Router, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [tokens, experts], indices [tokens, k]) from a router's forward output."""
    if not (isinstance(output, tuple) and len(output) == 3):
        raise ValueError(f"router {router.name} ({type(router.module).__name__}) returned "
                         f"{type(output).__name__}, expected (logits, scores, indices) (transformers 5 routers)")
    return output[0], output[2]


class RouterRecorder:
    """Context manager that records every router's logits and top-k indices during forwards.

    Recording is per forward call and appended, so several batches accumulate; ``recording()``
    concatenates them. Hooks only read, so the model's outputs are unchanged.
    """

    def __init__(self, model: nn.Module, routers: list[Router] | None = None) -> None:
        self.routers = routers if routers is not None else require_routers(model)
        self._logits: dict[int, list[torch.Tensor]] = {r.layer: [] for r in self.routers}
        self._indices: dict[int, list[torch.Tensor]] = {r.layer: [] for r in self.routers}
        self._handles: list[Any] = []

    def _hook(self, router: Router):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            logits, indices = split_router_output(router, output)
            self._logits[router.layer].append(logits.detach().float().reshape(-1, router.num_experts).cpu())
            self._indices[router.layer].append(indices.detach().reshape(-1, router.top_k).cpu())
        return hook

    def __enter__(self) -> RouterRecorder:
        # hooks run in registration order, each seeing the previous one's output: a recorder
        # entered after a logit repair records the repaired routing, which is what the model uses
        for r in self.routers:
            self._handles.append(r.module.register_forward_hook(self._hook(r)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def recording(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """layer -> (logits [tokens, experts] float32, indices [tokens, k])."""
        out = {}
        for r in self.routers:
            if not self._logits[r.layer]:
                raise ValueError(f"router {r.name} saw no tokens: run a forward pass inside the recorder")
            out[r.layer] = (torch.cat(self._logits[r.layer]), torch.cat(self._indices[r.layer]))
        return out


@dataclasses.dataclass(frozen=True)
class LayerRouting:
    """Routing statistics of one layer (definitions in the module docstring)."""

    layer: int
    freq: list[float]
    load_cv: float
    load_max_over_mean: float
    routing_entropy: float
    topk_mismatch: float | None
    logit_mean: float
    logit_std: float
    logit_margin: float
    logit_bias_std: float | None = None
    logit_jitter_std: float | None = None


def expert_frequency(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Fraction of tokens whose top-k set contains each expert ([experts], sums to k)."""
    counts = torch.zeros(num_experts, dtype=torch.float64)
    # a token lists an expert at most once, so counting index occurrences counts tokens
    counts.index_add_(0, indices.reshape(-1).long(), torch.ones(indices.numel(), dtype=torch.float64))
    return counts / indices.shape[0]


def layer_routing(layer: int, logits: torch.Tensor, indices: torch.Tensor,
                  reference_indices: torch.Tensor | None = None,
                  reference_logits: torch.Tensor | None = None) -> LayerRouting:
    num_experts, k = logits.shape[-1], indices.shape[-1]
    freq = expert_frequency(indices, num_experts)
    mean = freq.mean()
    cv = float(freq.std(unbiased=False) / mean) if mean > 0 else float("nan")
    lg = logits.double()
    logp = torch.log_softmax(lg, dim=-1)
    entropy = float(-(logp.exp() * logp).sum(-1).mean())
    mismatch = None
    if reference_indices is not None:
        if reference_indices.shape != indices.shape:
            raise ValueError(f"layer {layer}: reference routing has shape {tuple(reference_indices.shape)}, "
                             f"this one {tuple(indices.shape)}; record both on the same tokens")
        same = (indices.sort(-1).values == reference_indices.sort(-1).values).all(-1)
        mismatch = float(1.0 - same.double().mean())
    bias_std = jitter_std = None
    if reference_logits is not None:
        shift = lg - reference_logits.double()
        bias = shift.mean(0)
        bias_std, jitter_std = float(bias.std(unbiased=False)), float((shift - bias).std(unbiased=False))
    if k < num_experts:
        top = lg.topk(k + 1, dim=-1).values
        margin = float((top[:, k - 1] - top[:, k]).mean())
    else:
        margin = float("nan")
    return LayerRouting(layer=layer, freq=freq.tolist(), load_cv=cv, load_max_over_mean=float(freq.max() / mean),
                        routing_entropy=entropy, topk_mismatch=mismatch, logit_mean=float(lg.mean()),
                        logit_std=float(lg.std(unbiased=False)), logit_margin=margin, logit_bias_std=bias_std,
                        logit_jitter_std=jitter_std)


def routing_stats(recording: dict[int, tuple[torch.Tensor, torch.Tensor]],
                  reference: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[LayerRouting]:
    """Per-layer statistics of a recording, with top-k mismatch against ``reference`` when given."""
    out = []
    for layer, (logits, indices) in sorted(recording.items()):
        ref_logits = ref = None
        if reference is not None:
            if layer not in reference:
                raise ValueError(f"reference recording has no layer {layer}")
            ref_logits, ref = reference[layer]
        out.append(layer_routing(layer, logits, indices, ref, ref_logits))
    return out


def routing_metrics(stats: list[LayerRouting], prefix: str = "") -> dict[str, float | list[float]]:
    """Flat trial metrics: means over layers plus per-layer lists (and all frequencies, layer-major)."""
    def mean(xs: list[float]) -> float:
        return float(sum(xs) / len(xs))

    out: dict[str, float | list[float]] = {
        f"{prefix}load_cv": mean([s.load_cv for s in stats]),
        f"{prefix}load_max_over_mean": mean([s.load_max_over_mean for s in stats]),
        f"{prefix}routing_entropy": mean([s.routing_entropy for s in stats]),
        f"{prefix}logit_std": mean([s.logit_std for s in stats]),
        f"{prefix}logit_margin": mean([s.logit_margin for s in stats]),
        f"{prefix}load_cv_per_layer": [s.load_cv for s in stats],
        f"{prefix}expert_freq": [f for s in stats for f in s.freq],
    }
    if all(s.topk_mismatch is not None for s in stats):
        out[f"{prefix}topk_mismatch"] = mean([s.topk_mismatch for s in stats])
        out[f"{prefix}topk_mismatch_per_layer"] = [s.topk_mismatch for s in stats]
        out[f"{prefix}logit_bias_std"] = mean([s.logit_bias_std for s in stats])
        out[f"{prefix}logit_jitter_std"] = mean([s.logit_jitter_std for s in stats])
    return out


@torch.no_grad()
def record_routing(model: nn.Module, ids: torch.Tensor, seq_len: int, batch_size: int,
                   routers: list[Router] | None = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Run ``ids`` through the model in windows of ``seq_len`` and record every router."""
    device = next(model.parameters()).device
    n = ids.numel() // seq_len
    if n < 1:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    windows = ids[: n * seq_len].view(n, seq_len)
    with RouterRecorder(model, routers) as rec:
        for batch in _batches(windows, batch_size):
            model(input_ids=batch.to(device))
    return rec.recording()


def _batches(windows: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, windows.shape[0], batch_size):
        yield windows[i:i + batch_size]
