"""Run one kernel at its benchmark size a few times, for a profiler to look at.

``ncu --kernel-name regex:NAME --launch-skip 5 --launch-count 1 python -m simcim.kernels.profile CASE`` profiles
one warm launch; ``python -m simcim.kernels.profile CASE`` alone prints the compiler's register and spill
counts of the kernel it launched. Cases: gemv_m1, gemv_slices (int4 8192^2), gemv_bundled (int4 256 x 128, the
bundled model's GEMV: one lone program a block of rows), kv_decode, analog.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import torch


def launched_kernels(fn) -> list[dict]:
    """The GPU kernels one call of ``fn`` launches, from a torch.profiler trace: name, grid, block and duration (us)."""
    import json

    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name)).get("traceEvents", [])
    return [{"name": e["name"][:120], "grid": e.get("args", {}).get("grid"), "block": e.get("args", {}).get("block"),
             "us": e.get("dur")} for e in events if e.get("cat") == "kernel"]


def compiled_kernels(fn: object) -> list:
    """The compiled kernels a Triton ``JITFunction`` holds (one per specialization launched so far)."""
    handles = []
    for entry in getattr(fn, "device_caches", {}).values():
        caches = [part for part in entry if isinstance(part, dict)] if isinstance(entry, tuple) else []
        handles.extend(caches[0].values() if caches else [])
    return handles


def sass_opcodes(handle: object) -> collections.Counter | None:
    """Opcodes of a compiled kernel's SASS, NOPs left out (one entry per static instruction), disassembled by the
    ``cuobjdump`` that ships with Triton; None when the kernel has no cubin or the tool is missing."""
    asm = getattr(handle, "asm", None) or {}
    cubin = asm.get("cubin") if isinstance(asm, dict) else None
    if not cubin:
        return None
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.isfile(tool):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    ops = re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass, re.M)
    return collections.Counter(op for op in ops if op != "NOP")


def hopper_ttgir(fn: object, signature: dict[str, str], constexprs: dict, num_warps: int = 4,
                 num_stages: int = 3) -> str:
    """The TTGIR that Triton makes of the ``@triton.jit`` function ``fn`` for an sm_90 (Hopper) GPU; needs no GPU, only
    Triton's CUDA backend, and the interpreter off (``TRITON_INTERPRET`` unset or 0)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = dict(signature) | {name: "constexpr" for name in constexprs}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    return compiled.asm["ttgir"]


def staged_tiles(ttgir: str) -> list[str]:
    """The register tensors a kernel stores into shared memory (``ttg.local_alloc`` of a value: layout changes and
    dot operands), as their TTGIR tensor types, e.g. ``64x128xbf16``."""
    return re.findall(r"ttg\.local_alloc %\S+ : \(tensor<(\d+(?:x\d+)+x\w+),", ttgir)


def _report(handle: object) -> None:
    regs = getattr(handle, "n_regs", "?")
    spills = getattr(handle, "n_spills", "?")
    shared = getattr(getattr(handle, "metadata", None), "shared", "?")
    name = getattr(getattr(handle, "metadata", None), "name", type(handle).__name__)
    ops = sass_opcodes(handle)
    sass = f" SASS instructions={sum(ops.values())}" if ops else ""
    print(f"{name}: registers/thread={regs} spills={spills} shared bytes={shared}{sass}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simcim.kernels.profile")
    parser.add_argument("case", choices=("gemv_m1", "gemv_slices", "gemv_bundled", "kv_decode", "analog"))
    parser.add_argument("--config", default="", help="comma-separated launch config for the gemv cases")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: simcim.kernels.profile needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = "cuda"
    if args.case.startswith("gemv"):
        from simcim.kernels import quant_gemm
        from simcim.kernels import quant_gemv as qg

        n, k = (256, 128) if args.case == "gemv_bundled" else (8192, 8192)
        qw = qg.quantize_groupwise(torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02, 4, 128)
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        cfg = tuple(int(v) for v in args.config.split(",")) if args.config else None
        style = "slices" if args.case == "gemv_slices" else "m1"
        for _ in range(args.repeats):
            qg.quant_matmul(x, qw, config=cfg, gemv=style)
        kernel = qg._qgemv1_kernel if style == "m1" else quant_gemm._qgemv_kernel
    elif args.case == "kv_decode":
        from simcim.kernels import kv_quant as kq

        k = torch.randn(8, 8, 32768, 128, device=dev, dtype=torch.bfloat16)
        cache = kq.quantize_kv(k, torch.randn_like(k), 2, 64, 64, n_sink=4)
        q = torch.randn(8, 32, 128, device=dev, dtype=torch.bfloat16)
        for _ in range(args.repeats):
            kq.kv_decode(q, cache, num_splits=16)
        kernel = kq._kv_split_kernel
    else:
        from simcim.kernels import analog_matmul as am

        cfg_a = am.AnalogConfig(read_noise=0.02, out_noise=0.01)
        aw = am.program_weights(torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16), cfg_a)
        x = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
        for _ in range(args.repeats):
            am.analog_matmul(x, aw, seed=1)
        kernel = am._analog_kernel
    torch.cuda.synchronize()
    for handle in compiled_kernels(kernel):
        _report(handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
