"""Run the kernel calls of ``decode_step`` on a CUDA GPU and time them (per kernel and a whole step).

Inputs are random (N(0, 0.02) weights, random caches): times depend on shapes, not values, and
the OLMoE-1B-7B shapes then need no 14 GB checkpoint. Every time is the median replay of a CUDA
graph (``simcim.kernels.bench.bench``), so host launch costs are out of both the measurement and the
model. Per kernel, the call is repeated over enough distinct copies of its inputs to overflow L2
twice, so its data come from HBM as in a large model's step; the whole step runs every call on
its own weights and cache, once, in one graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from simcim.kernels.bench import Env, bench
from simcim.validation.decode_step import Op


def _weight(n: int, k: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    return (torch.randn(n, k, generator=gen, device=dev) * 0.02).to(torch.bfloat16)


_FLOAT = {2: torch.bfloat16, 4: torch.float32}  # elem_bytes of the counters' fwht and embedding_bag


def build(op: Op, gen: torch.Generator, dev: torch.device) -> Callable[[], torch.Tensor]:
    """Allocate one instance of ``op``'s inputs on ``dev``; return the call."""
    from simcim.kernels.attention import fused_attention, unfused_attention
    from simcim.kernels.fwht import fwht
    from simcim.kernels.kv_quant import kv_decode, quantize_kv
    from simcim.kernels.quant_formats import QuantConfig, quantize
    from simcim.kernels.quant_gemv import quant_matmul
    from simcim.kernels.sparse import embedding_bag, spmm

    a = op.args
    bf = torch.bfloat16
    rand = lambda *s: torch.randn(*s, generator=gen, device=dev).to(bf)  # noqa: E731
    if op.kernel == "linear_bf16":
        x, w = rand(a["m"], a["k"]), _weight(a["n"], a["k"], gen, dev)
        return lambda: F.linear(x, w)
    if op.kernel == "quant_gemv":
        w = _weight(a["n"], a["k"], gen, dev)
        qw = quantize(w, QuantConfig(a["scheme"], a.get("group", 128)))
        x = rand(1, a["k"])
        return lambda: quant_matmul(x, qw)
    if op.kernel == "spmm":
        w = _weight(a["m"], a["k"], gen, dev)
        keep = a["nnz"]
        thresh = w.abs().flatten().float().kthvalue(w.numel() - keep + 1).values if keep < w.numel() else -1.0
        csr = torch.where(w.abs().float() >= thresh, w, torch.zeros_like(w)).to_sparse_csr()
        b = rand(a["k"], a["ncols"])
        return lambda: spmm(csr, b)
    if op.kernel in ("sdpa_decode", "kv_decode"):
        q = rand(a["b"], a["h"], a["d"])
        k, v = rand(a["b"], a["hkv"], a["t"], a["d"]), rand(a["b"], a["hkv"], a["t"], a["d"])
        if op.kernel == "kv_decode":
            cache = quantize_kv(k, v, a["bits"], 64, min(64, a["d"]), n_sink=4, rotate=True)
            del k, v
            return lambda: kv_decode(q, cache)
        q4 = q[:, :, None, :]
        gqa = a["h"] != a["hkv"]
        return lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=gqa)
    if op.kernel in ("fused_attention", "unfused_attention"):
        q = rand(a["b"], a["h"], a["n"], a["d"])
        k, v = rand(a["b"], a["hkv"], a["n"], a["d"]), rand(a["b"], a["hkv"], a["n"], a["d"])
        if op.kernel == "fused_attention":
            causal = a.get("causal", True)
            return lambda: fused_attention(q, k, v, causal=causal)
        return lambda: unfused_attention(q, k, v, causal=True)
    if op.kernel == "fwht":
        x = torch.randn(a["rows"], a["d"], generator=gen, device=dev).to(_FLOAT[a.get("elem_bytes", 2)])
        return lambda: fwht(x)
    if op.kernel == "embedding_bag":
        table = torch.randn(a["vocab"], a["dim"], generator=gen, device=dev).to(_FLOAT[a.get("elem_bytes", 4)])
        idx = torch.randint(0, a["vocab"], (a["bags"] * a["per_bag"],), generator=gen, device=dev)
        offsets = torch.arange(a["bags"], device=dev) * a["per_bag"]
        return lambda: embedding_bag(table, idx, offsets, validate=False)  # validation syncs: no graph
    raise ValueError(f"no GPU runner for kernel {op.kernel!r}")


MAX_COPIES = 256  # building thousands of copies of a tiny kernel's inputs would take minutes


def input_bytes(op: Op) -> float:
    """Bytes of one instance of ``op``'s inputs, which the rotation over copies must overflow L2 with: the bytes the
    call moves, or for ``embedding_bag`` its whole table, of which a call reads only the rows it gathers."""
    a = op.args
    if op.kernel == "embedding_bag":
        return a["vocab"] * a["dim"] * a.get("elem_bytes", 4) + 8.0 * a["bags"] * (a["per_bag"] + 1)
    return op.work().hbm_bytes


