"""Module redundancy: k copies of a weight matrix on independent devices, outputs averaged.

The reasoning study (memristor non-idealities and LLM reasoning, 2026) programs redundant
copies of modules and finds that spending them on shallow layers helps most. Every module
here is a linear map ``y = W x``, so averaging the outputs of k programmed copies is exactly
the same as using the average of the k programmed matrices: we simulate it that way, at the
cost of one extra weight tensor, not k forward passes.

Copy 0 is the weight as ``program_targets_`` programmed it (the same devices a trial without
redundancy gets); copies 1..k-1 are drawn from generators seeded by (seed, name, copy), so
each copy sits on devices of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from simcim.crossbar import program_matrices, target_seed
from simcim.moe.romer import Programming
from simcim.targets import WeightTarget


def redundant_layers(num_layers: int, depth: int, position: Literal["shallow", "deep"]) -> list[int]:
    """The first (shallow) or last (deep) ``depth`` decoder layers."""
    if not (1 <= depth <= num_layers):
        raise ValueError(f"redundancy_depth {depth} must be in [1, {num_layers}] (the model has {num_layers} layers)")
    if position == "shallow":
        return list(range(depth))
    if position == "deep":
        return list(range(num_layers - depth, num_layers))
    raise ValueError(f"redundancy_position {position!r} is not one of shallow, deep")


@torch.no_grad()
def add_redundant_copies_(targets: Sequence[WeightTarget], layers: Sequence[int], copies: int,
                          clean: dict[str, torch.Tensor], prog: Programming,
                          chunk_elements: int = 1 << 24) -> int:
    """Average ``copies`` independently programmed copies into each programmed target of ``layers``.

    The targets must already hold their first programmed copy; ``clean`` holds the digital
    weights by target name. Returns the number of extra weights (devices pairs) the copies use.
    """
    if copies < 1:
        raise ValueError(f"redundancy_copies must be >= 1, got {copies}")
    chosen = [t for t in targets if t.layer in set(layers)]
    if copies == 1 or not chosen:
        return 0
    extra = 0
    for t in chosen:
        mats = t.matrices(clean[t.name])
        total = t.matrices().float().clone()
        per = mats.shape[-1] * mats.shape[-2]
        step = max(1, chunk_elements // max(per, 1))
        for c in range(1, copies):
            gen = torch.Generator(device=mats.device)
            gen.manual_seed(target_seed(prog.seed, f"{t.name}/copy{c}"))
            for i in range(0, mats.shape[0], step):
                total[i:i + step] += program_matrices(mats[i:i + step], prog.device, prog.crossbar, gen,
                                                      prog.t_inference, prog.drift_compensation).float()
        t.param.data.copy_(t.from_matrices((total / copies).to(t.param.dtype)))
        extra += (copies - 1) * t.param.numel()
    return extra
