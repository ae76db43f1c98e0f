"""Conductance drift: structural relaxation makes a programmed PCM device lose conductance as a power law.

G(t) = G(t0) * ((t_inference + t0) / t0) ** (-nu)

``t_inference`` counts seconds from the end of programming, and ``t0`` is the time of the first read
at which the programmed conductance was measured (IBM's convention, also aihwkit's), so that
``t_inference = 0`` reads the programmed state. Each device has its own drift exponent ``nu``,
drawn once per read from |N(mu_nu(x), sigma_nu(x))| with x = G_target / g_max, where mean and spread
are log-linear in x and clipped to the range the measurements covered:

    mu_nu(x)    = clip(mu_slope    * ln x + mu_offset,    mu_min,    mu_max)
    sigma_nu(x) = clip(sigma_slope * ln x + sigma_offset, sigma_min, sigma_max)

x is floored at ``x_floor`` so that a target of zero (a RESET device) gets the low-conductance
statistics instead of ln 0.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from simcim.noise_models.base import NoiseComponent, NoiseContext


@dataclasses.dataclass(frozen=True)
class PowerLawDrift(NoiseComponent):
    """Power-law drift with a per-device exponent whose statistics depend on the target conductance."""

    mu_slope: float
    mu_offset: float
    sigma_slope: float
    sigma_offset: float
    mu_min: float = 0.0
    mu_max: float = math.inf
    sigma_min: float = 0.0
    sigma_max: float = math.inf
    t0: float = 20.0
    scale: float = 1.0
    x_floor: float = 1e-7
    stage = "read"

    def __post_init__(self) -> None:
        for name in ("mu_slope", "mu_offset", "sigma_slope", "sigma_offset", "mu_min", "sigma_min"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if not (self.mu_min <= self.mu_max):
            raise ValueError(f"mu_min ({self.mu_min}) must be <= mu_max ({self.mu_max})")
        if not (0 <= self.sigma_min <= self.sigma_max):
            raise ValueError(f"need 0 <= sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not (self.t0 > 0):
            raise ValueError(f"t0 must be > 0 seconds, got {self.t0}")
        if not (self.scale >= 0):
            raise ValueError(f"scale must be >= 0, got {self.scale}")
        if not (0 < self.x_floor < 1):
            raise ValueError(f"x_floor must be in (0, 1), got {self.x_floor}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 0

    def log_time_ratio(self, t_inference: float) -> float:
        """ln((t_inference + t0) / t0): the abscissa of the log-log drift plot."""
        if not (t_inference >= 0 and math.isfinite(t_inference)):
            raise ValueError(f"t_inference must be a finite number of seconds >= 0, got {t_inference}")
        return math.log1p(t_inference / self.t0)

    def nu_stats(self, g_target: torch.Tensor, g_max: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and sigma of the drift exponent for each target conductance (new tensors)."""
        log_x = (g_target * (1.0 / g_max)).clamp_(min=self.x_floor).log_()
        mu = torch.mul(log_x, self.mu_slope).add_(self.mu_offset).clamp_(self.mu_min, self.mu_max)
        sigma = log_x.mul_(self.sigma_slope).add_(self.sigma_offset).clamp_(self.sigma_min, self.sigma_max)
        return mu, sigma

    def sample_nu(self, g_target: torch.Tensor, g_max: float, generator: torch.Generator,
                  factor: float = 1.0) -> torch.Tensor:
        """Each device's drift exponent (times ``scale`` and ``factor``), a new tensor."""
        mu, sigma = self.nu_stats(g_target, g_max)
        noise = torch.randn(g_target.shape, generator=generator, device=g_target.device, dtype=mu.dtype)
        # |N| as in the measured model: a device never drifts upward
        return sigma.mul_(noise).add_(mu).abs_().mul_(self.scale * factor)

    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        log_ratio = self.log_time_ratio(ctx.t_inference)
        target = ctx.g_target if ctx.g_target is not None else g
        gen = ctx.device_generator if ctx.device_generator is not None else ctx.generator
        # always draw nu (even at t = t0) so that the generator advances the same way at every time
        return g.mul_(self.sample_nu(target, ctx.g_max, gen, factor=-log_ratio).exp_())
