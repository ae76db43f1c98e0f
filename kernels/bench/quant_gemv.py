"""Weight-only low-bit matmul beside bf16 ``F.linear``, one table of cases.

The goal shapes (N x K in 8192^2, 28672 x 8192, 8192 x 28672; int4 at M = 1, 2, 4, 8, 16, int2 and ternary at
M = 1 and 8) and the linears of the OLMoE-1B-7B decode step (:func:`simcim.validation.decode_step.decode_ops`).
Each kernel style is timed at every candidate launch and its fastest is reported; the relative error is that of
the reported launch against the dequantized weight's product, on the same inputs.
"""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import dataclasses

import torch

from simcim.kernels.bench.harness import Env, Row, bench, copies_for, fastest, finish, mem_frac
from simcim.kernels.launch import GemvM1Config, TensorCoreConfig
from simcim.kernels.quant_formats import QuantConfig, dequantize, quantize
from simcim.kernels.testing import rel_err

GOAL_SHAPES = ((8192, 8192), (28672, 8192), (8192, 28672))
GOAL_M = (1, 2, 4, 8, 16)
LOW_BIT_M = (1, 8)  # int2 and ternary
SCHEMES = ("int4", "int2", "ternary")

# (kernel style, launch) candidates; None is the style's default for the device. Styles: "m1:<unpack>" the M = 1
# kernel ("fp32" one code per shift + LOP3 into fp32; "f16acc" two per shift + LOP3 + HSUB2 into an fp16x2 FMA, x
# scaled to fp16 per group by a first launch), "tc" the tensor-core kernel for M = 2..16, "slices" the CUDA-core
# kernel for M <= 8, "dot" the tensor-core kernel with the weight as the right operand
M1_CANDIDATES = [
    ("m1:fp32", None),
    ("m1:fp32", GemvM1Config(1, 128, 16, 4, 3)),
    ("m1:f16acc", None),
    ("m1:f16acc", GemvM1Config(2, 64, 8, 2, 1)),
    ("m1:f16acc", GemvM1Config(2, 32, 8, 1, 1)),
]
BATCH_CANDIDATES = [
    ("tc", None),
    ("tc", TensorCoreConfig(64, 256, 0, 4, 4)),
    ("tc", TensorCoreConfig(128, 256, 0, 8, 3)),
    ("tc", TensorCoreConfig(64, 512, 0, 4, 2)),
    ("tc", TensorCoreConfig(64, 256, 0, 4, 3, programs=1056)),
    ("slices", None),
    ("dot", None),
]


@dataclasses.dataclass(frozen=True)
class Case:
    label: str  # what the shape is ("goal", or the decode step's role)
    n: int
    k: int
    m: int
    schemes: tuple[str, ...]


def cases(env: Env) -> list[Case]:
    if env.tiny:
        return [Case("goal", 96, 256, 1, ("int4",)), Case("goal", 96, 256, 3, SCHEMES)]
    out = [
        Case("goal", n, k, m, SCHEMES if m in LOW_BIT_M else ("int4",)) for n, k in GOAL_SHAPES for m in GOAL_M
    ]
    from simcim.validation.decode_step import arch_of, decode_ops

    shapes: dict[tuple[int, int], list[str]] = {}
    for op in decode_ops(arch_of("olmoe-1b-7b"), "int4", 4096):
        if op.kernel == "quant_gemv":
            shapes.setdefault((op.args["n"], op.args["k"]), []).append(op.role)
    for (n, k), roles in shapes.items():
        label = "OLMoE " + ",".join(r.removesuffix("_proj") for r in roles)
        out += [Case(label, n, k, m, SCHEMES if m == 1 else ("int4",)) for m in (1, 8)]
    return out


def _call(style: str, cfg, x: torch.Tensor, qw):
    from simcim.kernels.quant_gemv import quant_matmul

    kernel, _, unpack = style.partition(":")
    return quant_matmul(x, qw, config=cfg, gemv=kernel, unpack=unpack or "auto")


