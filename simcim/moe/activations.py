"""Massive-activation channels in the router inputs of an MoE model.

Large LLMs carry a few hidden-state channels whose value is huge on (nearly) every token. A
router computes ``logits = W h``; noise on the router weights of such a channel adds, on every
token, the same large term to each expert's logit: a per-expert bias rather than per-token
jitter, which ROMER's per-expert logit maps can undo. Per router (decoder layer) this reads the
router's input ``h`` on a text with a forward pre-hook and reports

  * ``channel_mean_over_rms``: max over channels c of |mean over tokens of h[:, c]| divided by
    the RMS of h over all tokens and channels (about 1 without massive channels; large models
    reach tens to hundreds);
  * ``peak_over_rms``: max |h| over all tokens and channels divided by the same RMS;
  * ``channel``: the channel with the largest |mean|.

    python -m simcim.moe.activations MODEL [--tokens N] [--seq-len L]

prints these per layer (on train-split tokens of the bundled corpus) and the model's clean
perplexity on the first ``--eval-tokens`` held-out tokens (windows of ``--seq-len``).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch
from torch import nn

from simcim.moe.diagnostics import Router, _batches, require_routers


@dataclasses.dataclass(frozen=True)
class RouterInputChannels:
    """Channel statistics of one router's input over a text (definitions in the module docstring)."""

    layer: int
    channel_mean_over_rms: float
    peak_over_rms: float
    channel: int
    tokens: int


class _Moments:
    """Running per-channel sum, total sum of squares and peak |h| of one router's inputs (float64)."""

    def __init__(self, hidden: int) -> None:
        self.sum = torch.zeros(hidden, dtype=torch.float64)
        self.sq = 0.0
        self.peak = 0.0
        self.n = 0

    def add(self, h: torch.Tensor) -> None:
        x = h.detach().reshape(-1, h.shape[-1]).double()
        self.sum += x.sum(0).cpu()
        self.sq += float(x.square().sum())
        self.peak = max(self.peak, float(x.abs().max()))
        self.n += x.shape[0]


@torch.no_grad()
def router_input_channels(model: nn.Module, ids: torch.Tensor, seq_len: int, batch_size: int = 8,
                          routers: list[Router] | None = None) -> list[RouterInputChannels]:
    """Run ``ids`` through the model in windows of ``seq_len`` and measure every router's input."""
    routers = routers if routers is not None else require_routers(model)
    n = ids.numel() // seq_len
    if n < 1:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    moments = {r.layer: _Moments(int(r.module.weight.shape[1])) for r in routers}

    def hook(layer: int):
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            moments[layer].add(args[0])
        return pre_hook

    handles = [r.module.register_forward_pre_hook(hook(r.layer)) for r in routers]
    device = next(model.parameters()).device
    try:
        for batch in _batches(ids[: n * seq_len].view(n, seq_len), batch_size):
            model(input_ids=batch.to(device))
    finally:
        for h in handles:
            h.remove()
    out = []
    for r in routers:
        m = moments[r.layer]
        rms = (m.sq / (m.n * m.sum.numel())) ** 0.5
        mean = (m.sum / m.n).abs()
        c = int(mean.argmax())
        out.append(RouterInputChannels(layer=r.layer, channel_mean_over_rms=float(mean[c]) / rms,
                                       peak_over_rms=m.peak / rms, channel=c, tokens=m.n))
    return out


def main(argv: list[str] | None = None) -> int:
    from simcim.evaluate import eval_token_ids, perplexity
    from simcim.models import load_model
    from simcim.moe.prompts import train_token_ids

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="'bundled', 'bundled-64e' or a local Hugging Face checkpoint folder")
    ap.add_argument("--tokens", type=int, default=8192, help="train-split tokens of the bundled corpus to read")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens for the clean perplexity")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.tokens < args.seq_len or args.seq_len < 1:
        ap.error(f"--tokens ({args.tokens}) must be at least --seq-len ({args.seq_len}) >= 1")
    model = load_model(args.model, args.device, "auto")
    ids = train_token_ids(args.model, model.config.vocab_size, args.tokens)
    stats = router_input_channels(model, ids, args.seq_len)
    print("layer  channel_mean/rms  peak/rms  channel")
    for s in stats:
        print(f"{s.layer:5d}  {s.channel_mean_over_rms:16.2f}  {s.peak_over_rms:8.1f}  {s.channel:7d}")
    print(f"largest channel mean / RMS over layers: {max(s.channel_mean_over_rms for s in stats):.2f} "
          f"({stats[0].tokens} tokens)")
    held = eval_token_ids(args.model, model.config.vocab_size, None, args.eval_tokens + 1)
    print(f"clean held-out perplexity: {perplexity(model, held, args.seq_len):.2f} "
          f"({(held.numel() - 1) // args.seq_len * args.seq_len} tokens, windows of {args.seq_len})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
