"""The kernels of one decode step of an MoE transformer, per compression, at the model's real shapes.

A step, batch 1, context ``t``: per layer the q/k/v projections, decode attention over the
cache, the output projection, the router (kept in bf16), and ``top_k`` experts (gate+up as one
``[2F, D]`` matrix, then down); then the LM head (kept in bf16). The elementwise glue (norms,
RoPE, activation, residuals, top-k) is left out of both the measured and the predicted step: it
moves kilobytes and is not a kernel of ``kernels/``.

Compressions: ``bf16``; ``int4``/``int2``/``ternary`` weights (attention and experts through
``quant_matmul``); ``kv4``/``kv2`` (``kv_decode`` over a quantized cache); ``prune``
(unstructured magnitude pruning of the experts, through the CSR ``spmm`` kernel). 2:4 sparsity
has no kernel in ``kernels/`` and is not offered.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from simcim.gpu import Work, count

COMPRESSIONS = ("bf16", "int4", "int2", "ternary", "kv4", "kv2", "prune")


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    experts: int
    top_k: int
    expert_ffn: int
    vocab: int
    max_positions: int


def arch_of(model: str) -> Arch:
    """Shapes of ``"bundled"``, of a random-checkpoint architecture (``"olmoe-1b-7b"``), or of a checkpoint dir."""
    from simcim.moe.random_checkpoint import ARCHS

    if model in ARCHS:
        cfg, name = ARCHS[model], model
    else:
        from simcim.models import resolve_model_path

        path = resolve_model_path(model)
        cfg, name = json.loads((path / "config.json").read_text()), Path(str(model)).name
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return Arch(
            name=name,
            hidden=hidden,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            layers=int(cfg["num_hidden_layers"]),
            experts=int(cfg.get("num_experts") or cfg.get("num_local_experts") or 1),
            top_k=int(cfg.get("num_experts_per_tok") or 1),
            expert_ffn=int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            max_positions=int(cfg.get("max_position_embeddings") or 4096),
        )
    except KeyError as e:
        raise ValueError(f"model {model}: config.json lacks {e.args[0]!r}, needed for the decode-step shapes") from None


@dataclasses.dataclass(frozen=True)
class Op:
    """One kernel call: its role in the step, the counter in ``simcim.gpu.counts`` and its shape."""

    role: str
    kernel: str
    shape: tuple[tuple[str, int | str | bool], ...]
    calls: int = 1  # how many times the step makes this exact call

    @property
    def args(self) -> dict[str, int | str | bool]:
        return dict(self.shape)

    @property
    def key(self) -> str:
        return f"{self.kernel}(" + ", ".join(f"{k}={v}" for k, v in self.shape) + ")"

    def work(self) -> Work:
        return count(self.kernel, **self.args)


def _linear(role: str, n: int, k: int, compression: str, sparsity: float, calls: int, expert: bool) -> Op:
    if compression in ("int4", "int2", "ternary"):
        return Op(role, "quant_gemv", (("n", n), ("k", k), ("scheme", compression)), calls)
    if compression == "prune" and expert:
        nnz = int(round(n * k * (1.0 - sparsity)))
        return Op(role, "spmm", (("m", n), ("k", k), ("ncols", 1), ("nnz", nnz)), calls)
    return Op(role, "linear_bf16", (("m", 1), ("n", n), ("k", k)), calls)


def decode_ops(arch: Arch, compression: str, context: int, sparsity: float = 0.5) -> list[Op]:
    """The distinct kernel calls of one decode step, each with how many times the step makes it."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    a, n_layers = arch, arch.layers
    weights = compression if compression in ("int4", "int2", "ternary", "prune") else "bf16"
    q_out, kv_out = a.heads * a.head_dim, a.kv_heads * a.head_dim
    ops = [
        _linear("q_proj", q_out, a.hidden, weights, sparsity, n_layers, False),
        _linear("k_proj", kv_out, a.hidden, weights, sparsity, n_layers, False),
        _linear("v_proj", kv_out, a.hidden, weights, sparsity, n_layers, False),
    ]
    attn = (("b", 1), ("h", a.heads), ("hkv", a.kv_heads), ("t", context), ("d", a.head_dim))
    if compression in ("kv4", "kv2"):
        ops.append(Op("attention", "kv_decode", attn + (("bits", int(compression[2])),), n_layers))
    else:
        ops.append(Op("attention", "sdpa_decode", attn, n_layers))
    ops += [
        _linear("o_proj", a.hidden, q_out, weights, sparsity, n_layers, False),
        Op("router", "linear_bf16", (("m", 1), ("n", a.experts), ("k", a.hidden)), n_layers),
        _linear("expert_gate_up", 2 * a.expert_ffn, a.hidden, weights, sparsity, n_layers * a.top_k, True),
        _linear("expert_down", a.hidden, a.expert_ffn, weights, sparsity, n_layers * a.top_k, True),
        Op("lm_head", "linear_bf16", (("m", 1), ("n", a.vocab), ("k", a.hidden)), 1),
    ]
    return ops


def step_order(arch: Arch, ops: list[Op]) -> list[Op]:
    """The calls of ``ops`` in execution order (layer by layer), one entry per call."""
    by_role = {op.role: op for op in ops}
    per_layer = ["q_proj", "k_proj", "v_proj", "attention", "o_proj", "router"]
    order: list[Op] = []
    for _ in range(arch.layers):
        order += [by_role[r] for r in per_layer]
        for _ in range(arch.top_k):
            order += [by_role["expert_gate_up"], by_role["expert_down"]]
    return order + [by_role["lm_head"]]


def prefill_attention_ops(arch: Arch, context: int) -> list[Op]:
    """Causal prefill attention over ``context`` tokens: the one-pass kernel and the three-pass one."""
    shape = (("b", 1), ("h", arch.heads), ("n", context), ("d", arch.head_dim), ("hkv", arch.kv_heads))
    return [Op("prefill_attention", "fused_attention", shape + (("causal", True),)),
            Op("prefill_attention", "unfused_attention", shape)]


def step_bytes(ops: list[Op]) -> float:
    return sum(op.work().hbm_bytes * op.calls for op in ops)
