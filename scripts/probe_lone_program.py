"""The probe behind ``lone_instr_ns``: ``python3 scripts/probe_lone_program.py``.

Two tables, each call timed as the median per-call time of 256 calls (distinct inputs) replayed in one CUDA graph:
1. straight-line code (``simcim.kernels.gpu_microbench._straight_kernel``'s body) at 1, 2 and 4 warps, 4 and 16 words a
   thread, 16 / 64 / 256 unrolled steps, with the compiled kernel's SASS instruction count;
2. the fp32-path quantized GEMV on ONE program (n = 64 rows, split-K 1) at 1, 2, 4 and 8 groups a program, its
   weights in L2 or rotated through more copies than L2 holds, against the PyTorch reference.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from simcim.kernels import quant_gemv as qg
from simcim.kernels.bench import Env
from simcim.kernels.gpu_microbench import _graph_time_per_call, _straight_kernel
from simcim.kernels.launch import GemvM1Config
from simcim.kernels.profile import sass_opcodes

CALLS = 256


def straight_line(env: Env) -> None:
    print("warps  words/thread  steps  us/call  SASS  regs")
    words = torch.randint(0, 2**31 - 1, (CALLS, 4096), device="cuda", dtype=torch.int32)
    out = torch.empty(CALLS, 4096, device="cuda", dtype=torch.float32)
    for warps in (1, 2, 4):
        for per_thread in (4, 16):
            for steps in (16, 64, 256):
                block = per_thread * 32 * warps

                def launch(i, s=steps, b=block, w=warps):
                    _straight_kernel[(1,)](words[i], out[i], STEPS=s, BLOCK=b, num_warps=w)

                handle = _straight_kernel.warmup(words[0], out[0], STEPS=steps, BLOCK=block, num_warps=warps,
                                                 grid=(1,))
                ops = sass_opcodes(handle)
                us = _graph_time_per_call(launch, CALLS, env) * 1e6
                print(f"{warps:5d}  {per_thread:12d}  {steps:5d}  {us:7.3f}  {sum(ops.values()) if ops else -1:4d}  "
                      f"{handle.n_regs}")


def lone_gemv(env: Env, l2_bytes: int) -> None:
    print("scheme   weights  k     groups  us/call  copies  rel err")
    for scheme in ("int4", "int2", "ternary"):
        for where in ("l2", "hbm"):
            for k in (128, 256, 512, 1024):
                w = torch.randn(64, k, device="cuda", dtype=torch.bfloat16) * 0.02
                qw = qg.quantize(w, qg.QuantConfig(scheme))
                nbytes = qw.nbytes()
                copies = CALLS if where == "l2" else min(4096, max(CALLS, 2 * l2_bytes // nbytes + 1))
                qws = [dataclasses.replace(qw, packed=qw.packed.clone(), scales=qw.scales.clone(),
                                           zeros=None if qw.zeros is None else qw.zeros.clone()) for _ in range(copies)]
                xs = torch.randn(copies, 1, k, device="cuda", dtype=torch.bfloat16)

                def call(i, xs=xs, qws=qws):
                    return qg.quant_matmul(xs[i], qws[i], config=GemvM1Config(1, 64, 1, 2, 3), unpack="fp32")

                ref = qg.quant_matmul_reference(xs[0].float(), qws[0]).float()
                err = float((call(0).float() - ref).norm() / ref.norm())
                us = _graph_time_per_call(call, copies, env) * 1e6
                resident = "L2" if copies * nbytes < l2_bytes else "HBM"
                print(f"{scheme:8s} {resident:7s}  {k:4d}  {k // 128:6d}  {us:7.3f}  {copies:6d}  {err:.1e}")


def main() -> int:
    if not torch.cuda.is_available():
        print("error: scripts/probe_lone_program.py needs a CUDA GPU", file=sys.stderr)
        return 2
    env = Env(torch.device("cuda"), tiny=False)
    straight_line(env)
    lone_gemv(env, int(torch.cuda.get_device_properties(0).L2_cache_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
