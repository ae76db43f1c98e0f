"""A KV cache quantized to 4 or 2 bits, with sink tokens kept in full precision, in plain PyTorch: the format, the
quantizer, dequantization and the reference decode. The Triton decode kernel is in :mod:`simcim.kernels.kv_quant`.

Cache format (``B`` batch, ``HKV`` kv heads, ``D`` head dim, per batch and head):

- **keys, per channel** (KIVI): tokens are grouped in runs of ``k_group``; each group stores, per
  channel, a step ``s`` and an offset ``lo`` so that ``k ~ code * s + lo`` with ``code`` in
  ``[0, 2^bits)``. Optionally the keys are rotated by the orthonormal Walsh-Hadamard transform on
  write (RotateKV / QuaRot: spreads outlier channels before quantizing); the query is rotated the
  same way at decode, so ``q . k`` is unchanged up to quantization.
- **values, per token**: each token's ``D`` channels are grouped in runs of ``v_group`` with one
  step and offset per group.
- **full-precision tokens**: the first ``n_sink`` tokens, any extra sink positions (attention
  sinks found by :func:`detect_sink_tokens`, the KVSink idea), and the most recent tokens that do
  not yet fill a key group, are kept unquantized in the cache dtype. Decode attention is a sum over
  tokens, so their order does not matter once RoPE has been applied.

Codes are packed ``32 / bits`` to an int32 along the head dim, in the order the kernel unpacks them two
at a time (:mod:`simcim.kernels._unpack`): within a word, channel ``2j`` sits at code ``j`` and channel
``2j + 1`` at code ``j + 16 / bits``, so unpacked words come out in channel order. Steps and offsets are
stored in the cache dtype and the codes are computed against those rounded values.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from simcim.kernels.fwht import fwht
from simcim.kernels.quant_formats import pack_codes_paired as _pack_pairs
from simcim.kernels.quant_formats import unpack_codes_paired as _unpack_pairs

__all__ = [
    "QuantizedKVCache",
    "quantize_kv",
    "dequantize_kv",
    "detect_sink_tokens",
    "kv_decode_reference",
    "decode_reference_dense",
]


@dataclasses.dataclass
class QuantizedKVCache:
    k_words: torch.Tensor  # [B, HKV, TQ, D*bits/32] int32
    k_step: torch.Tensor  # [B, HKV, TQ/k_group, D]
    k_lo: torch.Tensor
    v_words: torch.Tensor  # [B, HKV, TQ, D*bits/32] int32
    v_step: torch.Tensor  # [B, HKV, TQ, D/v_group]
    v_lo: torch.Tensor
    fp_k: torch.Tensor  # [B, HKV, TF, D]: sinks, then the recent tokens that do not fill a key group
    fp_v: torch.Tensor
    n_fp_sink: int
    bits: int
    k_group: int
    v_group: int
    rotated: bool

    @property
    def head_dim(self) -> int:
        return self.fp_k.shape[-1]

    @property
    def kv_heads(self) -> int:
        return self.fp_k.shape[1]

    @property
    def n_quantized(self) -> int:
        return self.k_words.shape[2]

    @property
    def n_tokens(self) -> int:
        return self.n_quantized + self.fp_k.shape[2]

    def nbytes(self) -> int:
        parts = (
            self.k_words,
            self.k_step,
            self.k_lo,
            self.v_words,
            self.v_step,
            self.v_lo,
            self.fp_k,
            self.fp_v,
        )
        return sum(t.numel() * t.element_size() for t in parts)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add tokens ``k, v [B, HKV, T, D]`` (keys unrotated); full key groups are quantized at once."""
        if k.shape != v.shape or k.shape[:2] != self.fp_k.shape[:2] or k.shape[3] != self.head_dim:
            raise ValueError(f"append: k {tuple(k.shape)}, v {tuple(v.shape)} do not fit the cache")
        if self.rotated:
            k = fwht(k)
        fp_k = torch.cat([self.fp_k, k.to(self.fp_k.dtype)], 2)
        fp_v = torch.cat([self.fp_v, v.to(self.fp_v.dtype)], 2)
        recent = fp_k.shape[2] - self.n_fp_sink
        full = recent // self.k_group * self.k_group
        if full:
            s = self.n_fp_sink
            part = _quantize_tokens(
                fp_k[:, :, s : s + full], fp_v[:, :, s : s + full], self.bits, self.k_group, self.v_group
            )
            for name, t in part.items():
                setattr(self, name, torch.cat([getattr(self, name), t], 2))
            fp_k = torch.cat([fp_k[:, :, :s], fp_k[:, :, s + full :]], 2)
            fp_v = torch.cat([fp_v[:, :, :s], fp_v[:, :, s + full :]], 2)
        self.fp_k, self.fp_v = fp_k.contiguous(), fp_v.contiguous()


