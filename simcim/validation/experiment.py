"""Experiment kind ``sim_vs_measured``: one model under one compression, on silicon and in the simulators.

One trial = (model, compression). It

(a) times every distinct kernel call of a decode step (batch 1, ``context`` cached tokens) and
    the whole step on the GPU with the Triton kernels (``simcim.validation.measure``);
(b) predicts the same times with the GPU model (``simcim.gpu``, spec ``gpu_spec``);
(c) runs the accelerator simulators at the model's shapes: FuseMax (1-pass cascade) against
    the 3-pass unfused design for the prefill attention (``bf16`` trials, beside the GPU's
    fused and 3-pass kernels), and the NPU simulator with NVR runahead against no prefetching on
    a pruned expert matrix (``prune`` trials, beside the GPU's CSR kernel);
(d) measures perplexity of the compressed model (quantized kernels) and of the same compressed
    weights on simulated CIM crossbars. Architectures given by name (``olmoe-1b-7b``) have
    random weights: their quality is not measured.

Without a CUDA GPU (or with ``measure = "off"``) the measured half is skipped and the trial says so.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import numpy as np

from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext
from simcim.gpu import GPUSpec, load_spec, predict
from simcim.validation.decode_step import (
    COMPRESSIONS,
    Arch,
    arch_of,
    decode_ops,
    prefill_attention_ops,
    step_bytes,
    step_order,
)

Compression = Literal["bf16", "int4", "int2", "ternary", "kv4", "kv2", "prune"]
NO_GPU = "measured half skipped: it needs a CUDA GPU; simulated half only"


@functools.cache
def _say_no_gpu() -> None:
    print(NO_GPU, flush=True)  # once per process; every trial also records it in its metrics


@dataclasses.dataclass(frozen=True)
class Params:
    model: str = param("bundled", help="'bundled', an architecture name ('olmoe-1b-7b': shapes only, random "
                                       "weights), or a local Hugging Face checkpoint directory")
    compression: Compression = param("bf16", help=f"one of {', '.join(COMPRESSIONS)}")
    gpu_spec: str = param("h100", help="bundled GPU spec name (simcim/gpu/specs) or a spec .toml file")
    context: int | None = param(None, ge=16, le=1 << 17, help="cached tokens at the decode step and prefill length "
                                                              "(default: min(max positions, 4096))")
    prune_sparsity: float = param(0.5, gt=0, lt=1, help="fraction of expert weights pruned (compression prune)")
    measure: Literal["auto", "off"] = param("auto", help="time on the GPU when one is present")
    quality: bool = param(True, help="measure perplexity (checkpoints with real weights only)")
    device: str = param("auto", help="device for the perplexity runs: 'auto', 'cpu' or 'cuda'")
    eval_tokens: int = param(4096, ge=64, help="held-out tokens for perplexity")
    seq_len: int = param(256, ge=16, help="perplexity window")
    cim_noise: str = param("pcm", help="device model preset for the CIM perplexity")
    cim_level: float = param(1.0, ge=0, help="its level (the preset's meaning)")
    cim_t_inference: float = param(3600.0, ge=0, help="seconds between programming and inference")
    simulate: bool = param(True, help="run FuseMax (bf16 trials) and the NPU simulator (prune trials)")
    npu_rows: int = param(128, ge=1, help="rows of the pruned expert matrix simulated on the NPU")

    def __post_init__(self) -> None:
        arch_of(self.model)  # a bad model name or directory fails at config load
        try:
            load_spec(self.gpu_spec)
        except ValueError as e:
            raise ValueError(f"gpu_spec: {e}") from None
        from simcim.noise_models.presets import PRESETS

        if self.cim_noise not in PRESETS:
            raise ValueError(f"cim_noise {self.cim_noise!r} is not a device model preset "
                             f"(known: {', '.join(sorted(PRESETS))})")


DEFAULT_METRICS = ("e2e_meas_us", "e2e_pred_us", "kernel_mape_pct", "ppl_quantized", "ppl_cim")


def _context(p: Params, arch: Arch) -> int:
    return p.context or min(arch.max_positions, 4096)


def _kernel_rows(p: Params, arch: Arch, spec: GPUSpec, env) -> dict[str, list]:
    from simcim.validation import measure

    ctx = _context(p, arch)
    ops = decode_ops(arch, p.compression, ctx, p.prune_sparsity)
    if p.compression == "bf16":
        ops = ops + prefill_attention_ops(arch, ctx)
    seen: dict[str, dict] = {}
    rows: dict[str, list] = {k: [] for k in ("k_role", "k_kernel", "k_shape", "k_calls", "k_pred_us", "k_meas_us",
                                             "k_bound", "k_hbm_mb", "k_l2_resident")}
    for op in ops:
        if op.key not in seen:  # q, k and v of one shape are one measurement
            meas, resident = measure.time_op(op, env) if env is not None else (math.nan, False)
            seen[op.key] = {"meas": meas, "pred": predict(op.work(), spec, l2_resident=resident), "resident": resident}
        s = seen[op.key]
        for key, value in (("k_role", op.role), ("k_kernel", op.work().kernel), ("k_shape", op.key),
                           ("k_calls", op.calls), ("k_pred_us", s["pred"].time_s * 1e6), ("k_meas_us", s["meas"] * 1e6),
                           ("k_bound", s["pred"].bound), ("k_hbm_mb", op.work().hbm_bytes / 1e6),
                           ("k_l2_resident", int(s["resident"]))):
            rows[key].append(value)
    return rows


def _end_to_end(p: Params, arch: Arch, spec: GPUSpec, env) -> dict[str, float]:
    from simcim.validation import measure

    ops = decode_ops(arch, p.compression, _context(p, arch), p.prune_sparsity)
    resident = step_bytes(ops) < spec.l2_mib * 2**20  # a small model's whole step stays in L2
    pred = sum(predict(op.work(), spec, l2_resident=resident).time_s * op.calls for op in ops)
    meas = measure.time_step(step_order(arch, ops), env) if env is not None else math.nan
    return {"e2e_pred_us": pred * 1e6, "e2e_meas_us": meas * 1e6, "e2e_err_pct": 100 * (pred - meas) / meas,
            "step_hbm_mb": step_bytes(ops) / 1e6, "step_kernel_calls": sum(op.calls for op in ops),
            "step_l2_resident": int(resident)}


def _fusemax(arch: Arch, context: int) -> dict[str, float]:
    """Simulated 1-pass (FuseMax) vs 3-pass (unfused) attention at the model's prefill shapes."""
    from simcim.npu.dataflow.designs import DESIGNS
    from simcim.npu.dataflow.model import evaluate

    wl = {"B": 1, "H": arch.heads, "M": context, "P": context, "E": arch.head_dim, "F": arch.head_dim}
    one = evaluate(DESIGNS["fusemax"], wl)
    three = evaluate(DESIGNS["unfused"], wl)
    return {"sim_fusemax_us": float(one["latency_s"]) * 1e6, "sim_unfused_us": float(three["latency_s"]) * 1e6,
            "sim_1pass_speedup": float(three["latency_s"] / one["latency_s"])}


