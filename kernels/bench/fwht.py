"""The Walsh-Hadamard transform beside a bf16 matmul by H / sqrt(D)."""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import math

import torch

from simcim.kernels.bench.harness import Env, Row, bench, finish, mem_frac
from simcim.kernels.testing import rel_err


def bench_fwht(env: Env) -> list[Row]:
    from simcim.kernels.fwht import fwht, hadamard_matrix

    rows: list[Row] = []
    d = 128
    n_rows = 8 * 8 * 32768 if not env.tiny else 64
    case = f"rows{n_rows} D{d} bf16 (KV write)"
    x = torch.randn(n_rows, d, device=env.device, dtype=torch.bfloat16)
    hm = (hadamard_matrix(d, device=env.device) / math.sqrt(d)).to(torch.bfloat16)
    nbytes = 2 * x.numel() * 2
    ms = bench(lambda: x @ hm, env)
    rows.append(
        Row(
            "fwht",
            case,
            "bf16 matmul by H/sqrt(D)",
            ms,
            gbps=nbytes / ms / 1e6,
            roofline_frac=mem_frac(nbytes / ms / 1e6, env),
        )
    )
    ms = bench(lambda: fwht(x), env)
    rows.append(
        Row(
            "fwht",
            case,
            "triton fwht",
            ms,
            gbps=nbytes / ms / 1e6,
            roofline_frac=mem_frac(nbytes / ms / 1e6, env),
            rel_err=rel_err(fwht(x), x.float() @ hm.float()),
        )
    )
    finish(rows, "bf16 matmul by H/sqrt(D)", case)
    return rows