def rotated_copies(op: Op, l2_bytes: int) -> int:
    """How many copies of ``op``'s inputs :func:`time_op` rotates over: enough to overflow L2 twice, at most
    ``MAX_COPIES``."""
    return min(MAX_COPIES, max(1, math.ceil(2 * l2_bytes / max(input_bytes(op), 1))))


def stays_in_l2(op: Op, l2_bytes: int) -> bool:
    """Whether ``op``'s rotated inputs still fit in L2 (only the smallest, launch-bound calls): then its data come
    from L2, and the GPU model predicts it with ``l2_resident``."""
    return rotated_copies(op, l2_bytes) * input_bytes(op) < l2_bytes


def time_op(op: Op, env: Env, seed: int = 0) -> tuple[float, bool]:
    """Median seconds of one call of ``op``, and whether its rotated inputs still fit in L2.

    Inputs rotate over enough copies to overflow L2 twice (at most ``MAX_COPIES``): only the
    smallest calls (a few KB, bound by their launch) then stay in L2, and the flag says so.
    """
    gen = torch.Generator(device=env.device).manual_seed(seed)
    copies = rotated_copies(op, env.l2_bytes)
    calls = [build(op, gen, env.device) for _ in range(copies)]
    for c in calls:  # compile and autotune outside the graph
        c()
    torch.cuda.synchronize()
    ms = bench(lambda: [c() for c in calls], env, graph=True) / copies
    calls.clear()
    torch.cuda.empty_cache()
    return ms * 1e-3, stays_in_l2(op, env.l2_bytes)


def time_step(order: list[Op], env: Env, seed: int = 0) -> float:
    """Median seconds of the whole step: every call on its own inputs, in one CUDA graph."""
    gen = torch.Generator(device=env.device).manual_seed(seed)
    calls = [build(op, gen, env.device) for op in order]
    for c in calls:
        c()
    torch.cuda.synchronize()
    ms = bench(lambda: [c() for c in calls], env, graph=True)
    calls.clear()
    torch.cuda.empty_cache()
    return ms * 1e-3


def gpu_env() -> Env | None:
    """The bench environment of the first CUDA GPU, or None without one."""
    if not torch.cuda.is_available():
        return None
    env = Env(torch.device("cuda"), tiny=False)
    env.l2_bytes = int(torch.cuda.get_device_properties(0).L2_cache_size)
    return env


def triton_resources() -> list[dict]:
    """Registers per thread, spills, shared bytes, warps and static SASS instruction count (with the most common
    opcodes) of every Triton kernel of ``kernels/`` compiled so far."""
    import importlib

    import triton

    from simcim.kernels.profile import compiled_kernels, sass_opcodes

    rows = []
    for mod_name in ("attention", "fwht", "kv_quant", "quant_gemv", "sparse"):
        mod = importlib.import_module(f"simcim.kernels.{mod_name}")
        for name, fn in sorted(vars(mod).items()):
            if not isinstance(fn, triton.runtime.JITFunction):
                continue
            for handle in compiled_kernels(fn):
                meta = getattr(handle, "metadata", None)
                ops = sass_opcodes(handle)
                rows.append({"kernel": name, "regs": getattr(handle, "n_regs", None),
                             "spills": getattr(handle, "n_spills", None),
                             "shared": getattr(meta, "shared", None), "warps": getattr(meta, "num_warps", None),
                             "sass_instructions": sum(ops.values()) if ops else None,
                             "sass_top": dict(ops.most_common(8)) if ops else None})
    return rows


def launch_profile(ops: list[Op], env: Env, path) -> dict:
    """Kernels each call of ``ops`` launches (name, grid, block, duration), from a torch.profiler trace, and the
    compiled resources of the Triton kernels (:func:`triton_resources`); written to ``path`` as JSON.

    It checks the launch counts, program counts and registers the GPU model assumes for library
    calls (cuBLAS GEMV, PyTorch SDPA) and for the launch chains of ``kernels/``.
    """
    import json

    from simcim.kernels.profile import launched_kernels

    gen = torch.Generator(device=env.device).manual_seed(0)
    out = []
    for op in ops:
        call = build(op, gen, env.device)
        kernels = launched_kernels(call)
        out.append({"call": op.key, "kernels": kernels})
        print(op.key, "->", "; ".join(f"{k['name'][:60]} grid={k['grid']} block={k['block']}" for k in kernels),
              flush=True)
        del call
        torch.cuda.empty_cache()
    result = {"calls": out, "triton_resources": triton_resources()}
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    import sys

    from simcim.validation.decode_step import arch_of, decode_ops

    env = gpu_env()
    if env is None:
        print("error: needs a CUDA GPU", file=sys.stderr)
        sys.exit(2)
    seen, todo = set(), []
    for model, ctx in (("bundled", 1024), ("olmoe-1b-7b", 4096)):
        for comp in ("bf16", "int4", "int2", "ternary", "kv4", "kv2", "prune"):
            for op in decode_ops(arch_of(model), comp, ctx):
                if op.key not in seen:
                    seen.add(op.key)
                    todo.append(op)
    launch_profile(todo, env, sys.argv[1] if len(sys.argv) > 1 else "kernel_grids.json")
