"""Time a model's evaluation with the analog forward beside the weights forward.

For each forward (``weights``; ``analog-device``: the device's 1/f read noise per weight; ``analog-fixed``: a
fixed read sigma; both run on the Triton kernel on a GPU and on the PyTorch reference on CPU) one
``noise_injection`` trial is run to warm up (it also measures the clean perplexity), then a second one
is timed. Writes one CSV row per forward: evaluation seconds, tokens per second, the ratio to the
weights forward, perplexity.

    python -m simcim.analog.bench --model bundled --device cuda --eval-tokens 16384 --csv out.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from simcim.experiments.report import write_csv
from simcim.noise_injection import Params, run_trial

FORWARDS = {
    "weights": dict(forward="weights"),
    "analog-device": dict(forward="analog", read_noise="device"),  # the device's 1/f read noise, per weight
    "analog-fixed": dict(forward="analog", read_noise="fixed", read_sigma=0.01),  # one sigma: no variance stored
}


def run(model: str, device: str, dtype: str, eval_tokens: int, seq_len: int, batch_size: int,
        tile_rows: int, forwards: list[str] | None = None, csv_path: Path | None = None) -> list[dict[str, object]]:
    """One row per forward; each row is written to ``csv_path`` as soon as it is measured."""
    rows: list[dict[str, object]] = []
    base = dict(model=model, device=device, dtype=dtype, noise="pcm", level=1.0, t_inference=3600.0,
                eval_tokens=eval_tokens, seq_len=seq_len, batch_size=batch_size, tile_rows=tile_rows,
                dac_bits=8, adc_bits=8, out_noise=0.04)
    for name in ["weights"] + [f for f in (forwards or list(FORWARDS)) if f != "weights"]:
        p = Params(**{**base, **FORWARDS[name]})
        run_trial(p, 0)
        m = run_trial(p, 1)
        tokens = int(m["eval_tokens_used"])
        rows.append({"forward": name, "model": model, "device": device, "eval_tokens": tokens,
                     "eval_s": m["eval_s"], "program_s": m["program_s"], "tokens_per_s": tokens / m["eval_s"],
                     "perplexity": m["perplexity"], "clean_perplexity": m["clean_perplexity"]})
        rows[-1]["eval_vs_weights"] = float(rows[-1]["eval_s"]) / float(rows[0]["eval_s"])
        print(f"{name}: eval {m['eval_s']:.2f} s ({tokens / m['eval_s']:.0f} tokens/s, "
              f"{rows[-1]['eval_vs_weights']:.2f}x weights), perplexity {m['perplexity']:.3f} "
              f"(clean {m['clean_perplexity']:.3f})", flush=True)
        if csv_path is not None:
            write_csv(csv_path, rows)
    return rows




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tile-rows", type=int, default=128)
    ap.add_argument("--forward", action="append", choices=list(FORWARDS), help="repeatable; weights always runs")
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args(argv)
    run(args.model, args.device, args.dtype, args.eval_tokens, args.seq_len, args.batch_size, args.tile_rows,
        args.forward, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
