"""Plain Gaussian perturbations, the weight-noise models most LLM robustness studies use."""

from __future__ import annotations

import dataclasses

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


@dataclasses.dataclass(frozen=True)
class AdditiveGaussianNoise(NoiseComponent):
    """G + N(0, (sigma_rel * g_max)^2) per device.

    Because weights are scaled so that the column's max |w| maps to ``g_max``, a sigma
    relative to ``g_max`` is a sigma relative to the column's max |w| on each device.
    With a differential pair both devices are perturbed independently; the experiment's
    ``gaussian`` noise model divides by sqrt(2) so that the *weight* sigma equals the level.
    """

    sigma_rel: float
    stage = "program"

    def __post_init__(self) -> None:
        if not (self.sigma_rel >= 0):
            raise ValueError(f"sigma_rel must be >= 0, got {self.sigma_rel}")

    @property
    def is_identity(self) -> bool:
        return self.sigma_rel == 0

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        noise = torch.randn(g.shape, generator=ctx.generator, device=g.device, dtype=g.dtype)
        return g.add_(noise, alpha=self.sigma_rel * ctx.g_max)


@dataclasses.dataclass(frozen=True)
class MultiplicativeGaussianNoise(NoiseComponent):
    """G + |G| * N(0, sigma_rel^2) per device: noise proportional to the conductance itself.

    Relative to each weight rather than to the column's max |w|; a device at zero stays at zero.
    """

    sigma_rel: float
    stage = "program"

    def __post_init__(self) -> None:
        if not (self.sigma_rel >= 0):
            raise ValueError(f"sigma_rel must be >= 0, got {self.sigma_rel}")

    @property
    def is_identity(self) -> bool:
        return self.sigma_rel == 0

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        noise = torch.randn(g.shape, generator=ctx.generator, device=g.device, dtype=g.dtype)
        return g.addcmul_(noise.mul_(self.sigma_rel), g.abs())
