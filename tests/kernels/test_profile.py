"""SASS opcode counts of a compiled kernel, from an offline sm_90 compile (no GPU needed)."""

from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from simcim.kernels.profile import sass_opcodes  # noqa: E402


def _axpy(X, Y, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    tl.store(Y + offs, 2.0 * tl.load(X + offs, mask=mask) + tl.load(Y + offs, mask=mask), mask=mask)


def _offline(block: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.isfile(tool):
        pytest.skip("this triton has no bundled cuobjdump")
    fn = triton.runtime.JITFunction(_axpy)  # compiled, whatever TRITON_INTERPRET says
    src = ASTSource(fn, {"X": "*fp32", "Y": "*fp32", "N": "i32", "BLOCK": "constexpr"}, constexprs={"BLOCK": block})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def test_sass_opcodes_of_an_offline_compile():
    ops = sass_opcodes(_offline(1024))
    assert ops is not None and "NOP" not in ops and "EXIT" in ops
    # 1024 elements over 128 threads: 8 a thread, loaded as vectors or not, one FFMA each
    assert ops["FFMA"] + ops.get("FMUL", 0) >= 8 and ops["LDG"] >= 2 and ops["STG"] >= 1
    wide = sass_opcodes(_offline(4096))
    assert wide["FFMA"] == 4 * ops["FFMA"]  # four times the elements a thread


def test_sass_opcodes_without_a_cubin():
    class Interpreted:
        asm: dict = {}

    assert sass_opcodes(Interpreted()) is None and sass_opcodes(object()) is None
