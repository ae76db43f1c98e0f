"""ROMER: post-training repair of an MoE model whose weights sit on noisy crossbars.

ROMER (Zhou et al., 2026, "Expert Replacement and Router Calibration for Robust MoE LLMs on
Analog Compute-in-Memory Systems") has two steps, each switchable here:

1. **Expert replacement.** A noise-aware calibration pass (the programmed, noisy model on
   calibration text) measures each expert's activation frequency. Experts whose frequency
   collapsed are *under-activated*; each is overwritten by a copy of a high-frequency expert
   of the same layer, re-programmed onto the replaced expert's own (fresh, independent)
   devices from the donor's clean digital weights.
2. **Percentile-based router-logit normalization.** A second noise-aware pass (after any
   replacement) records the router logits; each expert's logits are then mapped by the affine
   map that sends their ``lo``/``hi`` percentiles onto the reference percentiles, and top-k
   routing is redone on the mapped logits.

Only the abstract is public, so these choices are ours (all are ``RomerConfig`` fields):

* under-activated: noisy frequency < ``replace_threshold`` x reference frequency, the
  reference being the clean model's frequency of that expert (``replace_reference="clean"``,
  the default: with no noise nothing is replaced) or the uniform load k/E (``"uniform"``);
  at most ``replace_max_fraction`` of a layer's experts, most collapsed first;
* donors: the experts with the highest noisy frequency that are not under-activated, the
  most active paired with the most collapsed, each donor used once;
* the replaced expert keeps its own router row (``replace_router="keep"``), so tokens the
  router still sends it get the donor's function; ``"donor"`` copies the donor's router row too;
* percentiles 5 and 95 (``norm_percentiles``), per expert (``norm_scope="expert"``; ``"layer"``
  uses one map for all experts of a layer), mapped onto the clean model's percentiles on the
  same calibration tokens (``norm_reference="clean"``: the identity when there is no noise);
  ``"pooled"`` maps every expert onto the noisy layer's pooled percentiles instead, which needs
  no clean model but also equalizes experts of a clean model;
* calibration text is the bundled corpus's train split, never the held-out evaluation text;
  all layers are calibrated from one pass (not layer by layer).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from simcim.crossbar import CrossbarConfig, program_matrices, target_seed
from simcim.moe.diagnostics import Router, expert_frequency, split_router_output
from simcim.noise_models.base import DeviceModel

Recording = dict[int, tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class RomerConfig:
    """Which ROMER steps run and how (see the module docstring for each choice)."""

    replace: bool = True
    logit_norm: bool = True
    replace_threshold: float = 0.5
    replace_reference: Literal["clean", "uniform"] = "clean"
    replace_max_fraction: float = 0.25
    replace_router: Literal["keep", "donor"] = "keep"
    norm_percentiles: tuple[float, float] = (5.0, 95.0)
    norm_scope: Literal["expert", "layer"] = "expert"
    norm_reference: Literal["clean", "pooled"] = "clean"

    def __post_init__(self) -> None:
        if not (self.replace or self.logit_norm):
            raise ValueError("RomerConfig: replace and logit_norm are both off; nothing to do")
        if not (0.0 < self.replace_threshold <= 1.0):
            raise ValueError(f"replace_threshold must be in (0, 1], got {self.replace_threshold}")
        if not (0.0 <= self.replace_max_fraction <= 0.5):
            raise ValueError(f"replace_max_fraction must be in [0, 0.5], got {self.replace_max_fraction}")
        lo, hi = self.norm_percentiles
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError(f"norm_percentiles must satisfy 0 <= lo < hi <= 100, got {self.norm_percentiles}")
        for name, value, allowed in (("replace_reference", self.replace_reference, ("clean", "uniform")),
                                     ("replace_router", self.replace_router, ("keep", "donor")),
                                     ("norm_scope", self.norm_scope, ("expert", "layer")),
                                     ("norm_reference", self.norm_reference, ("clean", "pooled"))):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")


# ----------------------------------------------------------------------------- routing from logits

def route_from_logits(router: Router, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) that ``router``'s own forward computes from these logits.

    Softmax top-k routers (OLMoE, Qwen2-MoE: optional renormalization; Mixtral: always
    renormalized) and DeepSeek-V3's sigmoid, group-limited router with a score correction bias.
    The test suite checks that identity logits reproduce each router exactly.
    """
    m, k = router.module, router.top_k
    if hasattr(m, "e_score_correction_bias"):  # DeepSeek-V3 style
        scores = logits.sigmoid()
        choice = scores + m.e_score_correction_bias
        groups, per = m.num_group, router.num_experts // m.num_group
        group_scores = choice.view(-1, groups, per).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=m.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(-1, groups, per).reshape(-1, router.num_experts)
        choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
        indices = torch.topk(choice, k=k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, indices)
        if m.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * m.routed_scaling_factor, indices
    probs = torch.softmax(logits.float(), dim=-1)
    top, indices = torch.topk(probs, k, dim=-1)
    if not hasattr(m, "norm_topk_prob"):  # Mixtral: always renormalized, scores stay float32
        return top / top.sum(dim=-1, keepdim=True), indices
    if m.norm_topk_prob:
        top = top / top.sum(dim=-1, keepdim=True)
    return top.to(logits.dtype), indices


