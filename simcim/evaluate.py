"""Perplexity of a causal LM on held-out text, in fixed non-overlapping windows."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from simcim.bundled.corpus import read_split
from simcim.models import BUNDLED, load_tokenizer


def tokenizer_for(model_spec: str, vocab_size: int):
    """The model's own tokenizer, or the bundled one when it has none and its vocabulary fits."""
    tok = load_tokenizer(model_spec)
    if tok is None:
        tok = load_tokenizer(BUNDLED)
        if tok.vocab_size > vocab_size:
            raise ValueError(f"model {model_spec}: has no tokenizer and its vocabulary ({vocab_size}) is smaller "
                             f"than the bundled tokenizer's ({tok.vocab_size})")
    return tok


def eval_token_ids(model_spec: str, vocab_size: int, text_file: Path | None, max_tokens: int) -> torch.Tensor:
    """Token ids of the evaluation text under the model's tokenizer (the bundled one if it has none)."""
    text = read_split("heldout") if text_file is None else Path(text_file).read_text(encoding="utf-8")
    tok = tokenizer_for(model_spec, vocab_size)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    if ids.numel() < 2:
        raise ValueError("evaluation text is empty after tokenization")
    return ids[:max_tokens]


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seq_len: int, batch_size: int = 8) -> float:
    """exp(mean next-token cross-entropy) over windows of ``seq_len`` (+1) tokens."""
    device = next(model.parameters()).device
    n = (ids.numel() - 1) // seq_len
    if n < 1:
        raise ValueError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {seq_len + 1}")
    inp = ids[: n * seq_len].view(n, seq_len)
    tgt = ids[1: n * seq_len + 1].view(n, seq_len)
    total = 0.0
    for i in range(0, n, batch_size):
        logits = model(input_ids=inp[i:i + batch_size].to(device)).logits.float()
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt[i:i + batch_size].reshape(-1).to(device), reduction="sum"
        ).item()
    nll = total / (n * seq_len)
    return math.exp(nll) if nll < 700 else float("inf")