def _expert_matrix(p: Params, arch: Arch) -> np.ndarray:
    """Rows of the first expert's gate+up matrix of the checkpoint, or N(0, 0.02) for a named architecture."""
    from simcim.moe.random_checkpoint import ARCHS

    rows = min(p.npu_rows, 2 * arch.expert_ffn)
    if p.model in ARCHS:
        return (np.random.default_rng(0).standard_normal((rows, arch.hidden)) * 0.02).astype(np.float32)
    from simcim.models import load_model
    from simcim.validation.quality import targets

    first = targets(load_model(p.model, "cpu"), ("experts",))[0]  # the first layer's gate+up stack
    return first.matrices()[0, :rows].detach().float().numpy().copy()


def _npu(p: Params, arch: Arch, ctx: TrialContext) -> dict[str, float]:
    """Simulated NVR runahead vs no prefetching on the pruned expert matrix (decode: one activation column)."""
    from safetensors.numpy import save_file

    from simcim.npu import experiment as npu_exp

    path = ctx.artifact_dir / "pruned_expert.safetensors"
    save_file({"w": _expert_matrix(p, arch)}, str(path))
    params = npu_exp.Params(workload="pruned_matmul", weights=path, weight_tensor="w", sparsity=p.prune_sparsity,
                            feat=1, prefetcher="nvr", compare_baseline=True)
    m = npu_exp.run_trial(params, 0, ctx)
    return {"sim_npu_nvr_speedup": float(m["speedup"]), "sim_npu_miss_reduction": float(m["miss_reduction"]),
            "sim_npu_cycles": float(m["cycles"]), "sim_npu_baseline_cycles": float(m["baseline_cycles"])}


