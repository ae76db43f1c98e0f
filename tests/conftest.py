"""Shared fixtures: tiny random-weight MoE checkpoints built from configs (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Small enough to run in seconds, large enough to have tiles, experts and a router. The
# vocabulary matches the bundled tokenizer, which evaluates models that ship none.
TINY = dict(vocab_size=2048, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=1)


def tiny_config(arch: str):
    from transformers import DeepseekV3Config, MixtralConfig, OlmoeConfig, Qwen2MoeConfig

    if arch == "olmoe":
        return OlmoeConfig(**TINY, num_experts=8, num_experts_per_tok=2)
    if arch == "qwen2_moe":
        return Qwen2MoeConfig(**TINY, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24,
                              shared_expert_intermediate_size=40, decoder_sparse_step=1, mlp_only_layers=[])
    if arch == "mixtral":
        return MixtralConfig(**TINY, num_local_experts=8, num_experts_per_tok=2)
    if arch == "deepseek_v3":  # shared + routed experts, group-limited sigmoid router
        return DeepseekV3Config(**TINY, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
                                topk_group=1, first_k_dense_replace=0, moe_intermediate_size=24, q_lora_rank=None,
                                kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    raise ValueError(arch)


def save_tiny_model(arch: str, path: Path) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch))
    with torch.no_grad():  # random init leaves some weights at exactly zero/one; give every matrix real values
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.05)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ("olmoe", "qwen2_moe", "mixtral")}
