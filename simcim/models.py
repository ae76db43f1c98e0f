"""Load causal LMs from local Hugging Face checkpoints (never from a hub) or the bundled model."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from simcim.bundled import BUNDLED_DIRS

BUNDLED = "bundled"


def resolve_model_path(spec: str | Path) -> Path:
    """A bundled model's name (``"bundled"``, ``"bundled-64e"``) or a local checkpoint directory."""
    if str(spec) in BUNDLED_DIRS:
        return BUNDLED_DIRS[str(spec)]
    path = Path(spec).expanduser()
    if not path.exists():
        names = " or ".join(repr(n) for n in BUNDLED_DIRS)
        raise ValueError(f"model {spec!s}: no such directory (give {names} or a local Hugging Face "
                         "checkpoint directory; hub names are not downloaded)")
    if not (path / "config.json").is_file():
        raise ValueError(f"model {spec!s}: no config.json in that directory (not a Hugging Face checkpoint)")
    return path.resolve()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here (use device = \"cpu\" or \"auto\")")
    return torch.device(device)


def check_weight_files(path: Path, spec: str | Path) -> None:
    """Open the header of every ``*.safetensors`` file, so a truncated or corrupted one is named."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(f, framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"model {spec}: {f.name} is truncated or corrupted ({first})") from None


@functools.lru_cache(maxsize=2)
def load_model(spec: str, device: str = "auto", dtype: str = "auto"):
    """A causal LM in eval mode on ``device``, in its checkpoint's dtype unless ``dtype`` says otherwise.

    Cached per process: trials that share a model reuse it and restore its weights afterwards.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per trial would drown the sweep's own progress bar
    path = resolve_model_path(spec)
    dev = resolve_device(device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    check_weight_files(path, spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"model {spec}: could not load checkpoint: {first}") from None
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"model {spec}: parameter {name} contains NaN or Inf")
    if dev.type == "cpu" and hasattr(model, "set_experts_implementation"):
        # the per-expert loop beats grouped_mm on CPU (about 2x on the bundled model)
        model.set_experts_implementation("eager")
    return model.to(dev).eval()


@functools.lru_cache(maxsize=2)
def load_tokenizer(spec: str):
    """The checkpoint's own tokenizer, or None when the directory has none."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
