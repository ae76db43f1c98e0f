"""Experiment kind ``gpu_model_blind``: the GPU model predicts kernel calls no one has seen; then the GPU times them.

One trial

1. draws ``calls`` distinct kernel calls at random from :data:`SPACE` (every kernel the model counts, with its
   shapes, bits, group size, context length, batch and head counts) from a seed chosen at random at the start
   (or ``draw_seed``), and prints the seed;
2. predicts each call with the GPU model (``simcim.gpu``) and the spec ``gpu_spec``, and writes the predictions, with
   the model's source hash, the git commit and the whole spec, to ``artifacts/<trial>/predictions.json`` before
   anything is timed;
3. times the calls on the GPU (``simcim.validation.measure.time_op``), appending each time to
   ``measurements.jsonl`` as it comes;
4. scores them (:func:`score`): mean, median and 90th percentile of the absolute error, and the worst five with what
   the model thought bounds them. The score is labelled *blind* only when the model's source hash at scoring equals
   the one written with the predictions, and every time was taken after the predictions were written.

A trial that is killed resumes from its files: stored predictions are kept, never made again, and calls already
timed are not timed again. Without a CUDA GPU (or ``measure = "off"``) the trial draws and predicts only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext
from simcim.gpu import counts
from simcim.gpu.model import GPUSpec, load_spec, predict, spec_path

# --------------------------------------------------------------------------------------------- the space drawn from

# hidden and FFN widths of open LLMs (all multiples of 256, so every group size divides them)
WIDTHS = (512, 1024, 1536, 2048, 2816, 3072, 4096, 5120, 6144, 8192, 11008, 14336)
OUTPUTS = (64, 128, 256) + WIDTHS  # a GEMV's rows: router and KV-projection widths too
CONTEXTS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
HEADS = ((8, 8), (12, 12), (16, 16), (32, 32), (16, 4), (28, 4), (32, 8), (40, 8), (64, 8))  # (query, kv heads)
GiB = 2**30

Pick = Callable[[tuple], Any]


def _linear_bf16(pick: Pick) -> dict:
    return {"m": pick((1, 2, 4, 8, 16, 32)), "n": pick(OUTPUTS), "k": pick(WIDTHS)}


def _quant_gemv(pick: Pick) -> dict:
    return {"n": pick(OUTPUTS), "k": pick(WIDTHS), "scheme": pick(("int4", "int2", "ternary")),
            "group": pick((64, 128, 256))}


def _heads_cache(pick: Pick) -> dict:
    h, hkv = pick(HEADS)
    return {"b": pick((1, 2, 4, 8)), "h": h, "hkv": hkv, "t": pick(CONTEXTS), "d": pick((64, 128))}


def _kv_decode(pick: Pick) -> dict:
    return _heads_cache(pick) | {"bits": pick((2, 4))}


def _attention(pick: Pick, causal: bool) -> dict:
    h, hkv = pick(HEADS)
    a = {"b": pick((1, 2, 4)), "h": h, "n": pick((256, 512, 1024, 2048, 4096, 8192)), "d": pick((64, 128)),
         "hkv": hkv}
    return a | {"causal": pick((True, False))} if causal else a


def _spmm(pick: Pick) -> dict:
    m, k = pick(WIDTHS[:10]), pick(WIDTHS[:10])
    return {"m": m, "k": k, "ncols": pick((1, 4, 16, 64)), "nnz": round(m * k * pick((0.5, 0.25, 0.1, 0.01)))}


def _embedding_bag(pick: Pick) -> dict:
    return {"bags": pick((256, 1024, 4096, 16384)), "per_bag": pick((4, 16, 64)), "dim": pick((64, 128, 256)),
            "vocab": pick((10_000, 100_000, 1_000_000)), "elem_bytes": pick((2, 4))}


def _fwht(pick: Pick) -> dict:
    return {"rows": pick((256, 4096, 65536, 1 << 18, 1 << 20)), "d": pick((32, 64, 128, 256, 512, 1024)),
            "elem_bytes": pick((2, 4))}


def _cache_bytes(a: dict) -> int:
    return 4 * a["b"] * a["hkv"] * a["t"] * a["d"]  # K and V in bf16


@dataclasses.dataclass(frozen=True)
class Kernel:
    """How the blind protocol draws calls of one counter of ``simcim.gpu.counts``: ``draw`` picks its arguments,
    ``fits`` keeps a call's memory (a few GB with its copies) and time (milliseconds) small enough to time in bulk."""

    draw: Callable[[Pick], dict]
    fits: Callable[[dict], bool]


