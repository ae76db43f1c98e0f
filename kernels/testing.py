"""Helpers shared by the kernel tests and the benchmark: error measures and poisoned buffers."""

from __future__ import annotations

import torch

__all__ = ["rel_err", "poisoned", "randn"]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; fails loudly on NaN (an element the kernel never wrote)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: {tuple(out.shape)} vs {tuple(ref.shape)}")
    if torch.isnan(out).any():
        raise AssertionError(f"output has {int(torch.isnan(out).sum())} NaN elements (unwritten?)")
    return float((out - ref).norm() / ref.norm().clamp(min=1e-30))


def poisoned(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A buffer filled with NaN, so that any element a kernel fails to write shows up."""
    return torch.full(tuple(shape), float("nan"), dtype=dtype, device=device)


def randn(
    *shape: int,
    g: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    scale: float = 1.0,
) -> torch.Tensor:
    """Normal samples drawn on the CPU from ``g`` (so a seed reproduces them anywhere), then moved."""
    return (torch.randn(*shape, generator=g) * scale).to(dtype=dtype, device=device)
