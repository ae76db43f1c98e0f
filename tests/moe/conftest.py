"""A tiny DeepSeek-style checkpoint (shared + routed experts, group-limited sigmoid router)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY = dict(vocab_size=2048, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=1)


def save_tiny_deepseek(path: Path) -> Path:
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    cfg = DeepseekV3Config(**TINY, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
                           topk_group=1, first_k_dense_replace=0, moe_intermediate_size=24, q_lora_rank=None,
                           kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.05)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def moe_models(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """The shared tiny OLMoE, Qwen2-MoE and Mixtral checkpoints plus a DeepSeek-V3-style one."""
    return {**tiny_models, "deepseek_v3": save_tiny_deepseek(tmp_path_factory.mktemp("tiny_moe") / "deepseek_v3")}
