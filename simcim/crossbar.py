"""Weights on crossbar tiles: map to conductances, apply a device model, read back as weights.

A weight matrix ``W[out, in]`` sits on tiles of ``tile_rows`` inputs x ``tile_cols`` outputs.
Each tile column (one output, one block of inputs) is scaled so that its max |w| maps to
``g_max`` (``scaling="column"``), or the whole tile shares one scale (``scaling="tile"``).

Mappings:
  * ``differential``: w = (G+ - G-) * s / g_max, with G+ = max(w, 0) and G- = max(-w, 0)
    scaled by g_max / s. Both devices carry their own noise.
  * ``offset``: one device per weight against a fixed reference column at g_max / 2:
    w = (2 G / g_max - 1) * s.

The read-back weight is computed as ``w + (conductance error) * scale`` rather than
re-deriving it from the noisy conductance, so a device model that changes nothing gives the
clean weights bit for bit.

Each target (one parameter tensor) draws from its own generator seeded from the trial seed
and the parameter's name, so choosing more layers does not change the noise any one layer
gets, and the same seed always gives bitwise-identical weights on the same device.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Literal

import torch

from simcim.noise_models.base import DeviceModel
from simcim.noise_models.read import ReadNoise
from simcim.targets import WeightTarget


@dataclasses.dataclass(frozen=True)
class CrossbarConfig:
    """How weights are laid onto tiles (sizes follow common 256/512-row CIM macros)."""

    tile_rows: int = 512
    tile_cols: int = 512
    mapping: Literal["differential", "offset"] = "differential"
    scaling: Literal["column", "tile"] = "column"

    def __post_init__(self) -> None:
        if self.tile_rows < 1 or self.tile_cols < 1:
            raise ValueError(f"tile size must be >= 1, got {self.tile_rows}x{self.tile_cols}")
        if self.mapping not in ("differential", "offset"):
            raise ValueError(f"unknown mapping {self.mapping!r} (known: differential, offset)")
        if self.scaling not in ("column", "tile"):
            raise ValueError(f"unknown scaling {self.scaling!r} (known: column, tile)")

    @property
    def devices_per_weight(self) -> int:
        return 2 if self.mapping == "differential" else 1


def target_seed(seed: int, name: str) -> int:
    """A 63-bit seed for one parameter of one simulated chip instance."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def tile_reduce(a: torch.Tensor, cfg: CrossbarConfig, granularity: Literal["column", "tile"],
                op: Literal["amax", "sum"]) -> torch.Tensor:
    """Reduce ``a`` ``[n, out, in]`` over each tile column, or over each whole tile: ``[n, out, blocks]``.

    The input axis is split into blocks of ``tile_rows``; with ``"tile"`` the outputs are also
    grouped by ``tile_cols`` and every column of a tile gets the tile's value.
    """
    n, out_dim, in_dim = a.shape
    blocks = -(-in_dim // cfg.tile_rows)
    pad = blocks * cfg.tile_rows - in_dim
    if pad:
        a = torch.nn.functional.pad(a, (0, pad))
    reduce = (lambda x, dim: x.amax(dim=dim, keepdim=True)) if op == "amax" else (
        lambda x, dim: x.sum(dim=dim, keepdim=True))
    r = reduce(a.reshape(n, out_dim, blocks, cfg.tile_rows), -1).squeeze(-1)  # [n, out, blocks]
    if granularity == "tile":
        cblocks = -(-out_dim // cfg.tile_cols)
        cpad = cblocks * cfg.tile_cols - out_dim
        rp = torch.nn.functional.pad(r, (0, 0, 0, cpad)) if cpad else r
        rt = reduce(rp.reshape(n, cblocks, cfg.tile_cols, blocks), 2)
        r = rt.expand(n, cblocks, cfg.tile_cols, blocks).reshape(n, cblocks * cfg.tile_cols, blocks)[:, :out_dim]
    return r


def tile_scales(mats: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """Scale s = max |w| per tile column (or per tile, with ``scaling="tile"``): ``[n, out, blocks]``."""
    return tile_reduce(mats.abs(), cfg, cfg.scaling, "amax")


def _per_weight(s: torch.Tensor, in_dim: int, cfg: CrossbarConfig) -> torch.Tensor:
    """Broadcast ``[n, out, blocks]`` values to ``[n, out, in]`` (a view when one block covers all inputs)."""
    if s.shape[-1] == 1:
        return s
    return s.repeat_interleave(cfg.tile_rows, dim=-1)[..., :in_dim]


def program_matrices(mats: torch.Tensor, device: DeviceModel, cfg: CrossbarConfig,
                     generator: torch.Generator, t_inference: float = 0.0,
                     drift_compensation: Literal["none", "column", "tile"] = "none") -> torch.Tensor:
    """Weights ``[n, out, in]`` as read from crossbars programmed with them (a new tensor).

    The devices are programmed once; the read at ``t_inference`` sees each device's own drift
    exponent. With ``drift_compensation`` the periphery also read the array right after
    programming (t = 0) with a known input (every row driven once, i.e. the sum of |w| down each
    column) and, at inference, rescales each tile column (``"column"``) or each tile (``"tile"``)
    by the ratio of that reference readout to the current one: the global drift compensation of
    aihwkit (one scalar per tile, or per column), which undoes the mean decay but not its spread.
    """
    return _program(mats, device, cfg, generator, t_inference, drift_compensation, per_mvm_read=False).weights


@dataclasses.dataclass
class ProgrammedArray:
    """What :func:`program_arrays` leaves on the chip for an analog forward.

    ``weights [n, out, in]``: the weights the digital periphery assumes, ``unit * scales``;
    ``scales [n, out, blocks]``: the digital per-tile-column scale (the mapping's max |w|, times
    the drift-compensation factor); ``unit``: conductance difference / g_max as read at
    ``t_inference`` without read noise (|unit| <= 1 up to programming noise), recoverable as
    ``weights / scales``; ``read_var [n, out, in]`` (or None): each weight's per-read 1/f noise
    variance in the same unit-weight units, redrawn at every matrix-vector product.
    """

    weights: torch.Tensor
    scales: torch.Tensor
    read_var: torch.Tensor | None


def program_arrays(mats: torch.Tensor, device: DeviceModel, cfg: CrossbarConfig, generator: torch.Generator,
                   t_inference: float = 0.0,
                   drift_compensation: Literal["none", "column", "tile"] = "none") -> ProgrammedArray:
    """Program ``mats [n, out, in]`` for an analog forward: as :func:`program_matrices`, except that the
    device model's read noise (``ReadNoise`` components) is not frozen into the weights but returned as a
    per-weight variance, for the periphery to redraw at every read."""
    return _program(mats, device, cfg, generator, t_inference, drift_compensation, per_mvm_read=True)


def without_read_noise(device: DeviceModel) -> DeviceModel:
    """``device`` less its ``ReadNoise`` components (the analog forward draws read noise at every read)."""
    return dataclasses.replace(device, components=tuple(c for c in device.components if not isinstance(c, ReadNoise)))


def _program(mats: torch.Tensor, device: DeviceModel, cfg: CrossbarConfig, generator: torch.Generator,
             t_inference: float, drift_compensation: Literal["none", "column", "tile"],
             per_mvm_read: bool) -> ProgrammedArray:
    if drift_compensation not in ("none", "column", "tile"):
        raise ValueError(f"unknown drift_compensation {drift_compensation!r} (known: none, column, tile)")
    if not torch.isfinite(mats).all():
        raise ValueError("weights contain NaN or Inf; cannot map them to conductances")
    read_noise: list[ReadNoise] = []
    if per_mvm_read:
        read_noise = [c for c in device.components if isinstance(c, ReadNoise) and not c.is_identity]
        device = without_read_noise(device)
    w = mats.float()
    scales = tile_scales(w, cfg)
    if device.is_identity and not read_noise:
        return ProgrammedArray(mats.clone(), scales, None)
    s = _per_weight(scales, w.shape[-1], cfg)
    g_max = device.g_max
    safe = torch.where(s > 0, s, torch.ones_like(s))
    unit = w / safe  # in [-1, 1]
    if cfg.mapping == "differential":
        g_pos = unit.clamp(min=0).mul_(g_max)
        g_neg = unit.neg_().clamp_(min=0).mul_(g_max)
        devices = [(g_pos, 1.0), (g_neg, -1.0)]
        factor = safe / g_max
    else:
        devices = [(unit.add_(1.0).mul_(0.5 * g_max), 1.0)]
        factor = 2.0 * safe / g_max
    programmed = [device.program(g, generator) for g, _ in devices]
    reads = any(c.stage == "read" and not c.is_identity for c in device.components)
    # each device's own randomness (its drift exponent) is fixed at programming, shared by every read
    device_seeds = [int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
                    for _ in devices]
    read_var = torch.zeros_like(w) if read_noise else None

    def read_weights(t: float, with_var: bool = False) -> torch.Tensor:
        delta = torch.zeros_like(w)
        for (g, sign), g_prog, dseed in zip(devices, programmed, device_seeds):
            if reads:
                dgen = torch.Generator(device=g.device).manual_seed(dseed)
                g_prog = device.read(g_prog, g, t, generator, device_generator=dgen)
            delta.add_(g_prog - g, alpha=sign)
            if with_var:
                for c in read_noise:  # sigma_G = |G| Q(G_target) sqrt(ln(...)) of the component, per read
                    sigma = c.q(g, g_max).mul_(c.scale * c.time_factor(t)).mul_(g_prog.abs())
                    read_var.add_(sigma.square_())
        return delta.mul_(factor).add_(w)

    w_t = read_weights(t_inference, with_var=read_var is not None)
    if read_var is not None:
        read_var.mul_((factor / safe).square_())  # conductance^2 -> (unit weight)^2
    if drift_compensation != "none" and reads:
        reference = tile_reduce(read_weights(0.0).abs_(), cfg, drift_compensation, "sum")
        current = tile_reduce(w_t.abs(), cfg, drift_compensation, "sum")
        alpha = torch.where(current > 0, reference / current, torch.ones_like(current))
        w_t.mul_(_per_weight(alpha, w.shape[-1], cfg))
        scales = scales * alpha
    return ProgrammedArray(w_t.to(mats.dtype), scales, read_var)


@torch.no_grad()
def program_targets_(targets: Iterable[WeightTarget], device: DeviceModel, cfg: CrossbarConfig, seed: int,
                     t_inference: float = 0.0, chunk_elements: int = 1 << 24,
                     drift_compensation: Literal["none", "column", "tile"] = "none") -> None:
    """Replace each target's weights, in place, by what its crossbar tiles read back.

    Work is done one matrix slice group at a time (at most ``chunk_elements`` weights), so
    peak extra memory is a small multiple of that chunk, not of the model.
    """
    for t in targets:
        gen = torch.Generator(device=t.param.device)
        gen.manual_seed(target_seed(seed, t.name))
        mats = t.matrices()
        per = mats.shape[-1] * mats.shape[-2]
        step = max(1, chunk_elements // max(per, 1))
        out = torch.empty_like(mats)
        for i in range(0, mats.shape[0], step):
            out[i:i + step] = program_matrices(mats[i:i + step], device, cfg, gen, t_inference, drift_compensation)
        t.param.data.copy_(t.from_matrices(out))
