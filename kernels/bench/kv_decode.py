"""Quantized KV decode beside bf16 SDPA."""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import sys

import torch

from simcim.kernels.bench.harness import Env, Row, bench, best, finish, mem_frac
from simcim.kernels.testing import rel_err


def bench_kv_decode(env: Env) -> list[Row]:
    import torch.nn.functional as F

    from simcim.kernels.kv_quant import kv_decode, kv_decode_reference, quantize_kv

    rows: list[Row] = []
    b, h, hkv, d = (8, 32, 8, 128) if not env.tiny else (1, 4, 2, 64)
    t = 32768 if not env.tiny else 200
    case = f"B{b} H{h} HKV{hkv} T{t} D{d}"
    k = torch.randn(b, hkv, t, d, device=env.device, dtype=torch.bfloat16)
    v = torch.randn(b, hkv, t, d, device=env.device, dtype=torch.bfloat16)
    q = torch.randn(b, h, d, device=env.device, dtype=torch.bfloat16)
    dense_bytes = 2 * k.numel() * 2
    q4 = q[:, :, None, :]
    sdpa = lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)  # noqa: E731
    ms = bench(sdpa, env, graph=env.cuda)
    rows.append(
        Row(
            "kv_decode",
            case,
            "bf16 sdpa (auto backend)",
            ms,
            gbps=dense_bytes / ms / 1e6,
            roofline_frac=mem_frac(dense_bytes / ms / 1e6, env),
            note=f"cache {dense_bytes >> 20} MiB",
        )
    )
    if env.cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    ms = bench(sdpa, env, graph=True)
                rows.append(
                    Row(
                        "kv_decode",
                        case,
                        f"bf16 sdpa {name}",
                        ms,
                        gbps=dense_bytes / ms / 1e6,
                        roofline_frac=mem_frac(dense_bytes / ms / 1e6, env),
                    )
                )
            except Exception as e:
                print(f"  sdpa {name} backend failed: {type(e).__name__}: {e}", file=sys.stderr)
    for bits in (2, 4):
        for rotate in (True,):
            cache = quantize_kv(
                k,
                v,
                bits,
                k_group=64 if not env.tiny else 16,
                v_group=64 if not env.tiny else 32,
                n_sink=4,
                rotate=rotate,
            )
            ref = kv_decode_reference(q, cache)
            # (splits, unpack, warps, register cap, key groups per step); 128 registers fit 4 programs of
            # 4 warps (or 2 of 8) on an SM
            configs = [
                (32, "asm", 4, None, 1),
                (32, "asm", 4, 128, 1),
                (64, "asm", 4, 128, 1),
                (32, "asm", 4, None, 2),
                (32, "asm", 8, None, 2),
                (32, "asm", 8, 128, 2),
                (64, "asm", 8, 128, 2),
                (32, "int", 4, None, 1),
            ]

            def call(c):
                return kv_decode(
                    q, cache, num_splits=c[0], unpack=c[1], num_warps=c[2], max_registers=c[3], groups_per_step=c[4]
                )

            ms, cfg = best(call, env, configs if env.cuda else [(None, "asm", 4, None, 1)], graph=env.cuda)
            splits = cfg
            err = rel_err(call(cfg), ref)
            nbytes = cache.nbytes()
            rows.append(
                Row(
                    "kv_decode",
                    case,
                    f"triton {bits}-bit{' +FWHT' if rotate else ''}",
                    ms,
                    gbps=nbytes / ms / 1e6,
                    roofline_frac=mem_frac(nbytes / ms / 1e6, env),
                    rel_err=err,
                    note=f"cache {nbytes / 2**20:.0f} MiB ({dense_bytes / nbytes:.2f}x smaller); config={splits}",
                )
            )
    finish(rows, "bf16 sdpa (auto backend)", case)
    return rows
