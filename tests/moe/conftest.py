"""MoE tests also cover a DeepSeek-style checkpoint (shared + routed experts, group-limited sigmoid router)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import save_tiny_model


@pytest.fixture(scope="session")
def moe_models(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """The shared tiny OLMoE, Qwen2-MoE and Mixtral checkpoints plus a DeepSeek-V3-style one."""
    path = tmp_path_factory.mktemp("tiny_moe") / "deepseek_v3"
    return {**tiny_models, "deepseek_v3": save_tiny_model("deepseek_v3", path)}
