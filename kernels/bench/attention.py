"""Fused and unfused attention beside SDPA's flash backend (prefill, 4K-16K tokens)."""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import sys

import torch

from simcim.kernels.bench.harness import Env, Row, bench, finish, flop_frac
from simcim.kernels.launch import AttentionConfig
from simcim.kernels.testing import rel_err


def bench_attention(env: Env) -> list[Row]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from simcim.kernels.attention import fused_attention, unfused_attention

    rows: list[Row] = []
    d, h = 128, 16
    seqs = (4096, 8192, 16384) if not env.tiny else (64,)
    for n in seqs:
        b = max(1, 16384 // n) if not env.tiny else 1
        hh = h if not env.tiny else 2
        for causal in (False, True):
            case = f"B{b} H{hh} N{n} D{d} {'causal' if causal else 'full'} bf16"
            q, k, v = (torch.randn(b, hh, n, d, device=env.device, dtype=torch.bfloat16) for _ in range(3))
            flops = 4 * b * hh * n * n * d * (0.5 if causal else 1.0)
            ref = None
            if env.cuda:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
                    ref = sdpa()
                    ms = bench(sdpa, env)
                rows.append(
                    Row(
                        "attention",
                        case,
                        "sdpa flash",
                        ms,
                        tflops=flops / ms / 1e9,
                        roofline_frac=flop_frac(flops / ms / 1e9, env),
                    )
                )
            # check against fp32 math on a slice of heads (the full fp32 score matrix would not fit)
            sl = slice(0, 1)
            exact = F.scaled_dot_product_attention(
                q[sl, :2].float(), k[sl, :2].float(), v[sl, :2].float(), is_causal=causal
            )
            shapes = ((128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3), (128, 64, 8, 3))
            candidates = [AttentionConfig(*c) for c in shapes]
            best: tuple[float, tuple | None] = (float("inf"), None)
            if env.cuda:
                for cfg in candidates:
                    try:
                        ms = bench(lambda cfg=cfg: fused_attention(q, k, v, causal, block=cfg), env)
                    except Exception as e:  # a config that does not fit in shared memory
                        print(f"  attention config {cfg} failed: {type(e).__name__}", file=sys.stderr)
                        continue
                    best = min(best, (ms, cfg))
            else:
                best = (bench(lambda: fused_attention(q, k, v, causal), env), None)
            ms, cfg = best
            out = fused_attention(q, k, v, causal, block=cfg)
            err = rel_err(out[sl, :2], exact)
            rows.append(
                Row(
                    "attention",
                    case,
                    "triton fused (1 pass)",
                    ms,
                    tflops=flops / ms / 1e9,
                    roofline_frac=flop_frac(flops / ms / 1e9, env),
                    rel_err=err,
                    note=f"block={cfg}",
                )
            )
            del out
            ms = bench(lambda: unfused_attention(q, k, v, causal), env)
            out = unfused_attention(q, k, v, causal)
            rows.append(
                Row(
                    "attention",
                    case,
                    "triton unfused (3 pass)",
                    ms,
                    tflops=flops / ms / 1e9,
                    roofline_frac=flop_frac(flops / ms / 1e9, env),
                    rel_err=rel_err(out[sl, :2], exact),
                    note=f"scores {b * hh * n * n * 4 >> 20} MiB fp32 + probs {b * hh * n * n * 2 >> 20} MiB",
                )
            )
            del out, ref
            finish(rows, "sdpa flash" if env.cuda else "triton fused (1 pass)", case)
            torch.cuda.empty_cache() if env.cuda else None
    return rows