SPACE: dict[str, Kernel] = {
    "linear_bf16": Kernel(_linear_bf16, lambda a: a["n"] * a["k"] <= 1 << 28),
    "quant_gemv": Kernel(_quant_gemv, lambda a: a["n"] * a["k"] <= 1 << 28),
    "sdpa_decode": Kernel(_heads_cache, lambda a: _cache_bytes(a) <= GiB),
    "kv_decode": Kernel(_kv_decode, lambda a: _cache_bytes(a) <= GiB),
    "fused_attention": Kernel(lambda pick: _attention(pick, True), lambda a: a["b"] * a["h"] * a["n"] ** 2 <= 1 << 33),
    "unfused_attention": Kernel(lambda pick: _attention(pick, False),
                                lambda a: 4 * a["b"] * a["h"] * a["n"] ** 2 <= GiB),
    "spmm": Kernel(_spmm, lambda a: a["m"] * a["k"] <= 1 << 26),
    "embedding_bag": Kernel(_embedding_bag, lambda a: a["vocab"] * a["dim"] * a["elem_bytes"] <= GiB),
    "fwht": Kernel(_fwht, lambda a: a["rows"] * a["d"] <= 1 << 28),
}


def call_key(kernel: str, args: dict) -> str:
    return f"{kernel}(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


