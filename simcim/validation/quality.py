"""Perplexity of a compressed model: digital (the quantized kernels) and on simulated CIM crossbars.

Weights: the attention projections become ``simcim.kernels.quant_gemv.QuantizedLinear`` (the Triton
kernels on a GPU, their PyTorch reference on a CPU); the experts, stacked 3-D parameters in
transformers 5 and not ``nn.Linear``, get the same quantizer's dequantized values (the function
the kernel computes). Pruning zeroes the smallest-magnitude expert weights per matrix. The KV
cache is quantized and dequantized in the attention function with ``simcim.kernels.kv_quant``'s own
quantizer, sinks kept in full precision, keys rotated (FWHT) and rotated back: the decode kernel
serves one query at a time, so prefill perplexity uses its quantizer, not its kernel.

The CIM number puts the same compressed attention and expert weights on crossbars with a
``noise_models`` device model (``simcim.crossbar.program_targets_``), as the ``noise_injection``
kind does, and evaluates again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from simcim.kernels.fwht import fwht
from simcim.kernels.kv_quant import dequantize_kv, quantize_kv
from simcim.kernels.quant_formats import QuantConfig, dequantize, quantize
from simcim.kernels.quant_gemv import QuantizedLinear
from simcim.targets import WeightTarget, find_targets, select_targets

KV_IMPL = "simcim_kvquant"


def fake_quantize_(t: WeightTarget, scheme: str) -> None:
    """Replace each ``[out, in]`` slice of ``t`` by its dequantized ``scheme`` codes."""
    config = QuantConfig(scheme)
    mats = t.param.data.reshape(-1, *t.param.shape[-2:])
    for i in range(mats.shape[0]):
        mats[i].copy_(dequantize(quantize(mats[i].float(), config)).to(mats.dtype))


def prune_(t: WeightTarget, sparsity: float) -> None:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights of each ``[out, in]`` slice."""
    mats = t.param.data.reshape(-1, *t.param.shape[-2:])
    for i in range(mats.shape[0]):
        flat = mats[i].abs().flatten().float()
        drop = int(round(flat.numel() * sparsity))
        if drop:
            thresh = flat.kthvalue(drop).values
            mats[i].masked_fill_(mats[i].abs().float() <= thresh, 0.0)


def fake_quantize_kv(k: torch.Tensor, v: torch.Tensor, bits: int, n_sink: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``k, v [B, HKV, T, D]`` through ``quantize_kv`` and back, token order kept."""
    t, d = k.shape[2], k.shape[3]
    k_group = 64 if t >= 64 + n_sink else 16
    cache = quantize_kv(k.to(torch.bfloat16), v.to(torch.bfloat16), bits, k_group, min(64, d), n_sink, rotate=True)
    kq, vq = dequantize_kv(cache)
    sinks = list(range(min(n_sink, t)))
    rest = list(range(len(sinks), t))
    t_q = len(rest) // k_group * k_group
    order = torch.tensor(rest[:t_q] + sinks + rest[t_q:], device=k.device)
    k_out, v_out = torch.empty_like(kq), torch.empty_like(vq)
    k_out[:, :, order], v_out[:, :, order] = kq, vq
    return fwht(k_out).to(k.dtype), v_out.to(v.dtype)  # the orthonormal FWHT is its own inverse


@contextlib.contextmanager
def kv_quantized(model, bits: int) -> Iterator[None]:
    """Within the block, ``model``'s attention sees its keys and values through the KV quantizer."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attend(module, query, key, value, attention_mask, **kwargs):
        key, value = fake_quantize_kv(key, value, bits)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(KV_IMPL, attend)
    saved = model.config._attn_implementation
    model.config._attn_implementation = KV_IMPL
    try:
        yield
    finally:
        model.config._attn_implementation = saved


@contextlib.contextmanager
def quantized_projections(model, scheme: str) -> Iterator[int]:
    """Within the block, every attention ``nn.Linear`` is a ``QuantizedLinear``; yields how many."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for name, module in list(model.named_modules()):
        if not name.endswith("self_attn"):
            continue
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.in_features % 128 == 0:
                setattr(module, child_name, QuantizedLinear.from_linear(child, scheme, 128).to(child.weight.device))
                swapped.append((module, child_name, child))
    try:
        yield len(swapped)
    finally:
        for module, child_name, child in swapped:
            setattr(module, child_name, child)


def targets(model, roles: tuple[str, ...]) -> list[WeightTarget]:
    chosen = select_targets(find_targets(model), roles=list(roles), include=[], exclude=[], layers=None)
    if not chosen:
        raise ValueError(f"the model has no weights of roles {roles}")
    return chosen


@contextlib.contextmanager
def compressed(model, compression: str, sparsity: float, kernels: bool = True) -> Iterator[None]:
    """``model`` under ``compression`` within the block (weights restored afterwards).

    ``kernels``: attention projections through ``QuantizedLinear``; otherwise their weights are
    replaced by the dequantized codes in place (what a crossbar is programmed with).
    """
    from simcim.noise_injection import restored

    chosen = targets(model, ("attention", "experts"))
    with restored(chosen), contextlib.ExitStack() as stack:
        if compression in ("int4", "int2", "ternary"):
            for t in chosen:
                if t.role == "experts" or not kernels:
                    fake_quantize_(t, compression)
            if kernels:
                stack.enter_context(quantized_projections(model, compression))
        elif compression == "prune":
            for t in chosen:
                if t.role == "experts":
                    prune_(t, sparsity)
        elif compression in ("kv4", "kv2"):
            stack.enter_context(kv_quantized(model, int(compression[2])))
        yield
