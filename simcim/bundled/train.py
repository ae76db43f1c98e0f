"""Train a bundled MoE model: ``python -m simcim.bundled.train [--model NAME] [--device cuda] [--steps N]``.

``--model bundled`` (the default): a byte-level BPE tokenizer (2048 tokens) and a 4-layer
``OlmoeForCausalLM`` with 8 experts, top-2 routing (about 2.4M parameters).
``--model bundled-64e``: OLMoE's routing structure (64 experts, top-8, no top-k renormalization)
at 4 layers, hidden 128, experts of intermediate size 16 (about 2.4M parameters), reusing the
first model's tokenizer (the checkpoint has none; evaluation falls back to the bundled one).
The size flags (``--hidden``, ``--intermediate``, ``--layers``, ``--heads``, ``--experts``,
``--top-k``) override a preset, e.g. for a wider model on a GPU.

Both train on the training split of the bundled corpus with early stopping on the validation
split (``--max-minutes`` also stops at a wall-clock limit, keeping the best checkpoint). The
weights are saved as float16 safetensors (the config says float32, so they load upcast).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import torch

from simcim.bundled import BUNDLED_DIRS, CORPUS_DIR, MODEL_DIR
from simcim.bundled.corpus import build_corpus, read_split

VOCAB_SIZE = 2048
SEQ_LEN = 256

# architecture of each bundled model: hidden, intermediate (per expert), layers, heads, experts, top-k
PRESETS: dict[str, dict[str, int]] = {
    "bundled": dict(hidden=128, intermediate=128, layers=4, heads=4, experts=8, top_k=2),
    "bundled-64e": dict(hidden=128, intermediate=16, layers=4, heads=4, experts=64, top_k=8),
}


def model_config(hidden: int = 128, intermediate: int = 128, layers: int = 4, heads: int = 4, experts: int = 8,
                 top_k: int = 2):
    from transformers import OlmoeConfig

    if hidden % heads:
        raise ValueError(f"--hidden {hidden} is not a multiple of --heads {heads}")
    if not (1 <= top_k <= experts):
        raise ValueError(f"--top-k {top_k} must be in [1, --experts {experts}]")
    return OlmoeConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_experts=experts,
        num_experts_per_tok=top_k,
        norm_topk_prob=False,  # OLMoE's router: top-k probabilities are not renormalized
        max_position_embeddings=SEQ_LEN * 4,
        router_aux_loss_coef=0.01,
        output_router_logits=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )


def train_tokenizer(text: str, out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<pad>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    fast.save_pretrained(out_dir)
    return fast


def batches(ids: torch.Tensor, batch: int, generator: torch.Generator):
    n = ids.numel() - SEQ_LEN - 1
    while True:
        starts = torch.randint(0, n, (batch,), generator=generator)
        x = torch.stack([ids[s: s + SEQ_LEN + 1] for s in starts.tolist()])
        yield x


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, device: str) -> float:
    model.eval()
    n = (ids.numel() - 1) // SEQ_LEN
    x = ids[: n * SEQ_LEN + 1]
    inp = x[:-1].view(n, SEQ_LEN).to(device)
    tgt = x[1:].view(n, SEQ_LEN).to(device)
    total = 0.0
    for i in range(0, n, 16):
        logits = model(input_ids=inp[i:i + 16]).logits.float()
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   tgt[i:i + 16].reshape(-1), reduction="sum").item()
    model.train()
    return math.exp(total / (n * SEQ_LEN))


@torch.no_grad()
def init_from(model, checkpoint: Path) -> list[str]:
    """Copy every tensor of ``checkpoint`` whose name and shape match into ``model``; return the names
    (layer numbers folded) of the copied groups."""
    from safetensors.torch import load_file

    state = load_file(checkpoint / "model.safetensors")
    own = model.state_dict()
    copied = set()
    for name, tensor in state.items():
        if name in own and own[name].shape == tensor.shape:
            own[name].copy_(tensor.to(own[name].dtype))
            copied.add(re.sub(r"layers\.\d+\.", "layers.*.", name))
    if not copied:
        raise ValueError(f"--init-from {checkpoint}: no tensor matches this model's names and shapes")
    return sorted(copied)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", choices=sorted(PRESETS), help="which bundled model to train")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop at this wall time, keep the best so far")
    for flag in PRESETS["bundled"]:
        ap.add_argument(f"--{flag.replace('_', '-')}", type=int, default=None, help="override the preset's size")
    ap.add_argument("--experts-impl", default=None, choices=["eager", "grouped_mm"],
                    help="transformers expert kernel during training (default: grouped_mm for 64 experts)")
    ap.add_argument("--init-from", default=None, choices=sorted(BUNDLED_DIRS),
                    help="start from this trained bundled model's weights wherever name and shape match (embeddings, "
                         "attention, norms, lm_head); experts and routers of another shape start fresh")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the model's asset folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-only", action="store_true", help="only rebuild the corpus split files")
    args = ap.parse_args(argv)
    for flag, value in PRESETS[args.model].items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
        elif getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.out is None:
        args.out = BUNDLED_DIRS[args.model]
    for name in ("steps", "batch", "eval_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    if args.corpus_only or not (CORPUS_DIR / "train.txt").is_file():
        print("corpus:", build_corpus())
        if args.corpus_only:
            return
    from transformers import OlmoeForCausalLM

    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model == "bundled":
        tok = train_tokenizer(read_split("train"), args.out)
    else:  # the other bundled models share the first one's tokenizer
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
    ids = {s: torch.tensor(tok(read_split(s))["input_ids"], dtype=torch.long) for s in ("train", "valid")}
    print({k: v.numel() for k, v in ids.items()}, "tokens")

    sizes = {flag: getattr(args, flag) for flag in PRESETS["bundled"]}
    print(f"model {args.model}: {sizes}; device {args.device}, torch {torch.__version__}")
    cfg = model_config(**sizes)
    model = OlmoeForCausalLM(cfg)
    if args.init_from is not None:
        print("initialized from", args.init_from + ":", ", ".join(init_from(model, BUNDLED_DIRS[args.init_from])))
    model = model.to(args.device)
    impl = args.experts_impl or ("grouped_mm" if args.experts > 8 else None)
    if impl is not None:
        model.set_experts_implementation(impl)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = 100

    def lr_factor(step: int) -> float:
        # cosine over the run; with a wall-clock limit the run ends at whichever comes first, steps or
        # minutes, so the schedule follows the larger fraction done and anneals on a slow machine too
        done = step / args.steps
        if args.max_minutes is not None:
            done = max(done, (time.time() - t0) / (60 * args.max_minutes))
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state, bad = float("inf"), None, 0
    t0 = time.time()
    for group in opt.param_groups:
        group["lr"] = args.lr * lr_factor(0)
    stream = batches(ids["train"], args.batch, gen)
    for step in range(args.steps):
        x = next(stream).to(args.device)
        out = model(input_ids=x[:, :-1], labels=x[:, 1:].contiguous(), output_router_logits=True)
        # labels are already shifted; HF shifts again, so compute the LM loss ourselves
        logits = out.logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        if out.aux_loss is not None:
            loss = loss + cfg.router_aux_loss_coef * out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step + 1)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            ppl = evaluate(model, ids["valid"], args.device)
            print(f"step {step + 1} loss {loss.item():.3f} valid ppl {ppl:.2f} ({time.time() - t0:.0f}s)", flush=True)
            if ppl < best - 1e-3:
                best, bad = ppl, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= 5:
                    print("early stop")
                    break
            if args.max_minutes is not None and time.time() - t0 > 60 * args.max_minutes:
                print(f"time limit ({args.max_minutes} min)")
                break
    model.load_state_dict(best_state)
    if impl is not None:
        model.set_experts_implementation("eager")  # a training-speed choice, not part of the checkpoint
    model = model.to("cpu").half()
    model.save_pretrained(args.out, safe_serialization=True)
    cfg_path = args.out / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json["dtype"] = "float32"  # stored as float16 to keep the repo small; evaluate in float32
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    print(f"saved to {args.out}; best valid ppl {best:.2f}")


if __name__ == "__main__":
    main()
