"""Stacked experts in one grouped analog launch per projection, as a transformers experts implementation.

Registered as ``"simcim_analog"`` with transformers' ``ExpertsInterface`` and set by :class:`AnalogForward`
for the trial. When the Triton kernel computes the product (a GPU, or ``engine = "triton"``) and the experts
are the common layout (concatenated ``gate_up_proj [E, 2I, H]`` and ``down_proj [E, H, I]``, no bias, not
transposed, no post-expert norm), the (token, expert) pairs are sorted by expert and each projection is one
grouped launch in which every expert's rows meet only its own matrix. Otherwise it runs transformers' eager
loop (one ``F.linear`` per expert with its routed tokens), which the analog forward intercepts product by
product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from simcim.analog.model import AnalogForward

NAME = "simcim_analog"
ACTIVE: list[AnalogForward] = []  # the analog forwards entered, innermost last


def register() -> None:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if NAME not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(NAME, analog_experts_forward)


def _common_layout(module: torch.nn.Module) -> bool:
    return (getattr(module, "has_gate", False) and not getattr(module, "has_bias", True)
            and not getattr(module, "is_transposed", True) and getattr(module, "is_concatenated", False)
            and not getattr(module, "has_post_expert_norm", True)
            and isinstance(getattr(module, "gate_up_proj", None), torch.Tensor)
            and isinstance(getattr(module, "down_proj", None), torch.Tensor))


def analog_experts_forward(module: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                           top_k_weights: torch.Tensor) -> torch.Tensor:
    fwd = ACTIVE[-1] if ACTIVE else None
    eager = type(module).forward.__wrapped__
    if fwd is None or not _common_layout(module):
        return eager(module, hidden_states, top_k_index, top_k_weights)
    gate_up, down = fwd.armed(module.gate_up_proj), fwd.armed(module.down_proj)
    if gate_up is None or down is None or not fwd.grouped_on_kernel(hidden_states, gate_up, down):
        return eager(module, hidden_states, top_k_index, top_k_weights)
    n_experts = module.gate_up_proj.shape[0]
    k = top_k_index.shape[-1]
    expert_ids = top_k_index.reshape(-1)
    keep = expert_ids < n_experts  # expert-parallel sentinels route nowhere
    order = torch.argsort(torch.where(keep, expert_ids, n_experts), stable=True)[: int(keep.sum())]
    token_idx = order // k
    counts = torch.bincount(expert_ids[order], minlength=n_experts)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
    h = fwd.grouped_mvm(gate_up, hidden_states[token_idx], offsets)
    h = fwd.grouped_mvm(down, module._apply_gate(h), offsets)
    h = h * top_k_weights.reshape(-1)[order, None].to(h.dtype)
    return torch.zeros_like(hidden_states).index_add_(0, token_idx, h.to(hidden_states.dtype))
