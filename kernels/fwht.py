"""Fast Walsh-Hadamard transform over the last dim (a power of two), normalized to be orthonormal.

``fwht(x) = x @ H_D / sqrt(D)`` with ``H_D`` the Sylvester Hadamard matrix (``H_1 = [1]``,
``H_2D = [[H_D, H_D], [H_D, -H_D]]``). It is its own inverse, so rotating keys and queries both
leaves ``q . k`` unchanged while spreading channel outliers evenly before quantization
(QuaRot / RotateKV). The Triton kernel does the log2(D) butterfly stages in registers, one
block of rows per program, in fp32, and writes the input dtype.
"""

from __future__ import annotations

import math

import torch

from simcim.kernels._common import HAVE_TRITON, interpreting, use_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

__all__ = ["fwht", "fwht_reference", "hadamard_matrix"]


def hadamard_matrix(d: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    if d < 1 or d & (d - 1):
        raise ValueError(f"Hadamard size must be a power of two; got {d}")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def fwht_reference(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    h = hadamard_matrix(d, torch.float64 if x.dtype == torch.float64 else torch.float32, x.device)
    return (x.to(h.dtype) @ h / math.sqrt(d)).to(x.dtype)


if HAVE_TRITON:

    @triton.jit
    def _butterfly(x, BLOCK_R: tl.constexpr, D: tl.constexpr, H: tl.constexpr):
        # pair i with i + H in each block of 2H: [R, D/2H, 2, H], butterflies on the "2" axis
        x4 = tl.permute(tl.reshape(x, [BLOCK_R, D // (2 * H), 2, H]), [0, 1, 3, 2])
        a, b = tl.split(x4)
        return tl.reshape(tl.permute(tl.join(a + b, a - b), [0, 1, 3, 2]), [BLOCK_R, D])

    @triton.jit
    def _fwht_kernel(
        X, Y, ROWS, stride_x, stride_y, scale, D: tl.constexpr, LOG_D: tl.constexpr, BLOCK_R: tl.constexpr
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, D)
        mask = rows[:, None] < ROWS
        x = tl.load(X + rows[:, None].to(tl.int64) * stride_x + cols[None, :], mask=mask, other=0.0)
        x = x.to(tl.float32)
        for s in tl.static_range(LOG_D):
            x = _butterfly(x, BLOCK_R, D, 1 << s)
        y = (x * scale).to(Y.dtype.element_ty)
        tl.store(Y + rows[:, None].to(tl.int64) * stride_y + cols[None, :], y, mask=mask)


def fwht(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform of ``x`` over its last dim (16 to 1024, a power of two)."""
    d = x.shape[-1]
    if d < 2 or d > 1024 or d & (d - 1):
        raise ValueError(f"fwht: last dim must be a power of two between 2 and 1024; got {d}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"fwht: dtype {x.dtype} is not supported (fp16, bf16, fp32)")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous()):
        raise ValueError(f"fwht: out must be a contiguous {x.dtype} tensor of shape {tuple(x.shape)}")
    if not use_triton("simcim.kernels.fwht", x):
        y = fwht_reference(x)
        return y if out is None else out.copy_(y)
    x2 = x.reshape(-1, d)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    y = torch.empty((rows, d), device=x.device, dtype=x.dtype) if out is None else out.view(rows, d)
    if rows:
        block_r = 4 if interpreting() else max(1, min(64, 8192 // d))
        _fwht_kernel[(triton.cdiv(rows, block_r),)](
            x2,
            y,
            rows,
            x2.stride(0),
            y.stride(0),
            1.0 / math.sqrt(d),
            D=d,
            LOG_D=d.bit_length() - 1,
            BLOCK_R=block_r,
            num_warps=4,
        )
    return y.reshape(x.shape)
