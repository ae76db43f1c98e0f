"""Time a ``noise_injection`` and a ``moe_noise`` trial on a random checkpoint of a real MoE's shape.

    python -m simcim.moe.scale --arch olmoe-1b-7b --device cuda --out DIR [--layers N] [--profile]

Writes a random-weight checkpoint (``simcim.moe.random_checkpoint``) to ``DIR/checkpoint``, then
runs one trial of each kind on it with the given device preset, all roles on crossbars, and
``--eval-tokens`` tokens of the bundled corpus's train split (the held-out split is shorter than
16K tokens under the bundled tokenizer). Per kind it reports the model load, the clean reference
(first trial of a process), the time to program every selected weight (``program_s``), to
evaluate (``eval_s``), the trial's wall time and the peak memory (GPU: ``max_memory_allocated``;
CPU: the process's peak resident set). Routing on random weights means nothing, so perplexity is
only a check that the trial ran. ``--profile`` runs one more trial per kind under the profiler and
reports the operators that took most host time and the number of host syncs (``aten::item`` /
``aten::_local_scalar_dense``).
Results go to ``DIR/scale.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from simcim.bundled import CORPUS_DIR

KINDS = ("noise_injection", "moe_noise")
_SYNC_OPS = ("aten::item", "aten::_local_scalar_dense")


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _profiled(fn: Callable[[], dict[str, Any]], top: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        out = fn()
    events = prof.key_averages()
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    table = [{"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6} for e in rows]
    syncs = sum(e.count for e in events if e.key in _SYNC_OPS)
    return out, {"top_ops": table, "host_syncs": syncs}


def trial_params(kind: str, checkpoint: Path, args: argparse.Namespace):
    """The trial's Params: all roles on crossbars, the given preset, train-split evaluation text."""
    from simcim import noise_injection
    from simcim.moe import experiment

    common = dict(model=str(checkpoint), device=args.device, dtype=args.dtype, noise=args.noise, level=args.level,
                  t_inference=args.t_inference, roles=list(noise_injection.DEFAULT_ROLES),
                  eval_tokens=args.eval_tokens, seq_len=args.seq_len, batch_size=args.batch_size,
                  eval_text=CORPUS_DIR / "train.txt")
    if kind == "noise_injection":
        return noise_injection.Params(**common)
    return experiment.Params(**common, diag_tokens=args.diag_tokens)


def run_kind(kind: str, checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    from simcim import noise_injection
    from simcim.models import load_model
    from simcim.moe import experiment

    p = trial_params(kind, checkpoint, args)
    run = noise_injection.run_trial if kind == "noise_injection" else experiment.run_trial
    t0 = time.perf_counter()
    load_model(p.model, p.device, p.dtype)
    load_s = time.perf_counter() - t0
    row: dict[str, Any] = {"kind": kind, "load_s": load_s}
    for trial in range(args.trials + int(args.profile)):
        if p.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        if trial == args.trials:  # one more trial under the profiler, kept apart from the timed ones
            metrics, row["profile"] = _profiled(functools.partial(run, p, trial), args.profile_top)
            row["profile"]["trial_s"] = time.perf_counter() - t0
            continue
        metrics = run(p, trial)
        if p.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        key = "first" if trial == 0 else "next"  # the first trial also measures the clean reference
        row[f"{key}_trial_s"] = wall
        row[f"{key}_program_s"] = float(metrics["program_s"])
        row[f"{key}_eval_s"] = float(metrics["eval_s"])
        row["peak_memory_gib"] = max(row.get("peak_memory_gib", 0.0), _peak_bytes(p.device) / 2**30)
        row["perplexity"] = float(metrics["perplexity"])
        row["noisy_weights"] = int(metrics["noisy_weights"])
        row["eval_tokens_used"] = int(metrics["eval_tokens_used"])
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from simcim.moe.random_checkpoint import ARCHS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="olmoe-1b-7b", choices=sorted(ARCHS))
    ap.add_argument("--layers", type=int, default=None, help="keep only this many decoder layers")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--noise", default="pcm", help="device-model preset")
    ap.add_argument("--level", type=float, default=1.0)
    ap.add_argument("--t-inference", type=float, default=86400.0, help="seconds after programming [s]")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4, help="evaluation windows per forward")
    ap.add_argument("--diag-tokens", type=int, default=4096, help="moe_noise: routing-diagnostic tokens")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--trials", type=int, default=2, help="trials per kind (chips); the first includes the clean "
                                                          "reference")
    ap.add_argument("--profile", action="store_true", help="run one more trial of each kind under the profiler")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="where the random checkpoint is (written there if missing; default OUT/checkpoint)")
    args = ap.parse_args(argv)
    if args.trials < 1:
        ap.error(f"--trials must be >= 1, got {args.trials}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA GPU is available here")
    return args


def main(argv: list[str] | None = None) -> int:
    from simcim.moe.random_checkpoint import write_random_checkpoint

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"arch": args.arch, "layers": args.layers, "device": args.device, "dtype": args.dtype,
                              "noise": args.noise, "level": args.level, "t_inference": args.t_inference,
                              "eval_tokens": args.eval_tokens, "seq_len": args.seq_len}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    checkpoint = args.checkpoint or args.out / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        t0 = time.perf_counter()
        result["parameters"] = write_random_checkpoint(args.arch, checkpoint, args.device, args.dtype,
                                                       layers=args.layers)
        result["write_checkpoint_s"] = time.perf_counter() - t0
    result["kinds"] = [run_kind(kind, checkpoint, args) for kind in args.kinds]
    (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    for row in result["kinds"]:
        prog, ev = row.get("next_program_s", row["first_program_s"]), row.get("next_eval_s", row["first_eval_s"])
        trial = row.get("next_trial_s", row["first_trial_s"])
        print(f"{row['kind']:16s} load {row['load_s']:.1f}s  trial {trial:.1f}s (program {prog:.1f}s = "
              f"{100 * prog / trial:.0f}%, eval {ev:.1f}s)  first trial {row['first_trial_s']:.1f}s  "
              f"peak {row['peak_memory_gib']:.1f} GiB")
        for op in row.get("profile", {}).get("top_ops", []):
            print(f"    {op['self_cpu_s']:8.3f}s {op['calls']:7d}x {op['op']}")
        if "profile" in row:
            print(f"    host syncs: {row['profile']['host_syncs']}")
    print(f"wrote {args.out / 'scale.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
