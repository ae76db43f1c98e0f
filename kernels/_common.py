"""What every kernel module shares: the choice between the Triton kernel and the PyTorch reference.

A kernel runs through Triton when its tensors live on a CUDA GPU, or when the Triton interpreter
is on (``TRITON_INTERPRET=1``, which is how CI runs the kernels on CPU tensors). Otherwise the
module falls back to its reference and says so once per module.
"""

from __future__ import annotations

import os
import warnings

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - triton is a declared dependency of the kernels extra
    HAVE_TRITON = False

_warned: set[str] = set()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


if HAVE_TRITON:
    # The interpreter (triton 3.9) multiplies bf16 operands of tl.dot wrongly; fp32 is exact there.
    _DOT_UPCAST = tl.constexpr(interpreting())

    @triton.jit
    def mma(a, b):
        """``tl.dot(a, b)`` with an fp32 accumulator; upcasts its operands under the interpreter."""
        if _DOT_UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32))
        else:
            return tl.dot(a, b)

    @triton.jit
    def codes_to_float(field):
        """Non-negative int32 codes below 2^23 to fp32 without I2F (a quarter-rate instruction on Hopper):
        OR in the exponent of 2^23, reinterpret the bits as fp32 (= 2^23 + code exactly), subtract 2^23."""
        return (field | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


def use_triton(module: str, *tensors: torch.Tensor) -> bool:
    """True when ``tensors`` can go through the Triton kernel; warns once per module when not."""
    on_cuda = all(t.is_cuda for t in tensors)
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    if not (on_cuda or on_cpu):
        raise ValueError(f"{module}: tensors are on different devices ({sorted({str(t.device) for t in tensors})})")
    if HAVE_TRITON and (on_cuda or interpreting()):
        return True
    if module not in _warned:
        _warned.add(module)
        why = "triton is not installed" if not HAVE_TRITON else "no CUDA tensors and TRITON_INTERPRET is off"
        warnings.warn(f"{module}: {why}; using the PyTorch reference", RuntimeWarning, stacklevel=3)
    return False


def check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