class LogitMaps:
    """Forward hooks that replace each router's logits by ``scale * logits + shift`` and re-route.

    A context manager; also usable with ``install()``/``remove()``.
    """

    def __init__(self, routers: Sequence[Router], maps: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.routers = list(routers)
        self.maps = maps
        self._handles: list[Any] = []

    def _hook(self, router: Router, scale: torch.Tensor, shift: torch.Tensor) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits, _ = split_router_output(router, output)
            new = (logits.float() * scale + shift).to(logits.dtype)
            scores, indices = route_from_logits(router, new)
            return new, scores, indices
        return hook

    def install(self) -> LogitMaps:
        for r in self.routers:
            if r.layer in self.maps:
                dev = r.module.weight.device
                scale, shift = (t.to(dev, torch.float32) for t in self.maps[r.layer])
                self._handles.append(r.module.register_forward_hook(self._hook(r, scale, shift)))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> LogitMaps:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


# ----------------------------------------------------------------------------- step 2: logit maps

def _quantiles(x: torch.Tensor, qs: torch.Tensor, per_expert: bool) -> torch.Tensor:
    """[2, E] (per expert) or [2, 1] (whole layer) quantiles of logits [tokens, E]."""
    if per_expert:
        return torch.quantile(x, qs, dim=0)
    flat = x.reshape(-1)
    if flat.numel() > 1 << 24:  # torch.quantile's input limit; an even subsample keeps the percentiles
        flat = flat[:: math.ceil(flat.numel() / (1 << 24))]
    return torch.quantile(flat, qs).unsqueeze(-1)


def percentile_maps(noisy: Recording, reference: Recording | None, cfg: RomerConfig) -> dict[
        int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, (scale [E], shift [E]) sending the noisy logits' percentiles onto the reference's."""
    qs = torch.tensor(cfg.norm_percentiles, dtype=torch.float64) / 100.0
    maps = {}
    for layer, (logits, _) in noisy.items():
        x = logits.double()
        n_q = _quantiles(x, qs, cfg.norm_scope == "expert")
        if cfg.norm_reference == "clean":
            if reference is None or layer not in reference:
                raise ValueError(f"norm_reference='clean' needs a clean recording of layer {layer}")
            r_q = _quantiles(reference[layer][0].double(), qs, cfg.norm_scope == "expert")
        else:
            r_q = _quantiles(x, qs, False)
        n_span, r_span = n_q[1] - n_q[0], r_q[1] - r_q[0]
        ok = n_span > 1e-12
        scale = torch.where(ok, r_span / torch.where(ok, n_span, torch.ones_like(n_span)), torch.ones_like(n_span))
        shift = r_q[0] - n_q[0] * scale
        e = x.shape[-1]
        maps[layer] = (scale.expand(e).float().clone(), shift.expand(e).float().clone())
    return maps


# ----------------------------------------------------------------------------- step 1: replacement

def choose_replacements(noisy_freq: torch.Tensor, reference_freq: torch.Tensor, top_k: int,
                        cfg: RomerConfig) -> list[tuple[int, int]]:
    """(under-activated expert, donor) pairs of one layer."""
    e = noisy_freq.numel()
    ref = reference_freq if cfg.replace_reference == "clean" else torch.full_like(noisy_freq, top_k / e)
    ratio = noisy_freq / ref.clamp_min(1e-12)
    cold = [int(i) for i in torch.argsort(ratio, stable=True) if ratio[i] < cfg.replace_threshold and ref[i] > 0]
    cold = cold[: int(cfg.replace_max_fraction * e)]
    donors = [int(i) for i in torch.argsort(-noisy_freq, stable=True) if int(i) not in cold]
    return list(zip(cold, donors))


def expert_parameters(model: nn.Module, router: Router) -> list[tuple[str, nn.Parameter]]:
    """The stacked ``[experts, out, in]`` weights that the router dispatches to."""
    parent_name = router.name.rsplit(".", 1)[0] if "." in router.name else ""
    parent = model.get_submodule(parent_name)
    experts = getattr(parent, "experts", None)
    if experts is None:
        raise ValueError(f"router {router.name}: no sibling 'experts' module to replace experts in")
    prefix = f"{parent_name}.experts" if parent_name else "experts"
    params = [(f"{prefix}.{n}", p) for n, p in experts.named_parameters(recurse=False)
              if p.ndim == 3 and p.shape[0] == router.num_experts]
    if not params:
        raise ValueError(f"router {router.name}: experts are not stacked [experts, out, in] parameters "
                         f"({type(experts).__name__}); expert replacement needs transformers 5 stacked experts")
    return params


@dataclasses.dataclass(frozen=True)
class Programming:
    """How to put a copied weight on fresh devices: the trial's device model and chip seed."""

    device: DeviceModel
    crossbar: CrossbarConfig
    seed: int
    t_inference: float
    drift_compensation: Literal["none", "column", "tile"] = "none"


def _reprogram(clean: torch.Tensor, name: str, prog: Programming) -> torch.Tensor:
    """``clean`` [out, in] as read from a fresh crossbar region (its own generator)."""
    gen = torch.Generator(device=clean.device)
    gen.manual_seed(target_seed(prog.seed, name))
    return program_matrices(clean.unsqueeze(0), prog.device, prog.crossbar, gen, prog.t_inference,
                            prog.drift_compensation)[0]


@torch.no_grad()
def replace_experts_(model: nn.Module, router: Router, pairs: Sequence[tuple[int, int]],
                     clean: dict[str, torch.Tensor], on_crossbar: set[str], prog: Programming,
                     copy_router_row: bool) -> None:
    """Overwrite each under-activated expert with its donor's clean weights, re-programmed when
    that weight lives on a crossbar (``on_crossbar``), on devices of its own."""
    weights = expert_parameters(model, router)
    if copy_router_row:
        weights.append((f"{router.name}.weight", router.module.weight))
    for name, p in weights:
        if name not in clean:
            raise ValueError(f"no clean copy of {name}: snapshot expert and router weights before programming")
        for cold, donor in pairs:
            src = clean[name][donor]
            if p.ndim == 2:  # a router row is one crossbar column: program it as a [1, in] matrix
                src = src.unsqueeze(0)
            new = _reprogram(src, f"{name}/romer_copy{cold}", prog) if name in on_crossbar else src
            p.data[cold] = new.reshape(p.data[cold].shape).to(p.dtype)


# ----------------------------------------------------------------------------- the whole repair

@dataclasses.dataclass
class RomerResult:
    """What ROMER did: replaced pairs per layer, the installed logit maps, the pre-repair routing."""

    replaced: dict[int, list[tuple[int, int]]]
    logit_maps: LogitMaps | None
    unrepaired: Recording

    @property
    def n_replaced(self) -> int:
        return sum(len(v) for v in self.replaced.values())

    def remove(self) -> None:
        if self.logit_maps is not None:
            self.logit_maps.remove()


def apply_romer(model: nn.Module, routers: Sequence[Router], cfg: RomerConfig,
                record: Callable[[], Recording], clean_recording: Recording,
                clean: dict[str, torch.Tensor], on_crossbar: set[str], prog: Programming) -> RomerResult:
    """Run ROMER on a programmed model; weights change in place and logit hooks stay installed
    until ``result.remove()``. ``record()`` runs the calibration tokens through the model and
    returns its routing; ``clean_recording`` is the clean model's routing on the same tokens."""
    noisy = record()
    replaced: dict[int, list[tuple[int, int]]] = {}
    if cfg.replace:
        for r in routers:
            pairs = choose_replacements(expert_frequency(noisy[r.layer][1], r.num_experts),
                                        expert_frequency(clean_recording[r.layer][1], r.num_experts), r.top_k, cfg)
            if pairs:
                replace_experts_(model, r, pairs, clean, on_crossbar, prog, cfg.replace_router == "donor")
                replaced[r.layer] = pairs
    maps = None
    if cfg.logit_norm:
        after = record() if replaced else noisy
        maps = LogitMaps(routers, percentile_maps(after, clean_recording, cfg)).install()
    return RomerResult(replaced=replaced, logit_maps=maps, unrepaired=noisy)
