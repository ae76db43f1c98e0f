"""Train the bundled MoE model: ``python -m simcim.bundled.train [--device cuda] [--steps N]``.

A byte-level BPE tokenizer (2048 tokens) and a 4-layer ``OlmoeForCausalLM`` with 8 experts,
top-2 routing (about 2.4M parameters) are trained on the training split of the bundled corpus,
with early stopping on the validation split. The weights are saved as float16 safetensors
(the config says float32, so they load upcast) together with the tokenizer.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from simcim.bundled import CORPUS_DIR, MODEL_DIR
from simcim.bundled.corpus import build_corpus, read_split

VOCAB_SIZE = 2048
SEQ_LEN = 256


def model_config():
    from transformers import OlmoeConfig

    return OlmoeConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_experts=8,
        num_experts_per_tok=2,
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--out", type=Path, default=MODEL_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-only", action="store_true", help="only rebuild the corpus split files")
    args = ap.parse_args(argv)

    if args.corpus_only or not (CORPUS_DIR / "train.txt").is_file():
        print("corpus:", build_corpus())
        if args.corpus_only:
            return
    from transformers import OlmoeForCausalLM

    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(read_split("train"), args.out)
    ids = {s: torch.tensor(tok(read_split(s))["input_ids"], dtype=torch.long) for s in ("train", "valid")}
    print({k: v.numel() for k, v in ids.items()}, "tokens")

    cfg = model_config()
    model = OlmoeForCausalLM(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state, bad = float("inf"), None, 0
    t0 = time.time()
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
        sched.step()
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
    model.load_state_dict(best_state)
    model = model.to("cpu").half()
    model.save_pretrained(args.out, safe_serialization=True)
    cfg_path = args.out / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json["dtype"] = "float32"  # stored as float16 to keep the repo small; evaluate in float32
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    print(f"saved to {args.out}; best valid ppl {best:.2f}")


if __name__ == "__main__":
    main()
