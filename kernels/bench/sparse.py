"""SpMM and embedding_bag beside torch.sparse.mm and F.embedding_bag."""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import torch

from simcim.kernels.bench.harness import Env, Row, bench, best, finish, mem_frac
from simcim.kernels.launch import GatherConfig
from simcim.kernels.testing import rel_err


def bench_sparse(env: Env) -> list[Row]:
    import torch.nn.functional as F

    from simcim.kernels.sparse import embedding_bag, spmm

    rows: list[Row] = []
    g = torch.Generator().manual_seed(0)
    m = k = 16384 if not env.tiny else 128
    for density in (0.001, 0.01) if not env.tiny else (0.05,):
        for n in (64, 256) if not env.tiny else (32,):
            dtype = torch.float32
            case = f"M{m} K{k} N{n} density{density} fp32"
            nnz = int(m * k * density)
            idx = torch.randint(0, m * k, (nnz,), generator=g).unique()
            rows_, cols = idx // k, idx % k
            a = (
                torch.sparse_coo_tensor(torch.stack([rows_, cols]), torch.randn(idx.numel(), generator=g), (m, k))
                .to_sparse_csr()
                .to(env.device)
                .to(dtype)
            )
            b = torch.randn(k, n, device=env.device, dtype=dtype)
            nnz = a.values().numel()
            gathered = nnz * (4 + 8 + n * 4) + m * n * 4  # col idx + value + B row per nonzero, C once
            ref = torch.sparse.mm(a, b)
            ms = bench(lambda: torch.sparse.mm(a, b), env)
            rows.append(
                Row(
                    "sparse",
                    case,
                    "torch.sparse.mm (CSR)",
                    ms,
                    gbps=gathered / ms / 1e6,
                    roofline_frac=mem_frac(gathered / ms / 1e6, env),
                    note=f"nnz={nnz}",
                )
            )
            ms, cfg = best(
                lambda c: spmm(a, b, config=c),
                env,
                [None] + [GatherConfig(*c) for c in ((16, min(n, 128), 4, 3), (32, min(n, 128), 4, 3), (8, n, 4, 3),
                                                     (16, 64, 4, 2))],
            )
            timed = [("triton spmm", ms)]
            if env.cuda:  # the same call replayed in a CUDA graph: the kernel without its host-side launch
                timed.append(("triton spmm (graph)", bench(lambda c=cfg: spmm(a, b, config=c), env, graph=True)))
            err = rel_err(spmm(a, b), ref)
            for impl, ms in timed:
                rows.append(
                    Row(
                        "sparse",
                        case,
                        impl,
                        ms,
                        gbps=gathered / ms / 1e6,
                        roofline_frac=mem_frac(gathered / ms / 1e6, env),
                        rel_err=err,
                        note=f"config={cfg}",
                    )
                )
            finish(rows, "torch.sparse.mm (CSR)", case)
    vocab, dim = (1_000_000, 128) if not env.tiny else (1000, 32)
    bags, per_bag = (4096, 64) if not env.tiny else (16, 5)
    for dtype in (torch.float32, torch.bfloat16):
        case = f"embedding_bag V{vocab} D{dim} bags{bags}x{per_bag} {str(dtype)[6:]}"
        table = torch.randn(vocab, dim, device=env.device, dtype=dtype)
        indices = torch.randint(0, vocab, (bags * per_bag,), generator=g).to(env.device)
        offsets = torch.arange(0, bags * per_bag, per_bag, device=env.device)
        es = table.element_size()
        gathered = indices.numel() * (8 + dim * es) + bags * dim * es
        ref = F.embedding_bag(indices, table, offsets, mode="sum")
        ms = bench(lambda: F.embedding_bag(indices, table, offsets, mode="sum"), env)
        rows.append(
            Row(
                "sparse",
                case,
                "F.embedding_bag",
                ms,
                gbps=gathered / ms / 1e6,
                roofline_frac=mem_frac(gathered / ms / 1e6, env),
            )
        )
        # None: embedding_bag's default, (16, 64, 2, 3); (16, 128, 4, 3): SpMM's, its default before 2026-12-02
        configs = [None] + [GatherConfig(*c) for c in ((16, 128, 4, 3), (8, 128, 4, 3), (32, 128, 4, 3), (8, 32, 1, 3),
                                                        (16, 128, 8, 3))]
        # as called by default (validated: one host sync a call), and the kernel alone in a CUDA graph
        for validate in (True, False):
            ms, cfg = best(
                lambda c, v=validate: embedding_bag(table, indices, offsets, config=c, validate=v),
                env,
                configs,
                graph=env.cuda and not validate,
            )
            out = embedding_bag(table, indices, offsets, config=cfg, validate=validate)
            rows.append(
                Row(
                    "sparse",
                    case,
                    "triton embedding_bag" + ("" if validate else " (validate=False, graph)"),
                    ms,
                    gbps=gathered / ms / 1e6,
                    roofline_frac=mem_frac(gathered / ms / 1e6, env),
                    rel_err=rel_err(out, ref),
                    note=f"config={cfg}",
                )
            )
        finish(rows, "F.embedding_bag", case)
    return rows