@functools.lru_cache(maxsize=2)
def _eval_ids(model: str, vocab: int, tokens: int):
    from simcim.evaluate import eval_token_ids

    return eval_token_ids(model, vocab, None, tokens)


def _quality(p: Params, seed: int) -> dict[str, float | str]:
    import torch

    from simcim.crossbar import program_targets_
    from simcim.evaluate import perplexity
    from simcim.models import load_model
    from simcim.noise_injection import Params as NoiseParams
    from simcim.validation import quality

    model = load_model(p.model, p.device)
    ids = _eval_ids(p.model, model.config.vocab_size, p.eval_tokens)
    seq = min(p.seq_len, model.config.max_position_embeddings)
    out: dict[str, float | str] = {"ppl_uncompressed": perplexity(model, ids, seq)}
    with quality.compressed(model, p.compression, p.prune_sparsity, kernels=True):
        out["ppl_quantized"] = perplexity(model, ids, seq)
    noise = NoiseParams(model=p.model, noise=p.cim_noise, level=p.cim_level, device="cpu")
    with quality.compressed(model, p.compression, p.prune_sparsity, kernels=False):
        program_targets_(quality.targets(model, ("attention", "experts")), noise.device_model(), noise.crossbar, seed,
                         p.cim_t_inference)
        out["ppl_cim"] = perplexity(model, ids, seq)
    dev = next(model.parameters()).device
    out["quality_on"] = "triton kernels (cuda)" if dev.type == "cuda" else "kernel references (cpu)"
    del torch
    return out


def run_trial(p: Params, seed: int, ctx: TrialContext) -> dict[str, float | int | str | list]:
    from simcim.moe.random_checkpoint import ARCHS

    arch = arch_of(p.model)
    spec = load_spec(p.gpu_spec)
    env = None
    if p.measure == "auto":
        from simcim.validation.measure import gpu_env

        env = gpu_env()
    out: dict[str, float | int | str | list] = {"gpu_spec_name": spec.name, "context_tokens": _context(p, arch)}
    if env is None:
        if p.measure == "auto":
            _say_no_gpu()
        out["measured"] = NO_GPU if p.measure == "auto" else "measured half off (measure = 'off')"
    else:
        import torch

        out["measured"] = f"{torch.cuda.get_device_name()}"
    rows = _kernel_rows(p, arch, spec, env)
    out.update(rows)
    meas, pred = np.array(rows["k_meas_us"]), np.array(rows["k_pred_us"])
    out["kernel_mape_pct"] = float(np.mean(np.abs(pred - meas) / meas) * 100) if env is not None else math.nan
    out.update(_end_to_end(p, arch, spec, env))
    if p.simulate and p.compression == "bf16":
        out.update(_fusemax(arch, _context(p, arch)))
    if p.simulate and p.compression == "prune":
        out.update(_npu(p, arch, ctx))
    if p.quality and p.model not in ARCHS:
        out.update(_quality(p, seed))
    else:
        out["quality_on"] = "not measured (random-weight architecture)" if p.model in ARCHS else "off"
    return out