def _minmax_quantize(x: torch.Tensor, dim: int, bits: int, dtype: torch.dtype):
    qmax = (1 << bits) - 1
    xf = x.float()
    lo = xf.amin(dim, keepdim=True).to(dtype)
    step = ((xf.amax(dim, keepdim=True) - lo.float()) / qmax).to(dtype)
    step = torch.where(step.float() > 0, step, torch.ones_like(step))
    codes = ((xf - lo.float()) / step.float()).round().clamp(0, qmax).to(torch.uint8)
    return codes, step.squeeze(dim), lo.squeeze(dim)


def _quantize_tokens(k: torch.Tensor, v: torch.Tensor, bits: int, k_group: int, v_group: int) -> dict:
    b, h, t, d = k.shape
    kc, ks, kl = _minmax_quantize(k.reshape(b, h, t // k_group, k_group, d), 3, bits, k.dtype)
    vc, vs, vl = _minmax_quantize(v.reshape(b, h, t, d // v_group, v_group), 4, bits, v.dtype)
    return {
        "k_words": _pack_pairs(kc.reshape(b, h, t, d), bits),
        "k_step": ks,
        "k_lo": kl,
        "v_words": _pack_pairs(vc.reshape(b, h, t, d), bits),
        "v_step": vs,
        "v_lo": vl,
    }


def detect_sink_tokens(q_probe: torch.Tensor, k: torch.Tensor, count: int, exclude_first: int = 0) -> list[int]:
    """Positions of the ``count`` tokens that draw the most attention from the probe queries.

    ``q_probe [B, H, P, D]`` (e.g. the last prefill queries), ``k [B, HKV, T, D]``. Attention is
    averaged over batch, heads and probes; the first ``exclude_first`` tokens (kept anyway) are skipped.
    """
    if count < 0 or exclude_first < 0:
        raise ValueError(f"count ({count}) and exclude_first ({exclude_first}) must be >= 0")
    if q_probe.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q_probe.shape[1]}) must be a multiple of kv heads ({k.shape[1]})")
    rep = q_probe.shape[1] // k.shape[1]
    s = q_probe.float() @ k.float().repeat_interleave(rep, 1).transpose(-1, -2) / math.sqrt(k.shape[-1])
    weight = torch.softmax(s, -1).mean(dim=(0, 1, 2))
    weight[:exclude_first] = -1.0
    count = min(count, max(0, k.shape[2] - exclude_first))
    return sorted(int(i) for i in torch.topk(weight, count).indices)


def quantize_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    bits: int = 2,
    k_group: int = 64,
    v_group: int = 64,
    n_sink: int = 4,
    sink_tokens: list[int] | None = None,
    rotate: bool = True,
) -> QuantizedKVCache:
    """Quantize a prefilled cache ``k, v [B, HKV, T, D]`` (fp16/bf16)."""
    if k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"k and v must both be [B, HKV, T, D]; got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.dtype not in (torch.float16, torch.bfloat16) or v.dtype != k.dtype:
        raise ValueError(f"k and v must be fp16 or bf16 of one dtype; got {k.dtype}, {v.dtype}")
    if bits not in (2, 4):
        raise ValueError(f"bits must be 2 or 4; got {bits}")
    b, h, t, d = k.shape
    if d not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim {d} is not supported (16 to 256, a power of two)")
    per_word = 32 // bits
    if k_group < 16 or k_group & (k_group - 1):
        raise ValueError(f"k_group must be a power of two >= 16; got {k_group}")
    if v_group < per_word or v_group & (v_group - 1) or v_group > d:
        raise ValueError(f"v_group must be a power of two between {per_word} and the head dim {d}; got {v_group}")
    if n_sink < 0:
        raise ValueError(f"n_sink must be >= 0; got {n_sink}")
    sinks = sorted(set(range(min(n_sink, t))) | set(sink_tokens or ()))
    if sinks and (sinks[0] < 0 or sinks[-1] >= t):
        raise ValueError(f"sink_tokens must lie in [0, {t}); got {sink_tokens}")
    if rotate:
        k = fwht(k)
    is_sink = torch.zeros(t, dtype=torch.bool, device=k.device)
    is_sink[sinks] = True
    rest = torch.nonzero(~is_sink).flatten()
    t_q = rest.numel() // k_group * k_group
    quant_idx, recent_idx = rest[:t_q], rest[t_q:]
    sink_idx = torch.tensor(sinks, dtype=torch.long, device=k.device)
    fp_idx = torch.cat([sink_idx, recent_idx])
    parts = _quantize_tokens(k[:, :, quant_idx], v[:, :, quant_idx], bits, k_group, v_group)
    parts = {name: t.contiguous() for name, t in parts.items()}
    return QuantizedKVCache(
        **parts,
        fp_k=k[:, :, fp_idx].contiguous(),
        fp_v=v[:, :, fp_idx].contiguous(),
        n_fp_sink=len(sinks),
        bits=bits,
        k_group=k_group,
        v_group=v_group,
        rotated=rotate,
    )


def dequantize_kv(cache: QuantizedKVCache) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, v)`` as the kernel sees them: quantized tokens first, then the full-precision ones (fp32)."""
    b, h, t, _ = cache.k_words.shape
    d = cache.head_dim
    kc = _unpack_pairs(cache.k_words, cache.bits).float().reshape(b, h, t // cache.k_group, cache.k_group, d)
    k = (kc * cache.k_step.float()[:, :, :, None] + cache.k_lo.float()[:, :, :, None]).reshape(b, h, t, d)
    vc = _unpack_pairs(cache.v_words, cache.bits).float().reshape(b, h, t, d // cache.v_group, cache.v_group)
    v = (vc * cache.v_step.float()[..., None] + cache.v_lo.float()[..., None]).reshape(b, h, t, d)
    return torch.cat([k, cache.fp_k.float()], 2), torch.cat([v, cache.fp_v.float()], 2)


def _check_q(q: torch.Tensor, cache: QuantizedKVCache) -> None:
    if q.dim() != 3 or q.shape[0] != cache.fp_k.shape[0] or q.shape[2] != cache.head_dim:
        raise ValueError(f"q must be [B, H, D] = [{cache.fp_k.shape[0]}, H, {cache.head_dim}]; got {tuple(q.shape)}")
    if q.shape[1] % cache.kv_heads:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of kv heads ({cache.kv_heads})")
    if cache.n_tokens == 0:
        raise ValueError("the cache holds no tokens")


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float) -> torch.Tensor:
    rep = q.shape[1] // k.shape[1]
    s = (q.float()[:, :, None, :] @ k.float().repeat_interleave(rep, 1).transpose(-1, -2)) * sm_scale
    return (torch.softmax(s, -1) @ v.float().repeat_interleave(rep, 1))[:, :, 0]


def kv_decode_reference(q: torch.Tensor, cache: QuantizedKVCache, sm_scale: float | None = None) -> torch.Tensor:
    """One decode step ``q [B, H, D]`` against the dequantized cache, in fp32."""
    _check_q(q, cache)
    scale = 1.0 / math.sqrt(cache.head_dim) if sm_scale is None else sm_scale
    k, v = dequantize_kv(cache)
    qr = fwht(q.float()) if cache.rotated else q.float()
    return _attend(qr, k, v, scale).to(q.dtype)


def decode_reference_dense(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float | None = None
) -> torch.Tensor:
    """Unquantized decode attention ``q [B, H, D]`` over ``k, v [B, HKV, T, D]``, in fp32."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    return _attend(q, k, v, scale).to(q.dtype)
