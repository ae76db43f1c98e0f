"""Conductance relaxation: the spread around the target that keeps growing after a device is written.

Filamentary RRAM does not drift as a power law; its conductance random-walks, so the spread
around the target measured at time t, sigma(G_T, t), widens with t. Given sigma measured at a few
times (each a polynomial in x = G_T / g_max, in microsiemens for a device of maximum ``g_ref``),
this component interpolates sigma linearly in ln t between the measured times (holding the end
values outside them) and adds the *increment* since the first time,

    G(t) = G + scale * sqrt(max(sigma(x, t)^2 - sigma(x, times[0])^2, 0)) * N(0, 1),

so that, after programming noise equal to sigma(x, times[0]), the total spread at time t is
sigma(x, t), as measured.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext
from simcim.noise_models.programming import polynomial


@dataclasses.dataclass(frozen=True)
class ConductanceRelaxation(NoiseComponent):
    """Time-dependent Gaussian spread tabulated at ``times`` (seconds after programming)."""

    times: tuple[float, ...]
    coeffs: tuple[tuple[float, ...], ...]
    g_ref: float
    scale: float = 1.0
    stage = "read"

    def __post_init__(self) -> None:
        if len(self.times) < 2 or len(self.times) != len(self.coeffs):
            raise ValueError(f"need >= 2 times and one coefficient tuple per time, got {len(self.times)} "
                             f"times and {len(self.coeffs)} coefficient tuples")
        if any(not (t > 0) for t in self.times) or list(self.times) != sorted(set(self.times)):
            raise ValueError(f"times must be positive and strictly increasing, got {self.times}")
        if any(len(c) == 0 for c in self.coeffs):
            raise ValueError("each coefficient tuple must hold at least one coefficient")
        if not (self.g_ref > 0):
            raise ValueError(f"g_ref must be > 0, got {self.g_ref}")
        if not (self.scale >= 0):
            raise ValueError(f"scale must be >= 0, got {self.scale}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 0

    def sigma(self, g_target: torch.Tensor, g_max: float, t: float) -> torch.Tensor:
        """Total measured spread (microsiemens) at ``t`` seconds after programming."""
        x = g_target / g_max
        ts = self.times
        if t <= ts[0]:
            lo, hi, w = 0, 0, 0.0
        elif t >= ts[-1]:
            lo, hi, w = len(ts) - 1, len(ts) - 1, 0.0
        else:
            hi = next(i for i, ti in enumerate(ts) if ti >= t)
            lo = hi - 1
            w = (math.log(t) - math.log(ts[lo])) / (math.log(ts[hi]) - math.log(ts[lo]))
        sig = polynomial(x, self.coeffs[lo]).clamp_(min=0.0)
        if w > 0:
            sig.mul_(1 - w).add_(polynomial(x, self.coeffs[hi]).clamp_(min=0.0), alpha=w)
        return sig.mul_(g_max / self.g_ref)

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        t = ctx.t_inference
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"t_inference must be a finite number of seconds >= 0, got {t}")
        target = ctx.g_target if ctx.g_target is not None else g
        base = self.sigma(target, ctx.g_max, self.times[0])
        extra = self.sigma(target, ctx.g_max, t).square_().sub_(base.square_()).clamp_(min=0.0).sqrt_()
        noise = torch.randn(g.shape, generator=ctx.generator, device=g.device, dtype=g.dtype)
        g.addcmul_(noise, extra, value=self.scale)
        return g.clamp_(min=0.0)
