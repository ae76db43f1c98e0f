"""CSR sparse x dense matmul (SpMM) and embedding-bag gather: the GPU side of the NPU simulator's
sparse workloads.

Both are one kernel: output row ``i`` is ``sum_{j in row i} w_j * B[col_j, :]``, with ``w_j`` the
CSR value (SpMM), or 1 / per-sample weight (embedding bag, ``mode="sum"``), divided by the bag
length for ``mode="mean"``. A program owns one output row and one block of columns, walks the
row's nonzeros in chunks, gathers the matching rows of ``B`` and accumulates in fp32.
"""

from __future__ import annotations

from typing import Literal

import torch

from simcim.kernels._common import HAVE_TRITON, next_pow2, use_triton
from simcim.kernels.launch import GatherConfig, as_config
from simcim.kernels.launch import default as _default

if HAVE_TRITON:
    import triton
    import triton.language as tl

__all__ = ["spmm", "spmm_reference", "embedding_bag", "embedding_bag_reference", "random_csr"]


def random_csr(
    m: int,
    k: int,
    density: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """An ``[m, k]`` sparse CSR matrix with about ``density * k`` random nonzeros per row (normal values)."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1]; got {density}")
    mask = torch.rand(m, k, generator=generator) < density
    vals = torch.randn(m, k, generator=generator) * mask
    return vals.to(dtype).to_sparse_csr().to(device)


def _csr_parts(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if a.layout != torch.sparse_csr:
        raise ValueError(f"a must be a sparse CSR tensor; got layout {a.layout}")
    return a.crow_indices(), a.col_indices(), a.values()


def spmm_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in fp32 through a dense copy of ``a``."""
    return (a.to_dense().float() @ b.float()).to(b.dtype)


def embedding_bag_reference(
    table: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    mode: Literal["sum", "mean"] = "sum",
    per_sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per bag ``b``: sum (or mean) of ``table[indices[offsets[b]:offsets[b+1]]]``, in fp32.

    As the kernel does unvalidated input: entries outside ``indices`` and indices outside the table add nothing
    (a mean still divides by the bag's length)."""
    n, vocab = indices.numel(), table.shape[0]
    ends = torch.cat([offsets[1:], offsets.new_tensor([n])])
    out = torch.zeros(offsets.numel(), table.shape[1], dtype=torch.float32, device=table.device)
    for i, (lo, hi) in enumerate(zip(offsets.tolist(), ends.tolist())):
        a, b = min(max(lo, 0), n), min(max(hi, 0), n)
        idx = indices[a:b]
        ok = (idx >= 0) & (idx < vocab)
        rows = table[idx.clamp(0, max(vocab - 1, 0))].float() * ok[:, None]
        if per_sample_weights is not None:
            rows = rows * per_sample_weights[a:b, None].float()
        if hi > lo:
            out[i] = rows.sum(0) / (hi - lo if mode == "mean" else 1)
    return out.to(table.dtype)


if HAVE_TRITON:

    @triton.jit
    def _gather_rows_kernel(
        ROW_PTR,
        COLS,
        VALS,
        B,
        C,
        N,
        NNZ,
        K,
        stride_b,
        stride_c,
        HAS_VALS: tl.constexpr,
        MEAN: tl.constexpr,
        BLOCK_NNZ: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        row = tl.program_id(0)
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        lo = tl.load(ROW_PTR + row)
        hi = tl.load(ROW_PTR + row + 1)
        acc = tl.zeros([BLOCK_N], tl.float32)
        for start in range(lo, hi, BLOCK_NNZ):
            offs = start + tl.arange(0, BLOCK_NNZ)
            # unvalidated inputs stay in bounds: entries outside [0, NNZ) and rows outside [0, K) add nothing
            nz_mask = (offs < hi) & (offs >= 0) & (offs < NNZ)
            cols = tl.load(COLS + offs, mask=nz_mask, other=0).to(tl.int64)
            nz_mask = nz_mask & (cols >= 0) & (cols < K)
            rows = tl.load(
                B + cols[:, None] * stride_b + offs_n[None, :], mask=nz_mask[:, None] & n_mask[None, :], other=0.0
            ).to(tl.float32)
            if HAS_VALS:
                w = tl.load(VALS + offs, mask=nz_mask, other=0.0).to(tl.float32)
                rows = rows * w[:, None]
            acc += tl.sum(rows, 0)
        if MEAN:
            acc = acc / tl.maximum(hi - lo, 1).to(tl.float32)
        tl.store(C + row.to(tl.int64) * stride_c + offs_n, acc.to(C.dtype.element_ty), mask=n_mask)


def _gather_rows(
    row_ptr: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor | None,
    b: torch.Tensor,
    out: torch.Tensor,
    mean: bool,
    config: GatherConfig,
) -> torch.Tensor:
    m, n = out.shape
    if m == 0 or n == 0:
        return out
    block_nnz, block_n, warps, stages = config
    _gather_rows_kernel[(m, triton.cdiv(n, block_n))](
        row_ptr,
        cols,
        vals if vals is not None else b,
        b,
        out,
        n,
        cols.numel(),
        b.shape[0],
        b.stride(0),
        out.stride(0),
        HAS_VALS=vals is not None,
        MEAN=mean,
        BLOCK_NNZ=block_nnz,
        BLOCK_N=block_n,
        num_warps=warps,
        num_stages=stages,
    )
    return out


def _out(out: torch.Tensor | None, shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    if tuple(out.shape) != shape or out.dtype != like.dtype or out.stride(1) != 1:
        raise ValueError(f"out must be a {like.dtype} tensor of shape {shape} with unit column stride")
    return out


def spmm(
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor | None = None,
    config: GatherConfig | tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """``a @ b`` for a sparse CSR ``a [M, K]`` and a dense ``b [K, N]``; returns ``[M, N]`` in ``b``'s dtype."""
    crow, col, val = _csr_parts(a)
    if b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes do not fit: a {tuple(a.shape)} @ b {tuple(b.shape)}")
    if b.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"b dtype {b.dtype} is not supported (fp16, bf16, fp32)")
    c = _out(out, (a.shape[0], b.shape[1]), b)
    if not use_triton("simcim.kernels.sparse", crow, col, val, b):
        return c.copy_(spmm_reference(a, b))
    if b.stride(1) != 1:
        b = b.contiguous()
    if config is None:
        config = _default(GatherConfig, "gather_spmm", b.device)
        config = config._replace(block_n=min(next_pow2(b.shape[1]), config.block_n))
    return _gather_rows(crow, col, val, b, c, mean=False, config=as_config(GatherConfig, config))


def _check_bags(table: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> None:
    """Indices in range and offsets well formed, with one host sync for all the checks."""
    no = torch.zeros((), dtype=torch.bool, device=indices.device)
    bad_idx = (indices.min() < 0) | (indices.max() >= table.shape[0]) if indices.numel() else no
    bad_off = (
        (offsets[0] != 0) | (offsets.diff() < 0).any() | (offsets[-1] > indices.numel()) if offsets.numel() else no
    )
    bad_idx, bad_off = torch.stack([bad_idx, bad_off.to(bad_idx.device)]).tolist()
    if bad_idx:
        raise ValueError(f"indices must lie in [0, {table.shape[0]})")
    if bad_off:
        raise ValueError("offsets must start at 0, never decrease and not pass the end of indices")


def embedding_bag(
    table: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    mode: Literal["sum", "mean"] = "sum",
    per_sample_weights: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    config: GatherConfig | tuple[int, int, int, int] | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """``F.embedding_bag`` (sum or mean; 1-d ``indices`` with bag starts ``offsets``, as torch takes them).

    ``validate`` checks the indices and offsets first (one host sync, so the call cannot be captured in a
    CUDA graph); with ``validate=False`` nothing waits for the host, and an index outside the table or an
    offset outside ``indices`` adds nothing to its bag instead of raising.
    """
    if table.dim() != 2 or indices.dim() != 1 or offsets.dim() != 1:
        raise ValueError("table must be 2-d, indices and offsets 1-d")
    if mode not in ("sum", "mean"):
        raise ValueError(f"mode must be 'sum' or 'mean'; got {mode!r}")
    if per_sample_weights is not None and (mode != "sum" or per_sample_weights.shape != indices.shape):
        raise ValueError("per_sample_weights needs mode='sum' and the shape of indices")
    if validate:
        _check_bags(table, indices, offsets)
    c = _out(out, (offsets.numel(), table.shape[1]), table)
    if not use_triton("simcim.kernels.sparse", table, indices, offsets):
        return c.copy_(embedding_bag_reference(table, indices, offsets, mode, per_sample_weights))
    row_ptr = torch.cat([offsets, offsets.new_full((1,), indices.numel())])  # no host copy: graph-safe
    if table.stride(1) != 1:
        table = table.contiguous()
    if config is None:
        config = _default(GatherConfig, "gather_embedding_bag", table.device)
        config = config._replace(block_n=min(next_pow2(table.shape[1]), config.block_n))
    config = as_config(GatherConfig, config)
    return _gather_rows(row_ptr, indices, per_sample_weights, table, c, mean=mode == "mean", config=config)
