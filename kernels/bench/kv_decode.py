"""Quantized KV decode beside bf16 SDPA (flash backend as the baseline), one table of cases.

The goal case (32K tokens, batch 8, GQA 32/8, d = 128), 4K and 128K tokens at batch 1 and 32, and the OLMoE-1B-7B
decode step's attention (:func:`simcim.validation.decode_step.decode_ops`, 4K tokens). Each 2- and 4-bit cache is
timed at every candidate launch of both operand orders (``kv_decode``'s ``tiles``); the fastest of each is reported.
"""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import dataclasses
import sys

import torch

from simcim.kernels.bench.harness import Env, Row, bench, fastest, finish, mem_frac
from simcim.kernels.testing import rel_err

# (tiles, num_splits, unpack, num_warps, num_stages, register cap, key groups per step); None: the device's default
CANDIDATES = [
    ("right", None, "asm", None, None, None, None),
    ("left", None, "asm", 4, 2, None, 1),
    ("left", 64, "asm", 4, 2, None, 1),
    ("left", None, "asm", 8, 2, None, 1),
    ("left", None, "asm", 4, 3, None, 1),
    ("right", 32, "asm", 4, 1, None, 2),
]


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    b: int
    h: int
    hkv: int
    t: int
    d: int = 128


def cases(env: Env) -> list[Case]:
    if env.tiny:
        return [Case("goal", 1, 4, 2, 200, 64)]
    out = [Case("goal", 8, 32, 8, 32768)]
    out += [Case("context", b, 32, 8, t) for t in (4096, 131072) for b in (1, 32)]
    from simcim.validation.decode_step import arch_of, decode_ops

    for op in decode_ops(arch_of("olmoe-1b-7b"), "kv2", 4096):
        if op.kernel == "kv_decode":
            a = op.args
            out.append(Case("OLMoE", a["b"], a["h"], a["hkv"], a["t"], a["d"]))
    return out


def _quantize(k: torch.Tensor, v: torch.Tensor, bits: int, env: Env, max_elems: int = 1 << 28):
    """The cache quantized a few sequences at a time (whole-batch fp32 temporaries of a 128K x 32 cache would not
    fit beside it), joined along the batch."""
    from simcim.kernels.kv_quant import quantize_kv

    groups = (64, 64) if not env.tiny else (16, 32)
    step = max(1, max_elems // max(1, k[0].numel()))
    parts = [quantize_kv(k[i : i + step], v[i : i + step], bits, *groups, n_sink=4) for i in range(0, k.shape[0], step)]
    if len(parts) == 1:
        return parts[0]
    fields = {f.name: getattr(parts[0], f.name) for f in dataclasses.fields(parts[0])}
    for name, value in fields.items():
        if isinstance(value, torch.Tensor):
            fields[name] = torch.cat([getattr(p, name) for p in parts], 0)
    return type(parts[0])(**fields)


def bench_kv_decode(env: Env) -> list[Row]:
    import torch.nn.functional as F

    from simcim.kernels.kv_quant import kv_decode, kv_decode_reference

    rows: list[Row] = []
    for c in cases(env):
        case = f"{c.label} B{c.b} H{c.h} HKV{c.hkv} T{c.t} D{c.d}"
        k = torch.randn(c.b, c.hkv, c.t, c.d, device=env.device, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        q = torch.randn(c.b, c.h, c.d, device=env.device, dtype=torch.bfloat16)
        dense_bytes = 2 * k.numel() * 2
        q4 = q[:, :, None, :]
        sdpa = lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)  # noqa: E731
        baseline = "bf16 sdpa (auto backend)"
        timed = [(baseline, bench(sdpa, env, graph=env.cuda))]
        if env.cuda:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            try:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    timed.append(("bf16 sdpa flash", bench(sdpa, env, graph=True)))
                baseline = "bf16 sdpa flash"
            except Exception as e:
                print(f"  sdpa flash failed: {type(e).__name__}: {e}", file=sys.stderr)
        for impl, ms in timed:
            rows.append(Row("kv_decode", case, impl, ms, gbps=dense_bytes / ms / 1e6,
                            roofline_frac=mem_frac(dense_bytes / ms / 1e6, env), note=f"cache {dense_bytes >> 20} MiB"))
        for bits in (2, 4):
            cache = _quantize(k, v, bits, env)
            ref = kv_decode_reference(q[:1], dataclasses.replace(cache, **{
                f.name: getattr(cache, f.name)[:1] for f in dataclasses.fields(cache)
                if isinstance(getattr(cache, f.name), torch.Tensor)}))

            def call(cand):
                tiles, splits, unpack, warps, stages, regs, gps = cand
                return kv_decode(q, cache, num_splits=splits, unpack=unpack, num_warps=warps, num_stages=stages,
                                 max_registers=regs, groups_per_step=gps, tiles=tiles)

            per_tiles = fastest(call, env, CANDIDATES, graph=env.cuda, label=f"{case} {bits}-bit",
                                key=lambda cand: cand[0])
            nbytes = cache.nbytes()
            for tiles, (ms, cand) in sorted(per_tiles.items(), key=lambda kv: kv[1][0]):
                rows.append(Row("kv_decode", case, f"triton {bits}-bit +FWHT tiles:{tiles}", ms, gbps=nbytes / ms / 1e6,
                                roofline_frac=mem_frac(nbytes / ms / 1e6, env), rel_err=rel_err(call(cand)[:1], ref),
                                note=f"cache {nbytes / 2**20:.0f} MiB ({dense_bytes / nbytes:.2f}x smaller); "
                                     f"config={cand}"))
        finish(rows, baseline, case)
        env.checkpoint(rows)
        if env.cuda:
            torch.cuda.empty_cache()
    return rows
