"""Prompt-side strategies: text put before every evaluation window, and data for calibration.

The reasoning study compares in-context examples and a thinking/reasoning prefix under
device noise. For a perplexity evaluation the closest measurable form is conditioning: each
held-out window is preceded by the prompt's tokens and only the window's own next-token
predictions are scored, so the prompt can help (or hurt) but is never itself scored.

Strategies:
  * ``none``: no prefix (the plain perplexity of ``simcim.evaluate``);
  * ``few_shot``: ``n`` example paragraphs from the corpus's *train* split, each after
    "Example:", then "Text:";
  * ``reasoning``: a fixed instruction to read carefully and reason step by step;
  * ``template``: a user file whose text is the prefix, with ``{examples}`` replaced by the
    few-shot block (so chat or thinking-mode templates of a real model can be used).

Templates are plain text and are tokenized with the model's own tokenizer.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from simcim.bundled.corpus import read_split
from simcim.evaluate import tokenizer_for

STRATEGIES = ("none", "few_shot", "reasoning", "template")
REASONING_PREFIX = ("Read the following text carefully. Think step by step about what each sentence says "
                    "before predicting the next word.\n\n")


def few_shot_examples(n: int, min_chars: int = 120, max_chars: int = 400) -> str:
    """``n`` prose paragraphs of the train split (deterministic: the first that fit the length range)."""
    if n < 1:
        raise ValueError(f"few_shot_examples must be >= 1, got {n}")
    picked = [p.strip() for p in read_split("train").split("\n\n") if min_chars <= len(p.strip()) <= max_chars]
    if len(picked) < n:
        raise ValueError(f"few_shot_examples={n}: the train split has only {len(picked)} suitable paragraphs")
    return "".join(f"Example:\n{p}\n\n" for p in picked[:n])


def prompt_text(strategy: str, n_examples: int = 2, template: Path | None = None) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"prompt {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        return ""
    if strategy == "few_shot":
        return few_shot_examples(n_examples) + "Text:\n"
    if strategy == "reasoning":
        return REASONING_PREFIX
    if template is None:
        raise ValueError("prompt 'template' needs prompt_template, a text file")
    text = Path(template).read_text(encoding="utf-8")
    return text.replace("{examples}", few_shot_examples(n_examples)) if "{examples}" in text else text


@functools.lru_cache(maxsize=8)
def prompt_ids(model_spec: str, vocab_size: int, strategy: str, n_examples: int = 2,
               template: str | None = None) -> torch.Tensor:
    text = prompt_text(strategy, n_examples, Path(template) if template else None)
    if not text:
        return torch.zeros(0, dtype=torch.long)
    return tokenizer_for(model_spec, vocab_size)(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]


@functools.lru_cache(maxsize=4)
def train_token_ids(model_spec: str, vocab_size: int, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` tokens of the bundled corpus's train split (calibration data)."""
    text = read_split("train")
    tok = tokenizer_for(model_spec, vocab_size)
    chars = 8 * n_tokens
    while True:  # tokenize a prefix, not the whole 1.5 MB split
        ids = tok(text[:chars], return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        if ids.numel() > n_tokens or chars >= len(text):
            break
        chars *= 2
    if ids.numel() < n_tokens:
        raise ValueError(f"the train split has {ids.numel()} tokens, fewer than the {n_tokens} asked for")
    return ids[:n_tokens]


@torch.no_grad()
def prefixed_perplexity(model, ids: torch.Tensor, seq_len: int, batch_size: int, prefix: torch.Tensor) -> float:
    """Perplexity of ``seq_len``-token windows of ``ids``, each preceded by ``prefix`` (not scored)."""
    import math

    from simcim.evaluate import perplexity

    if prefix.numel() == 0:
        return perplexity(model, ids, seq_len, batch_size)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and prefix.numel() + seq_len > limit:
        raise ValueError(f"prompt ({prefix.numel()} tokens) + seq_len ({seq_len}) exceeds the model's "
                         f"max_position_embeddings ({limit}); lower seq_len or few_shot_examples")
    device = next(model.parameters()).device
    n = (ids.numel() - 1) // seq_len
    if n < 1:
        raise ValueError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {seq_len + 1}")
    inp = ids[: n * seq_len].view(n, seq_len)
    tgt = ids[1: n * seq_len + 1].view(n, seq_len)
    p = prefix.numel()
    total = 0.0
    for i in range(0, n, batch_size):
        x = inp[i:i + batch_size]
        x = torch.cat([prefix.expand(x.shape[0], p), x], dim=1)
        logits = model(input_ids=x.to(device)).logits[:, p:].float()
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt[i:i + batch_size].reshape(-1).to(device), reduction="sum"
        ).item()
    nll = total / (n * seq_len)
    return math.exp(nll) if nll < 700 else float("inf")
