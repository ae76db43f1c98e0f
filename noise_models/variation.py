"""Device-to-device variation: each device's conductance scale differs by a lognormal factor."""

from __future__ import annotations

import dataclasses

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


@dataclasses.dataclass(frozen=True)
class DeviceVariation(NoiseComponent):
    """G * exp(sigma_log * N(0, 1)): a lognormal factor with median 1, so ln(G / G_in) ~ N(0, sigma_log^2).

    Models fabrication spread (filament or cell geometry) that scales a device's whole
    conductance response, as opposed to the write-to-write programming error.
    """

    sigma_log: float
    stage = "program"

    def __post_init__(self) -> None:
        if not (self.sigma_log >= 0):
            raise ValueError(f"sigma_log must be >= 0, got {self.sigma_log}")

    @property
    def is_identity(self) -> bool:
        return self.sigma_log == 0

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        noise = torch.randn(g.shape, generator=ctx.generator, device=g.device, dtype=g.dtype)
        return g.mul_(noise.mul_(self.sigma_log).exp_())
