"""Random-weight checkpoints with the configuration of a real MoE model, for runs at real scale.

No weights are downloaded: the architecture is written out here and the weights are drawn
from N(0, 0.02) (the models' own initializer range), so routing is not meaningful but every
shape, every expert and every cost is. The checkpoint has no tokenizer; evaluation then uses
the bundled tokenizer (its 2048 ids are a subset of the model's vocabulary).

    python -m simcim.moe.random_checkpoint --arch olmoe-1b-7b --out /tmp/olmoe --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

# allenai/OLMoE-1B-7B-0924 (config.json of the release): 16 layers, 64 experts, top-8, 6.9B parameters
OLMOE_1B_7B = dict(vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16,
                   num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8,
                   max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5, norm_topk_prob=False,
                   clip_qkv=None, tie_word_embeddings=False, pad_token_id=1, bos_token_id=None, eos_token_id=50279)
# the same architecture at a size a test can build in a second
OLMOE_SMALL = dict(OLMOE_1B_7B, vocab_size=2048, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2,
                   max_position_embeddings=512, eos_token_id=1)
ARCHS = {"olmoe-1b-7b": OLMOE_1B_7B, "olmoe-small": OLMOE_SMALL}


def build_config(arch: str, layers: int | None = None):
    """The architecture's config; ``layers`` keeps only that many decoder layers (same shapes each)."""
    from transformers import OlmoeConfig

    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r} is not one of {', '.join(ARCHS)}")
    if layers is not None and not (1 <= layers <= ARCHS[arch]["num_hidden_layers"]):
        raise ValueError(f"layers {layers} must be in [1, {ARCHS[arch]['num_hidden_layers']}] for {arch}")
    return OlmoeConfig(**dict(ARCHS[arch], num_hidden_layers=layers or ARCHS[arch]["num_hidden_layers"]))


@torch.no_grad()
def write_random_checkpoint(arch: str, out: Path, device: str = "cpu", dtype: str = "bfloat16",
                            seed: int = 0, layers: int | None = None) -> int:
    """Write a random-weight ``arch`` checkpoint (optionally only ``layers`` decoder layers) to ``out``;
    return its parameter count."""
    from transformers import AutoModelForCausalLM

    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype {dtype!r} is not one of bfloat16, float16, float32")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here")
    cfg = build_config(arch, layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    gen = torch.Generator(device=device).manual_seed(seed)
    for p in model.parameters():
        if p.ndim >= 2:  # norms keep their ones; every matrix, expert stack and router gets real values
            p.normal_(0.0, 0.02, generator=gen)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="cpu", help="where to draw the weights (cuda is much faster)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=None, help="keep only this many decoder layers (CPU profiling)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    n = write_random_checkpoint(args.arch, args.out, args.device, args.dtype, args.seed, args.layers)
    print(f"{args.arch}: {n / 1e9:.2f}B parameters ({args.dtype}) written to {args.out} "
          f"in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
