"""The crossbar periphery of one analog matrix-vector product, in plain PyTorch (the reference engine).

Shapes: inputs ``x [M, K]`` (one row per token), a programmed array of ``N`` outputs x ``K`` inputs cut
into tiles of ``tile_rows`` inputs (the last tile may be partial). Per token ``m`` and tile ``t``:

1. **Input range** (aihwkit's noise management): ``"abs_max"`` divides the token's slice of the tile by
   ``r[m, t] = max |x|`` over that slice (1 for an all-zero slice); ``"none"`` keeps ``r = 1``.
2. **DAC**: ``v = x / r`` is clipped to ``[-input_bound, input_bound]`` and rounded to
   ``L = 2^(dac_bits - 1) - 1`` levels per sign (a 1-bit DAC drives ``sign(v) * input_bound``).
3. **MVM** on the tile's unit weights ``u`` (conductance difference / g_max): ``z = sum_k v_k u_nk``.
4. **IR drop** (aihwkit's first-order model, ``ir_drop > 0``; see :func:`ir_drop_delta`).
5. **Read noise**, redrawn at every product: ``N(0, sum_k v_k^2 var_nk)`` with ``var`` each weight's
   read-noise variance (the device model's 1/f noise at ``t_inference``, or ``read_sigma^2``), plus
   additive output noise of std ``out_noise``. A sum of independent Gaussians per weight is exactly this.
6. **ADC**: ``z`` is clipped to ``[-adc_bound, adc_bound]`` (saturation) and rounded to
   ``A = 2^(adc_bits - 1) - 1`` levels per sign (1 bit: ``sign(z) * adc_bound``).
7. **Bound management** (``"iterative"``, aihwkit's iterative re-scaling): a token whose tile saturated
   any output is converted again with its input range doubled, up to aihwkit's limits, and the output
   scaled back.
8. **Digital sum**: ``y[m, n] = sum_t r[m, t] * f[m, t] * scales[t, n] * q[m, t, n] + bias[n]`` (``f`` the
   bound-management factor).

``z``, ``input_bound`` and ``adc_bound`` are in the crossbar's own units: one unit input on a row times
one unit weight (a device at g_max) is 1, so ``adc_bound = 10`` saturates at the current of ten fully
driven, fully on rows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

MIN_BITS, MAX_BITS = 1, 16
# aihwkit's bound-management limits: stop doubling the input range beyond max_bm_factor, or once the
# DAC would be left with fewer than max_bm_res of its levels (IOParameters defaults)
MAX_BM_FACTOR = 1000
MAX_BM_RES = 0.25


def signed_levels(bits: int) -> int:
    """Levels per sign of a signed converter of ``bits`` bits: ``2^(bits - 1) - 1`` (0 for a 1-bit sign converter)."""
    return (1 << (bits - 1)) - 1


@dataclasses.dataclass(frozen=True)
class PeripheryConfig:
    """DAC, ADC, noise and IR drop of a crossbar tile (aihwkit ``IOParameters`` counterparts in brackets)."""

    dac_bits: int = 8  # [inp_res = 1 / (2^bits - 2)]
    input_range: Literal["abs_max", "none"] = "abs_max"  # [noise_management AbsMax / None]
    input_bound: float = 1.0  # DAC full scale, in units of the input range [inp_bound]
    adc_bits: int = 8  # [out_res = 1 / (2^bits - 2)]
    adc_bound: float = 10.0  # ADC full scale, in unit input x unit weight products [out_bound]
    bound_management: Literal["none", "iterative"] = "none"  # [bound_management None / Iterative]
    read_sigma: float | None = None  # per-read std of every unit weight; None: the device model's 1/f noise
    out_noise: float = 0.0  # std of additive noise on each tile output, units of adc_bound [out_noise]
    ir_drop: float = 0.0  # strength of the first-order IR-drop model, 0 = off, 1 = full [ir_drop]
    wire_resistance: float = 0.35  # ohm, wire segment between neighbouring cells
    g_max: float = 25.0  # microsiemens, the device's maximal conductance (set from the device model)

    def __post_init__(self) -> None:
        for name in ("dac_bits", "adc_bits"):
            b = getattr(self, name)
            if not (isinstance(b, int) and MIN_BITS <= b <= MAX_BITS):
                raise ValueError(f"{name} must be an integer from {MIN_BITS} to {MAX_BITS}, got {b!r}")
        if self.input_range not in ("abs_max", "none"):
            raise ValueError(f"input_range {self.input_range!r}: expected 'abs_max' or 'none'")
        if self.bound_management not in ("none", "iterative"):
            raise ValueError(f"bound_management {self.bound_management!r}: expected 'none' or 'iterative'")
        for name in ("input_bound", "adc_bound", "wire_resistance", "g_max"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        for name in ("out_noise", "ir_drop"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.read_sigma is not None and not (self.read_sigma >= 0 and math.isfinite(self.read_sigma)):
            raise ValueError(f"read_sigma must be a finite number >= 0, got {self.read_sigma}")

    dac_levels = property(lambda self: signed_levels(self.dac_bits))
    adc_levels = property(lambda self: signed_levels(self.adc_bits))

    @property
    def g_ratio(self) -> float:
        """Wire conductance between neighbouring cells over g_max [ir_drop_g_ratio]."""
        return 1.0 / (self.wire_resistance * self.g_max * 1e-6)

    @property
    def max_bm_factor(self) -> float:
        res_limit = MAX_BM_RES * (2 * self.dac_levels) if self.dac_levels > 0 else 1.0
        return min(MAX_BM_FACTOR, res_limit)


def quantize(v: torch.Tensor, levels: int, bound: float) -> torch.Tensor:
    """Clip ``v`` to ``[-bound, bound]`` and round to ``levels`` steps per sign (0 levels: the sign), in place."""
    v = v.clamp_(-bound, bound)
    if levels == 0:
        return v.sign_().mul_(bound)
    step = bound / levels
    return v.mul_(1.0 / step).add_(0.5).floor_().mul_(step)


def tiles_of(t: torch.Tensor, tile_rows: int) -> torch.Tensor:
    """``[..., K]`` zero-padded and split into ``[..., T, tile_rows]``."""
    k = t.shape[-1]
    n_tiles = -(-k // tile_rows)
    if n_tiles * tile_rows != k:
        t = torch.nn.functional.pad(t, (0, n_tiles * tile_rows - k))
    return t.reshape(*t.shape[:-1], n_tiles, tile_rows)


def _rows_used(k: int, tile_rows: int, device: torch.device) -> torch.Tensor:
    n_tiles = -(-k // tile_rows)
    return torch.tensor([min(tile_rows, k - t * tile_rows) for t in range(n_tiles)], device=device,
                        dtype=torch.float32)


def ir_drop_weights(k: int, tile_rows: int, device: torch.device) -> torch.Tensor:
    """``[T, tile_rows]``: each row's share of the drop, ``1 - (1 - j / n)^2`` for row ``j`` of a tile of ``n`` used
    rows (aihwkit's steady-state approximation; ``j = 0`` is the row at the far end of the line)."""
    j = torch.arange(tile_rows, device=device, dtype=torch.float32)
    used = _rows_used(k, tile_rows, device)[:, None]
    p = 1.0 - j / used
    return torch.where(j < used, 1.0 - p * p, torch.zeros_like(p))


def ir_drop_delta(v: torch.Tensor, u: torch.Tensor, cfg: PeripheryConfig, k: int, tile_rows: int) -> torch.Tensor:
    """aihwkit's first-order IR drop (``ForwardBackwardPassIOManaged::applyIrDrop``), per tile: the line's total
    current ``I_n = sum_k |u_nk| |v_k|`` sets ``a = I_n * n_rows / g_ratio`` and ``c = a (a (0.05 a - 0.2) + 0.5)``
    (a polynomial fit of the steady-state voltage along the line), and the output loses
    ``ir_drop * c * sum_k u_nk v_k (1 - (1 - k / n_rows)^2)``. ``v [T, M, R]``, ``u [T, R, N]``; returns the
    amount to subtract, ``[T, M, N]``."""
    used = _rows_used(k, tile_rows, v.device)
    a = torch.bmm(v.abs(), u.abs()).mul_((used / cfg.g_ratio)[:, None, None])
    c = a * (a * (0.05 * a - 0.2) + 0.5)
    weighted = torch.bmm(v * ir_drop_weights(k, tile_rows, v.device)[:, None, :], u)
    return c.mul_(weighted).mul_(cfg.ir_drop)


def input_ranges(xt: torch.Tensor, cfg: PeripheryConfig) -> torch.Tensor:
    """``r [T, M, 1]`` for inputs ``xt [T, M, R]``: the divisor that brings each token's slice of each tile
    into the DAC's range."""
    if cfg.input_range == "none":
        return torch.ones((*xt.shape[:2], 1), device=xt.device)
    r = xt.abs().amax(-1, keepdim=True)
    return torch.where(r > 0, r, torch.ones_like(r))


@dataclasses.dataclass
class Counters:
    """ADC conversions and how many saturated, summed over calls (for reports)."""

    conversions: int = 0
    saturated: int = 0
    bm_rounds: int = 0
    uncounted: int = 0  # products computed by an engine that does not count (the kernel)

    @property
    def saturation_rate(self) -> float:
        if self.uncounted:
            return float("nan")
        return self.saturated / self.conversions if self.conversions else 0.0


def analog_mvm(x: torch.Tensor, unit: torch.Tensor, scales: torch.Tensor, cfg: PeripheryConfig, tile_rows: int,
               read_var: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               generator: torch.Generator | None = None, counters: Counters | None = None) -> torch.Tensor:
    """``y [M, N]`` as the crossbar computes ``x [M, K] @ (unit * scales)^T`` (module docstring, steps 1-8).

    ``unit [N, K]`` unit weights, ``scales [T, N]`` digital scale per tile column, ``read_var [N, K]`` each
    unit weight's per-read noise variance (used when ``cfg.read_sigma`` is None). Computed in float32;
    returned in ``x``'s dtype. Noise is drawn from ``generator`` (on ``x``'s device).
    """
    m, k = x.shape
    n = unit.shape[0]
    if unit.shape[1] != k:
        raise ValueError(f"x has {k} inputs but the array has {unit.shape[1]} rows")
    n_tiles = -(-k // tile_rows)
    if scales.shape != (n_tiles, n):
        raise ValueError(f"scales must be [{n_tiles}, {n}] (tiles, outputs); got {tuple(scales.shape)}")
    u = tiles_of(unit.float(), tile_rows).permute(1, 2, 0)  # [T, R, N]
    var = None
    if cfg.read_sigma is None and read_var is not None:
        var = tiles_of(read_var.float(), tile_rows).permute(1, 2, 0)
    xt = tiles_of(x.float(), tile_rows).transpose(0, 1)  # [T, M, R]
    r = input_ranges(xt, cfg)  # [T, M, 1]
    if cfg.bound_management == "none":
        q, saturated = _convert(xt / r, u, var, cfg, k, tile_rows, generator)
        scale = r
    else:
        q, saturated, scale = _managed(xt, r, u, var, cfg, k, tile_rows, generator, counters)
    if counters is not None:
        counters.conversions += q.numel()
        counters.saturated += int(saturated.sum())
    q.mul_(scale).mul_(scales.float()[:, None, :])
    y = q[0] if n_tiles == 1 else q.sum(0)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def _managed(xt, r, u, var, cfg, k, tile_rows, generator, counters):
    """Iterative bound management: convert again, with the input range doubled, every token whose tile
    saturated an output, until none does or aihwkit's limit on the factor is reached."""
    factor = torch.ones_like(r)
    n_tiles, m = xt.shape[:2]
    q = torch.empty((n_tiles, m, u.shape[-1]), device=xt.device)
    saturated = torch.empty(q.shape, device=xt.device, dtype=torch.bool)
    todo = torch.arange(m, device=xt.device)
    while True:
        z, sat = _convert(xt[:, todo] / (r[:, todo] * factor[:, todo]), u, var, cfg, k, tile_rows, generator)
        q[:, todo], saturated[:, todo] = z, sat
        # a tile of a token saturated somewhere, and its factor may still double: [T, len(todo), 1]
        redo = sat.any(-1, keepdim=True) & (factor[:, todo] * 2 <= cfg.max_bm_factor)
        if not bool(redo.any()):
            break
        factor[:, todo] = factor[:, todo] * torch.where(redo, 2.0, 1.0)
        todo = todo[redo.any(0)[:, 0]]
        if counters is not None:
            counters.bm_rounds += 1
    return q, saturated, r * factor


def _convert(v: torch.Tensor, u: torch.Tensor, var: torch.Tensor | None, cfg: PeripheryConfig, k: int,
             tile_rows: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-6 for scaled inputs ``v [T, M, R]`` (overwritten): ADC outputs ``[T, M, N]`` and where they
    saturated."""
    vq = quantize(v, cfg.dac_levels, cfg.input_bound)
    z = torch.bmm(vq, u)
    if cfg.ir_drop > 0:
        z.sub_(ir_drop_delta(vq, u, cfg, k, tile_rows))
    noise_var = None
    if cfg.read_sigma is not None:
        if cfg.read_sigma > 0:
            noise_var = vq.square().sum(-1, keepdim=True).mul_(cfg.read_sigma ** 2)
    elif var is not None:
        noise_var = torch.bmm(vq.square(), var)
    if cfg.out_noise > 0:
        noise_var = cfg.out_noise ** 2 if noise_var is None else noise_var.add_(cfg.out_noise ** 2)
    if noise_var is not None:
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z.add_(eps.mul_(torch.as_tensor(noise_var, device=z.device).sqrt()))
    sat = z.abs() > cfg.adc_bound
    return quantize(z, cfg.adc_levels, cfg.adc_bound), sat
