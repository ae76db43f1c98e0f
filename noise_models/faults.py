"""Stuck-at faults: devices that ignore programming and sit at their highest or lowest conductance."""

from __future__ import annotations

import dataclasses

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


@dataclasses.dataclass(frozen=True)
class StuckAtFaults(NoiseComponent):
    """Each device independently stuck ON (at ``g_max``) with probability ``p_on``, or OFF (at ``g_off``)
    with probability ``p_off``; the two events are exclusive.

    One uniform draw per device decides: u < p_off is OFF, u >= 1 - p_on is ON. Put this last in
    the program stage so that programming noise does not move a stuck device.
    """

    p_on: float = 0.0
    p_off: float = 0.0
    g_off: float = 0.0
    stage = "program"

    def __post_init__(self) -> None:
        for name in ("p_on", "p_off"):
            p = getattr(self, name)
            if not (0.0 <= p <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if self.p_on + self.p_off > 1.0:
            raise ValueError(f"p_on + p_off must be <= 1, got {self.p_on} + {self.p_off}")
        if not (self.g_off >= 0):
            raise ValueError(f"g_off must be >= 0 microsiemens, got {self.g_off}")

    @property
    def is_identity(self) -> bool:
        return self.p_on == 0 and self.p_off == 0

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        u = torch.rand(g.shape, generator=ctx.generator, device=g.device, dtype=torch.float32)
        g.masked_fill_(u < self.p_off, self.g_off)
        return g.masked_fill_(u >= 1.0 - self.p_on, ctx.g_max)
