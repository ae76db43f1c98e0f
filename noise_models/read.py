"""Read noise: 1/f fluctuations accumulated since programming, relative to the conductance read.

sigma_read(x, t) = min(q_coeff / max(x ** q_exp, q_floor), q_max) * sqrt(ln((t + t0 + t_read) / (2 t_read)))
G_read = G + |G| * scale * sigma_read * N(0, 1),   x = G_target / g_max

The square-root-of-log growth is the integral of a 1/f spectrum from 1 / (t + t0) up to the
read bandwidth 1 / (2 t_read); ``t`` counts seconds after programming and ``t0`` is the first
read (so that the time axis matches ``PowerLawDrift``). The amplitude ``Q`` falls with
conductance as a power law and is capped at ``q_max`` for nearly-RESET devices.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


@dataclasses.dataclass(frozen=True)
class ReadNoise(NoiseComponent):
    """1/f read noise whose amplitude is a capped power law in the target conductance."""

    q_coeff: float
    q_exp: float
    q_max: float = math.inf
    q_floor: float = 1e-3
    t_read: float = 250e-9
    t0: float = 20.0
    scale: float = 1.0
    x_floor: float = 1e-7
    stage = "read"

    def __post_init__(self) -> None:
        if not (self.q_coeff >= 0 and math.isfinite(self.q_coeff)):
            raise ValueError(f"q_coeff must be a finite number >= 0, got {self.q_coeff}")
        if not math.isfinite(self.q_exp):
            raise ValueError(f"q_exp must be finite, got {self.q_exp}")
        if not (self.q_max > 0):
            raise ValueError(f"q_max must be > 0, got {self.q_max}")
        if not (self.q_floor > 0):
            raise ValueError(f"q_floor must be > 0, got {self.q_floor}")
        if not (self.t_read > 0):
            raise ValueError(f"t_read must be > 0 seconds, got {self.t_read}")
        if not (self.t0 >= 0):
            raise ValueError(f"t0 must be >= 0 seconds, got {self.t0}")
        if not (self.scale >= 0):
            raise ValueError(f"scale must be >= 0, got {self.scale}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 0 or self.q_coeff == 0

    def time_factor(self, t_inference: float) -> float:
        """sqrt(ln((t + t0 + t_read) / (2 t_read))): how much 1/f noise has accumulated by then."""
        if not (t_inference >= 0 and math.isfinite(t_inference)):
            raise ValueError(f"t_inference must be a finite number of seconds >= 0, got {t_inference}")
        ratio = (t_inference + self.t0 + self.t_read) / (2 * self.t_read)
        return math.sqrt(max(math.log(ratio), 0.0))

    def q(self, g_target: torch.Tensor, g_max: float) -> torch.Tensor:
        """Relative noise amplitude Q(x) before the time factor (a new tensor)."""
        # min(q_coeff / max(x^e, q_floor), q_max) = q_coeff * min(x^-e, 1/q_floor, q_max/q_coeff), with
        # x^-e as exp(-e ln x): two cheap passes instead of pow and a reciprocal
        x_inv_pow = (g_target * (1.0 / g_max)).clamp_(min=self.x_floor).log_().mul_(-self.q_exp).exp_()
        cap = 1.0 / self.q_floor if self.q_coeff == 0 else min(1.0 / self.q_floor, self.q_max / self.q_coeff)
        return x_inv_pow.clamp_(max=cap).mul_(self.q_coeff)

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        target = ctx.g_target if ctx.g_target is not None else g
        sigma = self.q(target, ctx.g_max).mul_(self.scale * self.time_factor(ctx.t_inference))
        noise = torch.randn(g.shape, generator=ctx.generator, device=g.device, dtype=g.dtype)
        sigma.mul_(noise)
        g.addcmul_(sigma, torch.abs(g, out=noise))  # reuse the noise buffer for |G|
        return g.clamp_(min=0.0)
