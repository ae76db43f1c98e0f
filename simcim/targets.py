"""Find a model's weight matrices, give each a role, and select them by role, name and layer.

In transformers 5 the MoE experts are stacked 3-D parameters (``[experts, out, in]``) and
routers are their own module types, so targets are found by walking parameters, not by
looking for ``nn.Linear``. A target knows which axis is the crossbar input, so that each
2-D slice (one expert, one matrix) maps onto its own tiles.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

ROLES = ("attention", "experts", "router", "shared_expert", "mlp", "embeddings", "lm_head", "other")

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class WeightTarget:
    """One weight tensor of a model and how it sits on a crossbar.

    ``matrices()`` views it as a batch of ``[out, in]`` matrices: the crossbar's rows are
    the input dimension, its columns the outputs, so per-column scaling is per output.
    """

    name: str
    role: str
    param: nn.Parameter
    layer: int | None
    input_axis: int  # -1: [..., out, in] as in nn.Linear; 0: nn.Embedding [vocab(in), dim(out)]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.param.shape)

    def matrices(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """A ``[n, out, in]`` view (or copy, for embeddings) of the tensor in crossbar orientation."""
        t = self.param.data if tensor is None else tensor
        if self.input_axis == 0:
            t = t.t()
        return t.reshape(-1, t.shape[-2], t.shape[-1])

    def from_matrices(self, mats: torch.Tensor) -> torch.Tensor:
        """Inverse of ``matrices``: back to the parameter's own layout."""
        if self.input_axis == 0:
            return mats.reshape(self.param.shape[1], self.param.shape[0]).t()
        return mats.reshape(self.param.shape)


def _role(module: nn.Module, module_name: str, param_name: str, output_embeddings: nn.Module | None) -> str:
    full = f"{module_name}.{param_name}" if module_name else param_name
    lname = full.lower()
    cls = type(module).__name__.lower()
    if isinstance(module, nn.Embedding):
        return "lm_head" if module is output_embeddings else "embeddings"
    if module is output_embeddings or module_name.endswith("lm_head"):
        return "lm_head"
    if "shared_expert" in lname:  # Qwen2-MoE shared_expert(+_gate), DeepSeek shared_experts
        return "shared_expert"
    if "router" in cls or module_name.endswith(".router") or re.search(r"\.gate$", module_name):
        return "router"
    if ".experts" in lname or "experts" in cls:
        return "experts"
    if "attn" in lname or "attention" in lname:
        return "attention"
    if "mlp" in lname or "feed_forward" in lname or "ffn" in lname:
        return "mlp"
    return "other"


def find_targets(model: nn.Module) -> list[WeightTarget]:
    """Every weight tensor with at least 2 dimensions, once each (tied weights counted once)."""
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    seen: dict[int, WeightTarget] = {}
    targets: list[WeightTarget] = []
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.ndim < 2:
                continue
            if id(p) in seen:
                continue
            role = _role(module, module_name, pname, out_emb)
            name = f"{module_name}.{pname}" if module_name else pname
            m = _LAYER_RE.search(name)
            layer = int(m.group(1)) if m else None
            axis = 0 if isinstance(module, nn.Embedding) and role == "embeddings" else -1
            t = WeightTarget(name=name, role=role, param=p, layer=layer, input_axis=axis)
            seen[id(p)] = t
            targets.append(t)
    return targets


def select_targets(
    targets: Sequence[WeightTarget],
    roles: Iterable[str] = (),
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    layers: Iterable[int] | None = None,
) -> list[WeightTarget]:
    """Targets whose role is in ``roles`` or whose name matches an ``include`` glob, minus
    ``exclude`` globs, restricted to decoder ``layers`` when given (non-layer weights such as
    embeddings and lm_head are kept only if no layer restriction is given)."""
    roles, include, exclude = list(roles), list(include), list(exclude)
    for r in roles:
        if r not in ROLES:
            raise ValueError(f"unknown role {r!r} (known: {', '.join(ROLES)})")
    names = [t.name for t in targets]
    for pat in include + exclude:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(f"pattern {pat!r} matches no weight of the model (e.g. {names[0] if names else '-'})")
    layer_set = set(layers) if layers is not None else None
    if layer_set is not None:
        present = {t.layer for t in targets if t.layer is not None}
        missing = sorted(layer_set - present)
        if missing:
            raise ValueError(f"layers {missing} do not exist (the model has layers {min(present)}..{max(present)})")
    chosen = []
    for t in targets:
        hit = t.role in roles or any(fnmatch.fnmatchcase(t.name, p) for p in include)
        if not hit or any(fnmatch.fnmatchcase(t.name, p) for p in exclude):
            continue
        if layer_set is not None and t.layer not in layer_set:
            continue
        chosen.append(t)
    return chosen
