"""Finite conductance levels: a multi-level cell stores one of 2**bits evenly spaced states."""

from __future__ import annotations

import dataclasses

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


@dataclasses.dataclass(frozen=True)
class FiniteLevels(NoiseComponent):
    """Round each conductance to the nearest of 2**bits levels spanning [g_min, g_max].

    Deterministic (it draws nothing). Put it first in the program stage: the cell is written
    to the nearest level it can hold, and programming noise then scatters around that level.
    """

    bits: int
    g_min: float = 0.0
    stage = "program"

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 1 <= self.bits <= 16):
            raise ValueError(f"bits must be an integer in [1, 16], got {self.bits!r}")
        if not (self.g_min >= 0):
            raise ValueError(f"g_min must be >= 0 microsiemens, got {self.g_min}")

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        if not (self.g_min < ctx.g_max):
            raise ValueError(f"g_min ({self.g_min}) must be below g_max ({ctx.g_max})")
        step = (ctx.g_max - self.g_min) / (2 ** self.bits - 1)
        g.clamp_(self.g_min, ctx.g_max).sub_(self.g_min).div_(step).round_()
        return g.mul_(step).add_(self.g_min)
