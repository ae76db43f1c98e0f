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

``plant_massive_channels_`` gives an OLMoE-style model a massive channel without changing what it
computes: per MoE layer, the router-input channel with the largest |mean| / std is multiplied by
``scale`` in the layer's ``post_attention_layernorm`` weight, and that input column of the router
and of the experts' ``gate_up_proj`` is divided by ``scale``. Clean outputs are the same (up to
rounding), but weight noise on that column now reaches the logits ``scale`` times larger, mostly as
a per-expert bias when the channel's mean dominates its spread, which is how massive channels are
thought to act in large LLMs. ``--plant-scale S --out DIR`` writes such a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
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


def _channel_moments(model: nn.Module, ids: torch.Tensor, seq_len: int, batch_size: int,
                     routers: list[Router]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per router: (mean [hidden], std [hidden]) of its input over the tokens."""
    acc: dict[int, list[torch.Tensor]] = {r.layer: [] for r in routers}

    def hook(layer: int):
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            acc[layer].append(args[0].detach().reshape(-1, args[0].shape[-1]).double().cpu())
        return pre_hook

    handles = [r.module.register_forward_pre_hook(hook(r.layer)) for r in routers]
    device = next(model.parameters()).device
    n = ids.numel() // seq_len
    try:
        with torch.no_grad():
            for batch in _batches(ids[: n * seq_len].view(n, seq_len), batch_size):
                model(input_ids=batch.to(device))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for layer, xs in acc.items():
        x = torch.cat(xs)
        out[layer] = (x.mean(0), x.std(0))
    return out


@torch.no_grad()
def plant_massive_channels_(model: nn.Module, ids: torch.Tensor, seq_len: int, scale: float,
                            batch_size: int = 8) -> dict[int, int]:
    """Scale one router-input channel per MoE layer by ``scale`` and divide its consumers' input
    columns by it (see the module docstring); return layer -> channel. OLMoE layout only."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    routers = require_routers(model)
    if len(ids) < seq_len:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    moments = _channel_moments(model, ids, seq_len, batch_size, routers)
    chosen = {}
    for r in routers:
        mlp_name = r.name.rsplit(".", 1)[0]
        layer_module = model.get_submodule(mlp_name.rsplit(".", 1)[0])
        norm = getattr(layer_module, "post_attention_layernorm", None)
        experts = getattr(model.get_submodule(mlp_name), "experts", None)
        gate_up = getattr(experts, "gate_up_proj", None)
        if norm is None or not isinstance(gate_up, torch.Tensor):
            raise ValueError(f"router {r.name}: not an OLMoE-style layer (post_attention_layernorm and "
                             "experts.gate_up_proj [experts, 2 x intermediate, hidden])")
        mean, std = moments[r.layer]
        c = int((mean.abs() / std.clamp_min(1e-12)).argmax())
        norm.weight[c] *= scale
        r.module.weight[:, c] /= scale
        gate_up[..., c] /= scale
        chosen[r.layer] = c
    return chosen


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
    ap.add_argument("--plant-scale", type=float, default=None,
                    help="write a function-identical copy with one router-input channel per layer scaled by this")
    ap.add_argument("--out", type=Path, default=None, help="--plant-scale: where to write the checkpoint")
    args = ap.parse_args(argv)
    if (args.plant_scale is None) != (args.out is None):
        ap.error("--plant-scale and --out go together")
    if args.tokens < args.seq_len or args.seq_len < 1:
        ap.error(f"--tokens ({args.tokens}) must be at least --seq-len ({args.seq_len}) >= 1")
    model = load_model(args.model, args.device, "auto")
    ids = train_token_ids(args.model, model.config.vocab_size, args.tokens)
    if args.plant_scale is not None:
        from transformers import AutoModelForCausalLM

        from simcim.models import resolve_model_path

        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model), local_files_only=True)
        chosen = plant_massive_channels_(model.eval(), ids, args.seq_len, args.plant_scale)
        model.save_pretrained(args.out, safe_serialization=True)
        print(f"wrote {args.out}: channel per layer {chosen} scaled by {args.plant_scale:g}")
        model = load_model(str(args.out), args.device, "auto")
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
