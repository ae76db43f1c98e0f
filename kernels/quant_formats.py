"""Low-bit weight formats in plain PyTorch: packing, the quantizers, dequantization and the reference product.

Formats (a weight is ``[N, K]``, out x in, as in ``nn.Linear``):

- **int4 / int2**, asymmetric, group-wise along K: group ``g`` of row ``n`` stores a scale ``s`` and a
  zero point ``z`` (both in the activation dtype; ``z`` in quantized units, so it may be fractional
  after rounding to that dtype). A code ``q`` in ``[0, 2^bits)`` means ``(q - z) * s``.
- **ternary trit-planes** (PTQTP's 2 x 1.58-bit form): ``W ~ sum_p alpha_p * T_p`` with each
  ``T_p`` in ``{-1, 0, 1}`` and one ``alpha_p`` per row and group; a trit ``t`` is stored as the
  2-bit code ``t + 1``. Planes are found greedily on the residual (TWN threshold ``0.7 mean|r|``).

Packing: codes of ``bits`` bits, ``PW = 32 / bits`` per int32 word (:func:`pack_codes` puts code ``j``
at bit ``j * bits``), each word holding ``PW`` consecutive weights along K in the order the kernels
unpack them two at a time (:mod:`simcim.kernels._unpack`): weight ``2i`` of a word is code ``i`` and weight
``2i + 1`` is code ``i + PW/2`` (:func:`pack_codes_paired`). Packed weights are ``[P, N, K*bits/32]``
int32 (``P`` planes; 1 for int4/int2), scales and zeros ``[P, N, K/G]``.

A scheme is chosen with one typed config, :class:`QuantConfig`, and :func:`quantize` looks it up in the one
registry :data:`SCHEMES`; the Triton kernels that multiply these weights are in :mod:`simcim.kernels.quant_gemv`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch

__all__ = [
    "Scheme",
    "QuantConfig",
    "SCHEMES",
    "QuantizedWeight",
    "quantize",
    "pack_codes",
    "unpack_codes",
    "pack_codes_paired",
    "unpack_codes_paired",
    "quantize_groupwise",
    "quantize_ternary",
    "dequantize",
    "quant_matmul_reference",
]

Scheme = Literal["int4", "int2", "ternary"]


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``[..., K]`` integer codes in ``[0, 2^bits)`` -> ``[..., K*bits/32]`` int32 words."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8; got {bits}")
    per_word = 32 // bits
    if codes.shape[-1] % per_word:
        raise ValueError(f"last dim {codes.shape[-1]} must be a multiple of {per_word} for {bits}-bit packing")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit packing")
    c = c.reshape(*codes.shape[:-1], codes.shape[-1] // per_word, per_word)
    shifts = torch.arange(per_word, device=codes.device, dtype=torch.int64) * bits
    words = (c << shifts).sum(-1)
    # two's complement view of the unsigned 32-bit word
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_codes(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``[..., W]`` int32 -> ``[..., W*32/bits]`` uint8 codes."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, device=words.device, dtype=torch.int64) * bits
    codes = (words.to(torch.int64)[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*words.shape[:-1], words.shape[-1] * per_word).to(torch.uint8)


def pair_positions(d: int, bits: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Code index (within the row) that holds channel ``c``: :mod:`simcim.kernels._unpack` unpacks the codes of a
    word as ``[c0, c_{PW/2}, c1, c_{PW/2+1}, ...]``, so channel ``c`` is stored there."""
    pw = 32 // bits
    c = torch.arange(d, device=device)
    return (c // pw) * pw + (c % pw) // 2 + (c % 2) * (pw // 2)


def pack_codes_paired(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`pack_codes` with each word's codes in pair order, so :mod:`._unpack` yields channel order."""
    stored = torch.empty_like(codes)
    stored[..., pair_positions(codes.shape[-1], bits, codes.device)] = codes
    return pack_codes(stored, bits)


def unpack_codes_paired(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes_paired`: ``[..., W]`` int32 -> ``[..., W*32/bits]`` uint8 codes in channel order."""
    codes = unpack_codes(words, bits)
    return codes[..., pair_positions(codes.shape[-1], bits, codes.device)]


@dataclasses.dataclass
class QuantizedWeight:
    """A packed ``[N, K]`` weight: ``packed [P, N, K*bits/32]`` int32, scales and zeros ``[P, N, K/G]``."""

    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    bits: int
    group_size: int
    n: int
    k: int
    scheme: Scheme

    @property
    def planes(self) -> int:
        return self.packed.shape[0]

    def nbytes(self) -> int:
        extra = self.zeros.numel() * self.zeros.element_size() if self.zeros is not None else 0
        return self.packed.numel() * 4 + self.scales.numel() * self.scales.element_size() + extra

    def to(self, device: torch.device | str) -> QuantizedWeight:
        return dataclasses.replace(
            self,
            packed=self.packed.to(device),
            scales=self.scales.to(device),
            zeros=None if self.zeros is None else self.zeros.to(device),
        )


def _check_weight(w: torch.Tensor, group_size: int, per_word: int) -> None:
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-d [N, K]; got shape {tuple(w.shape)}")
    if group_size < per_word or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two >= {per_word}; got {group_size}")
    if w.shape[1] % group_size:
        raise ValueError(f"in_features {w.shape[1]} must be a multiple of group_size {group_size}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf")


def quantize_groupwise(
    w: torch.Tensor, bits: int = 4, group_size: int = 128, dtype: torch.dtype | None = None
) -> QuantizedWeight:
    """Asymmetric min/max quantization of ``w [N, K]`` to int4 or int2, one scale and zero per group."""
    if bits not in (2, 4):
        raise ValueError(f"bits must be 4 or 2; got {bits}")
    _check_weight(w, group_size, 32 // bits)
    dtype = dtype or (w.dtype if w.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16)
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    lo = g.amin(-1).clamp(max=0.0)
    hi = g.amax(-1).clamp(min=0.0)
    qmax = (1 << bits) - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-8)
    zero = (-lo / scale).round().clamp(0, qmax)
    codes = (g / scale[..., None] + zero[..., None]).round().clamp(0, qmax).to(torch.uint8).reshape(n, k)
    return QuantizedWeight(
        pack_codes_paired(codes, bits)[None],
        scale.to(dtype)[None],
        zero.to(dtype)[None],
        bits,
        group_size,
        n,
        k,
        "int4" if bits == 4 else "int2",
    )


def quantize_ternary(
    w: torch.Tensor, planes: int = 2, group_size: int = 128, dtype: torch.dtype | None = None
) -> QuantizedWeight:
    """Greedy trit-plane decomposition ``W ~ sum_p alpha_p T_p`` with one alpha per row, group and plane."""
    if planes < 1 or planes > 4:
        raise ValueError(f"planes must be between 1 and 4; got {planes}")
    _check_weight(w, group_size, 16)
    dtype = dtype or (w.dtype if w.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16)
    n, k = w.shape
    r = w.float().reshape(n, k // group_size, group_size).clone()
    packed, alphas = [], []
    for _ in range(planes):
        delta = 0.7 * r.abs().mean(-1, keepdim=True)
        t = torch.sign(r) * (r.abs() > delta)
        count = t.abs().sum(-1).clamp(min=1)
        alpha = ((r * t).sum(-1) / count).to(dtype)
        r = r - alpha.float()[..., None] * t
        packed.append(pack_codes_paired((t + 1).to(torch.uint8).reshape(n, k), 2))
        alphas.append(alpha)
    return QuantizedWeight(torch.stack(packed), torch.stack(alphas), None, 2, group_size, n, k, "ternary")


def dequantize(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``[N, K]`` weight that ``qw`` stands for."""
    codes = unpack_codes_paired(qw.packed, qw.bits).float()
    codes = codes.reshape(qw.planes, qw.n, qw.k // qw.group_size, qw.group_size)
    zero = qw.zeros.float()[..., None] if qw.zeros is not None else 1.0
    w = ((codes - zero) * qw.scales.float()[..., None]).sum(0)
    return w.reshape(qw.n, qw.k).to(dtype)


def quant_matmul_reference(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    y = x.float() @ dequantize(qw, torch.float32).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """How to quantize a weight: ``scheme`` (int4, int2 or ternary), ``group_size`` weights along K per scale
    (a power of two), ``planes`` trit-planes (ternary only, 1-4), ``dtype`` of scales and zeros (None: the
    weight's own 16-bit dtype, else bf16)."""

    scheme: Scheme = "int4"
    group_size: int = 128
    planes: int = 2
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {self.scheme!r}")
        if self.group_size < 1 or self.group_size & (self.group_size - 1):
            raise ValueError(f"group_size must be a power of two; got {self.group_size}")
        if not 1 <= self.planes <= 4:
            raise ValueError(f"planes must be between 1 and 4; got {self.planes}")

    @property
    def bits(self) -> int:
        return 4 if self.scheme == "int4" else 2


# scheme -> quantizer: the one place that maps a scheme's name to how its weights are made
SCHEMES: dict[str, Callable[[torch.Tensor, QuantConfig], QuantizedWeight]] = {
    "int4": lambda w, c: quantize_groupwise(w, 4, c.group_size, c.dtype),
    "int2": lambda w, c: quantize_groupwise(w, 2, c.group_size, c.dtype),
    "ternary": lambda w, c: quantize_ternary(w, c.planes, c.group_size, c.dtype),
}


def quantize(w: torch.Tensor, config: QuantConfig | None = None) -> QuantizedWeight:
    """Quantize ``w [N, K]`` as ``config`` says (default: int4, groups of 128)."""
    config = config or QuantConfig()
    return SCHEMES[config.scheme](w, config)