def bench_quant_gemv(env: Env) -> list[Row]:
    import torch.nn.functional as F

    rows: list[Row] = []
    group = 128
    for c in cases(env):
        case = f"{c.label} M{c.m} N{c.n} K{c.k} g{group}"
        w = torch.randn(c.n, c.k, device=env.device, dtype=torch.bfloat16) * 0.02
        x = torch.randn(c.m, c.k, device=env.device, dtype=torch.bfloat16)
        copies = copies_for(w.numel() * 2, env)
        ws = [w] + [torch.randn_like(w) for _ in range(copies - 1)]
        ms = bench(lambda: [F.linear(x, wi) for wi in ws], env, graph=env.cuda) / copies
        gbps = (w.numel() * 2 + x.numel() * 2 + c.m * c.n * 2) / ms / 1e6
        rows.append(Row("quant_gemv", case, "bf16 F.linear", ms, tflops=2 * c.m * c.n * c.k / ms / 1e9, gbps=gbps,
                        roofline_frac=mem_frac(gbps, env)))
        for scheme in c.schemes:
            qcfg = QuantConfig(scheme, group)
            qw = quantize(w, qcfg)
            copies = copies_for(qw.nbytes(), env)
            qws = [qw] + [quantize(torch.randn_like(w) * 0.02, qcfg) for _ in range(copies - 1)]
            ref = x.float() @ dequantize(qw).t()
            candidates = M1_CANDIDATES if c.m == 1 else [s for s in BATCH_CANDIDATES if c.m <= 8 or s[0] != "slices"]
            per_style = fastest(lambda cand, qws=qws: [_call(*cand, x, q) for q in qws], env, candidates,
                                graph=env.cuda, label=f"{case} {scheme}", key=lambda cand: cand[0], calls=copies)
            for style, (ms, cand) in sorted(per_style.items(), key=lambda kv: kv[1][0]):
                nbytes = qw.nbytes() + x.numel() * 2 + c.m * c.n * 2
                gbps = nbytes / ms / 1e6
                rows.append(Row("quant_gemv", case, f"triton {scheme} {style}", ms,
                                tflops=2 * c.m * c.n * c.k / ms / 1e9, gbps=gbps, roofline_frac=mem_frac(gbps, env),
                                rel_err=rel_err(_call(*cand, x, qw), ref),
                                note=f"{nbytes / 2**20:.1f} MiB moved; config={cand[1]}"))
        finish(rows, "bf16 F.linear", case)
        env.checkpoint(rows)
    return rows


def bench_quant_gemv_sizes(env: Env) -> list[Row]:
    """int4 GEMV (M=1) across weight sizes, the fp32 and f16acc paths at their default configs beside bf16:
    where ``unpack="auto"`` switches (``simcim.kernels.quant_gemv.F16ACC_MIN_WEIGHTS``)."""
    import torch.nn.functional as F

    rows: list[Row] = []
    shapes = ((2048, 1024), (2048, 2048), (4096, 4096), (8192, 4096), (8192, 8192)) if not env.tiny else ((64, 128),)
    qcfg = QuantConfig("int4", 128 if not env.tiny else 32)
    for n, k in shapes:
        case = f"M1 N{n} K{k} g{qcfg.group_size} int4"
        w = torch.randn(n, k, device=env.device, dtype=torch.bfloat16) * 0.02
        x = torch.randn(1, k, device=env.device, dtype=torch.bfloat16)
        copies = copies_for(w.numel() * 2, env)
        ws = [w] + [torch.randn_like(w) for _ in range(copies - 1)]
        ms = bench(lambda: [F.linear(x, wi) for wi in ws], env, graph=env.cuda) / copies
        rows.append(Row("quant_gemv", case, "bf16 F.linear", ms, gbps=w.numel() * 2 / ms / 1e6))
        qw = quantize(w, qcfg)
        copies = copies_for(qw.nbytes(), env)
        qws = [qw] + [quantize(torch.randn_like(w) * 0.02, qcfg) for _ in range(copies - 1)]
        ref = x.float() @ dequantize(qw).t()
        for unpack in ("fp32", "f16acc"):
            ms = bench(lambda: [_call(f"m1:{unpack}", None, x, q) for q in qws], env, graph=env.cuda) / copies
            gbps = qw.nbytes() / ms / 1e6
            err = rel_err(_call(f"m1:{unpack}", None, x, qw), ref)
            rows.append(Row("quant_gemv", case, f"triton int4 m1:{unpack}", ms, gbps=gbps,
                            roofline_frac=mem_frac(gbps, env), rel_err=err))
        finish(rows, "bf16 F.linear", case)
    return rows