def draw(seed: int, n: int) -> list[tuple[str, dict]]:
    """``n`` distinct calls ``(kernel, args)``: the kernels in turn (so each is drawn about ``n / len(SPACE)``
    times), each call's arguments at random within its kernel's space, then the calls in a random order."""
    if n < 1:
        raise ValueError(f"calls must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    pick: Pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    kernels = list(SPACE)
    out, seen = [], set()
    for i in range(n):
        kernel = kernels[i % len(kernels)]
        for _ in range(1000):
            args = SPACE[kernel].draw(pick)
            if SPACE[kernel].fits(args) and call_key(kernel, args) not in seen:
                break
        else:  # pragma: no cover (the space holds thousands of calls a kernel)
            raise ValueError(f"the space of {kernel} ran out of distinct calls")
        seen.add(call_key(kernel, args))
        out.append((kernel, args))
    return [out[i] for i in rng.permutation(n)]


# ---------------------------------------------------------------------------------------------- what was predicted

def model_hash() -> str:
    """SHA-256 (first 16 hex digits) of the GPU model's source: every ``.py`` file of ``simcim/gpu``."""
    root = Path(counts.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _commit() -> str:
    from simcim.experiments.store import git_commit

    return git_commit.__wrapped__()  # not the cached one: the tree may have changed since the process started


def table_notes(kernel: str, a: dict) -> list[str]:
    """Where the model predicts ``kernel`` at ``a`` without a table of its compiled code for that config."""
    notes = []
    if kernel == "linear_bf16" and (a["m"] > 1 or (a["n"], a["k"]) not in counts.CUBLAS_GEMV_GRIDS):
        notes.append("cuBLAS grid not profiled at this shape: taken to fill the GPU")
    if kernel == "quant_gemv":
        if a["n"] * a["k"] >= counts.F16ACC_MIN_WEIGHTS:
            notes.append("f16acc path: no SASS count")
        if a.get("group", 128) != 128:
            notes.append(f"group {a['group']}: the compiled-code tables hold group 128")
    if kernel == "kv_decode":
        if (a["bits"], a["d"]) not in counts.KV_SPLIT_RESOURCES:
            notes.append("split kernel's registers not compiled for this head dim")
        if (a["bits"], a["d"]) not in counts.KV_SPLIT_INSTR:
            notes.append("split kernel: no SASS count at this head dim")
    if kernel == "sdpa_decode" and a["b"] > 1:
        notes.append("cuDNN's splits as profiled at batch 1")
    if kernel == "fwht" and (2 if a["elem_bytes"] == 2 else 4, a["d"]) not in ((2, 32), (2, 128)):
        notes.append("SASS count from an offline compile, not the device's")
    return notes


BODY = ("launch", "hbm", "l2", "compute", "chain")  # the terms a launch's time is the sum or the largest of


def predict_calls(calls: list[tuple[str, dict]], spec: GPUSpec) -> list[dict]:
    """Each call's prediction on ``spec``: from L2 when its rotated inputs fit there (as ``measure.time_op`` runs
    it), else from HBM."""
    from simcim.validation.decode_step import Op
    from simcim.validation.measure import stays_in_l2

    rows = []
    for kernel, args in calls:
        work = counts.count(kernel, **args)
        resident = stays_in_l2(Op("blind", kernel, tuple(args.items())), int(spec.l2_mib * 2**20))
        p = predict(work, spec, l2_resident=resident)
        top = sorted(((p.terms[k], k) for k in BODY if p.terms[k] > 0), reverse=True)[:2]
        rows.append({"kernel": kernel, "args": args, "call": call_key(kernel, args), "family": work.kernel,
                     "pred_us": p.time_s * 1e6, "bound": p.bound, "l2_resident": resident,
                     "terms": ", ".join(f"{k} {v * 1e6:.3g} us" for v, k in top),
                     "notes": "; ".join(table_notes(kernel, args))})
    return rows


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_predictions(path: Path, seed: int, gpu_spec: str, rows: list[dict]) -> dict:
    """The predictions file: every prediction, the draw seed, the model's source hash and commit, the whole spec."""
    spec_file = spec_path(gpu_spec)
    record = {"kind": "gpu_model_blind", "draw_seed": seed, "calls": len(rows), "written_at": _now(),
              "model_hash": model_hash(), "git_commit": _commit(), "gpu_spec": str(gpu_spec),
              "spec_sha256": hashlib.sha256(spec_file.read_bytes()).hexdigest()[:16],
              "spec": dataclasses.asdict(load_spec(gpu_spec)), "predictions": rows}
    _write_atomic(path, json.dumps(record, indent=1))
    return record


def read_measurements(path: Path) -> dict[str, dict]:
    """The times taken so far, by call (a line cut short by a kill is dropped)."""
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[m["call"]] = m
    return out


# ------------------------------------------------------------------------------------------------------- the score

def score(t: pd.DataFrame) -> dict[str, Any]:
    """The error distribution of a table with ``call``, ``pred_us``, ``meas_us``, ``bound`` (and optionally
    ``terms``, ``notes``): rows without a positive measured time are left out and counted."""
    ok = t["meas_us"].notna() & (t["meas_us"] > 0)
    s = t[ok].copy()
    s["err_pct"] = 100 * (s["pred_us"] - s["meas_us"]) / s["meas_us"]
    ape = s["err_pct"].abs()
    out: dict[str, Any] = {"n_scored": int(len(s)), "n_unscored": int((~ok).sum())}
    if s.empty:
        return out | {k: math.nan for k in ("mape_pct", "median_ape_pct", "p90_ape_pct", "max_ape_pct",
                                            "within_10_pct", "within_20_pct")} | {"worst5": []}
    out |= {"mape_pct": float(ape.mean()), "median_ape_pct": float(ape.median()),
            "p90_ape_pct": float(np.percentile(ape, 90)), "max_ape_pct": float(ape.max()),
            "within_10_pct": float(100 * (ape <= 10).mean()), "within_20_pct": float(100 * (ape <= 20).mean())}
    worst = s.loc[ape.sort_values(ascending=False).index[:5]]
    out["worst5"] = [why(r) for _, r in worst.iterrows()]
    return out


def why(r: pd.Series) -> str:
    """One line on a miss: the call, its error, what the model thought bounds it, and its tables' gaps."""
    side = "over" if r["err_pct"] > 0 else "under"
    line = (f"{r['call']}: {r['err_pct']:+.0f}% ({side}-predicted: {r['pred_us']:.3g} us against {r['meas_us']:.3g}); "
            f"model bound {r['bound']}")
    if isinstance(r.get("terms"), str) and r["terms"]:
        line += f" ({r['terms']})"
    if isinstance(r.get("notes"), str) and r["notes"]:
        line += f"; {r['notes']}"
    return line


def label(predicted_hash: str, scored_hash: str, before: bool, n_scored: int) -> str:
    if n_scored == 0:
        return "not measured"
    if predicted_hash != scored_hash:
        return f"not blind: the model's source changed between prediction ({predicted_hash}) and scoring " \
               f"({scored_hash})"
    if not before:
        return "not blind: a time was taken before the predictions were written"
    return "blind"


# ------------------------------------------------------------------------------------------------------- the kind

@dataclasses.dataclass(frozen=True)
class Params:
    calls: int = param(64, ge=60, le=2000, help="kernel calls drawn at random from the space (distinct)")
    draw_seed: int | None = param(None, ge=0, help="seed of the draw (plus the trial's seed); unset: chosen at "
                                                   "random when the trial starts, printed and stored")
    gpu_spec: str = param("h200", help="bundled GPU spec name (simcim/gpu/specs) or a spec .toml file, e.g. one "
                                       "that kernels.gpu_microbench just measured")
    measure: Literal["auto", "off"] = param("auto", help="time the calls on the GPU when one is present")
    time_budget_s: float = param(0.0, ge=0, help="seconds of timing after which the calls left are not timed "
                                                 "(0: no limit) [s]")

    def __post_init__(self) -> None:
        try:
            load_spec(self.gpu_spec)
        except ValueError as e:
            raise ValueError(f"gpu_spec: {e}") from None


DEFAULT_METRICS = ("mape_pct", "median_ape_pct", "p90_ape_pct", "max_ape_pct")


def _predictions(p: Params, seed: int, path: Path) -> dict:
    """The trial's stored predictions, or a new draw predicted and written now."""
    if path.is_file():
        record = json.loads(path.read_text(encoding="utf-8"))
        stale = p.draw_seed is not None and record["draw_seed"] != p.draw_seed + seed
        if record["gpu_spec"] != str(p.gpu_spec) or record["calls"] != p.calls or stale:
            raise ValueError(f"{path} holds predictions of {record['calls']} calls (seed {record['draw_seed']}) on "
                             f"{record['gpu_spec']!r}, not this trial's")
        print(f"gpu_model_blind: draw seed {record['draw_seed']}: the predictions written at "
              f"{record['written_at']} are kept ({path})", flush=True)
        return record
    drawn = secrets.randbelow(2**31) if p.draw_seed is None else p.draw_seed + seed
    print(f"gpu_model_blind: draw seed {drawn} ({p.calls} calls, spec {p.gpu_spec}); predictions written to "
          f"artifacts/<trial>/{path.name} before any timing", flush=True)
    rows = predict_calls(draw(drawn, p.calls), load_spec(p.gpu_spec))
    return write_predictions(path, drawn, p.gpu_spec, rows)


def _time_calls(record: dict, path: Path, budget_s: float) -> None:
    """Time each predicted call not yet in ``path``, appending its line as soon as it is taken."""
    import time

    import torch

    from simcim.validation import measure
    from simcim.validation.decode_step import Op

    env = measure.gpu_env()
    done = read_measurements(path)
    t0 = time.perf_counter()
    with open(path, "a", encoding="utf-8") as f:
        for r in record["predictions"]:
            if r["call"] in done:
                continue
            line = {"call": r["call"], "meas_us": None, "l2_resident": None, "error": None}
            if budget_s and time.perf_counter() - t0 > budget_s:
                line["error"] = f"not timed: the time budget of {budget_s:g} s ran out"
            else:
                try:
                    sec, resident = measure.time_op(Op("blind", r["kernel"], tuple(r["args"].items())), env)
                    line |= {"meas_us": sec * 1e6, "l2_resident": bool(resident)}
                except (RuntimeError, ValueError) as e:  # torch.OutOfMemoryError is a RuntimeError
                    line["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                    torch.cuda.empty_cache()
            line["measured_at"] = _now()
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _resume_files(ctx: TrialContext) -> tuple[Path, Path]:
    """The trial's predictions and measurements files, seeded with what an earlier attempt stored in the run
    folder (a runner may hand the trial a fresh scratch folder for its artifacts)."""
    here, stored = ctx.artifact_dir, ctx.run_dir / "artifacts" / ctx.trial_id
    for name in ("predictions.json", "measurements.jsonl"):
        if (stored / name).is_file() and not (here / name).exists():
            shutil.copyfile(stored / name, here / name)
    return here / "predictions.json", here / "measurements.jsonl"


def run_trial(p: Params, seed: int, ctx: TrialContext) -> dict[str, Any]:
    pred_path, meas_path = _resume_files(ctx)
    record = _predictions(p, seed, pred_path)
    device = "not measured (measure = 'off')"
    if p.measure == "auto":
        from simcim.validation.measure import gpu_env

        if gpu_env() is None:
            device = "not measured: no CUDA GPU here"
        else:
            import torch

            device = torch.cuda.get_device_name()
            _time_calls(record, meas_path, p.time_budget_s)
    meas = read_measurements(meas_path)
    t = pd.DataFrame(record["predictions"])
    t["meas_us"] = [meas.get(c, {}).get("meas_us") for c in t["call"]]
    t["meas_us"] = t["meas_us"].astype(float)
    t["error"] = [meas.get(c, {}).get("error") or "" for c in t["call"]]
    times = [m["measured_at"] for m in meas.values()]
    before = all(m > record["written_at"] for m in times)
    s = score(t)
    scored_hash = model_hash()
    out: dict[str, Any] = {
        "label": label(record["model_hash"], scored_hash, before, s["n_scored"]),
        "seed_drawn": record["draw_seed"], "gpu_spec_name": record["spec"]["name"],
        "spec_sha256": record["spec_sha256"], "spec_measured": record["spec"]["measured"], "device": device,
        "model_hash_predicted": record["model_hash"], "model_hash_scored": scored_hash,
        "git_commit_predicted": record["git_commit"], "git_commit_scored": _commit(),
        "predicted_at": record["written_at"], "first_measured_at": min(times) if times else "",
    }
    out["blind"] = int(out["label"] == "blind")
    for col in ("call", "kernel", "family", "pred_us", "meas_us", "bound", "terms", "notes", "error"):
        out[f"c_{col}"] = [float(v) if col.endswith("_us") else str(v) for v in t[col]]
    out["c_l2_resident"] = [int(v) for v in t["l2_resident"]]
    return out | s
