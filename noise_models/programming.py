"""Programming noise: the error left when a device is written to a target conductance."""

from __future__ import annotations

import dataclasses

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


def polynomial(x: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    """sum_i coeffs[i] * x^i by Horner's rule (a new tensor)."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out.mul_(x).add_(c)
    return out


@dataclasses.dataclass(frozen=True)
class ProgrammingNoise(NoiseComponent):
    """Gaussian programming error whose sigma is a polynomial in G_target / g_max.

    sigma(G_T) = scale * (g_max / g_ref) * sum_i coeffs[i] * (G_T / g_max)^i   [microsiemens]

    ``coeffs`` are fitted in microsiemens for a device whose maximum is ``g_ref``; the
    factor ``g_max / g_ref`` rescales them to another range. Programmed conductances are
    clamped at zero (a device cannot go negative).
    """

    coeffs: tuple[float, ...]
    g_ref: float
    scale: float = 1.0
    stage = "program"

    def __post_init__(self) -> None:
        if not self.coeffs:
            raise ValueError("coeffs must hold at least one coefficient")
        if not (self.g_ref > 0):
            raise ValueError(f"g_ref must be > 0, got {self.g_ref}")
        if not (self.scale >= 0):
            raise ValueError(f"scale must be >= 0, got {self.scale}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 0

    def sigma(self, g_target: torch.Tensor, g_max: float) -> torch.Tensor:
        return polynomial(g_target / g_max, self.coeffs).clamp_(min=0.0).mul_(self.scale * g_max / self.g_ref)

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        target = ctx.g_target if ctx.g_target is not None else g
        noise = torch.randn(g.shape, generator=ctx.generator, device=g.device, dtype=g.dtype)
        g.addcmul_(noise, self.sigma(target, ctx.g_max))
        return g.clamp_(min=0.0)
