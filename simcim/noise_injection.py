"""Experiment kind ``noise_injection``: put chosen weights on simulated crossbars, measure perplexity.

One trial = one simulated chip instance (the seed): the selected weights are mapped to
conductances, the device model is applied (programming noise once per chip, then what
happens by ``t_inference`` seconds after programming), the weights are read back, and
perplexity is measured on held-out text. The clean weights are restored afterwards, so
trials sharing a worker process share one loaded model.

With ``forward = "analog"`` the weights are programmed the same way but every product with them runs
through the crossbar periphery (``simcim.analog``: DAC, read noise at every read, IR drop, ADC per tile,
digital sum of the tiles' partial sums) instead of digital arithmetic on the read-back weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch

from simcim.analog import AnalogForward, Counters, PeripheryConfig
from simcim.crossbar import CrossbarConfig, program_targets_
from simcim.evaluate import eval_token_ids, perplexity
from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext
from simcim.models import load_model, resolve_device, resolve_model_path
from simcim.noise_models.base import DeviceModel
from simcim.noise_models.presets import PRESETS, device_model, gaussian
from simcim.targets import ROLES, WeightTarget, find_targets, select_targets

DEFAULT_ROLES = ["attention", "experts", "router", "shared_expert", "mlp"]


@dataclasses.dataclass(frozen=True)
class Params:
    model: str = param("bundled", help="'bundled' or a local Hugging Face checkpoint directory")
    device: str = param("auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param("auto", help="weights dtype")
    noise: str = param("gaussian", help="device model preset (see `simcim info`) or a calibrated model's .json file")
    level: float = param(0.0, ge=0, help="noise level; its meaning is the preset's (gaussian: weight sigma / max|w|)")
    t_inference: float = param(0.0, ge=0, help="seconds between programming and inference")
    drift_compensation: Literal["none", "column", "tile"] = param(
        "none", help="rescale each tile column or tile by a readout taken right after programming")
    roles: list[str] = param(default_factory=lambda: list(DEFAULT_ROLES), help=f"roles to put on crossbars: {ROLES}")
    include: list[str] = param(default_factory=list, help="extra parameter-name globs to put on crossbars")
    exclude: list[str] = param(default_factory=list, help="parameter-name globs to keep digital")
    layers: list[int] | None = param(None, help="restrict to these decoder layers")
    tile_rows: int = param(512, ge=1, le=65536, help="crossbar rows (inputs) per tile")
    tile_cols: int = param(512, ge=1, le=65536, help="crossbar columns (outputs) per tile")
    mapping: Literal["differential", "offset"] = param("differential", help="weight-to-conductance mapping")
    scaling: Literal["column", "tile"] = param("column", help="g_max scaling granularity")
    eval_tokens: int = param(16384, ge=64, help="held-out tokens to evaluate")
    seq_len: int = param(256, ge=8, le=1 << 17, help="evaluation window length")
    batch_size: int = param(8, ge=1, help="evaluation batch size (windows)")
    eval_text: Path | None = param(None, must_exist=True, help="text file to evaluate on (default: bundled held-out)")
    forward: Literal["weights", "analog"] = param(
        "weights", help="weights: noisy weights in digital arithmetic; analog: every selected product through "
                        "the crossbar periphery (DAC, per-read noise, IR drop, ADC per tile; see docs/cim.md)")
    dac_bits: int = param(8, ge=1, le=16, help="analog: input DAC resolution [bits]")
    input_range: Literal["abs_max", "none"] = param(
        "abs_max", help="analog: inputs scaled by each token's abs-max per tile (aihwkit noise management), or not")
    input_bound: float = param(1.0, gt=0, help="analog: DAC full scale [input range, or input units with 'none']")
    adc_bits: int = param(8, ge=1, le=16, help="analog: output ADC resolution [bits]")
    adc_bound: float = param(10.0, gt=0, help="analog: ADC full scale [unit input x unit weight (g_max) products]")
    bound_management: Literal["none", "iterative"] = param(
        "none", help="analog: on ADC saturation redo the token with its input range doubled (aihwkit iterative)")
    read_noise: Literal["device", "fixed"] = param(
        "device", help="analog: per-read weight noise from the device model's 1/f read noise, or read_sigma")
    read_sigma: float = param(0.0, ge=0, help="analog, read_noise='fixed': per-read std of each weight [g_max]")
    out_noise: float = param(0.0, ge=0, help="analog: additive noise std on each tile output [unit products]")
    ir_drop: float = param(0.0, ge=0, help="analog: strength of aihwkit's first-order IR-drop model (0 off, 1 full)")
    wire_resistance: float = param(0.35, gt=0, help="analog: wire resistance between neighbouring cells [ohm]")
    engine: Literal["auto", "torch", "triton"] = param(
        "auto", help="analog: 'auto' (Triton kernel on a GPU where it covers the periphery), 'torch', 'triton'")

    def __post_init__(self) -> None:
        if self.noise.endswith(".json"):
            if not Path(self.noise).is_file():
                raise ValueError(f"noise {self.noise!r}: calibrated device-model file not found")
        elif self.noise not in PRESETS:
            raise ValueError(f"noise {self.noise!r} is not a known device model (known: {', '.join(sorted(PRESETS))}, "
                             "or a calibrated model's .json file)")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device {self.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.device.startswith("cuda"):
            resolve_device(self.device)  # no GPU here: say so now, not once per trial
        bad = [r for r in self.roles if r not in ROLES]
        if bad:
            raise ValueError(f"roles: unknown role {bad[0]!r} (known: {', '.join(ROLES)})")
        if self.eval_tokens <= self.seq_len:  # one window scores seq_len tokens and needs one more as its target
            raise ValueError(f"eval_tokens ({self.eval_tokens}) must exceed seq_len ({self.seq_len}): "
                             "not even one evaluation window fits")
        if not self.roles and not self.include:
            raise ValueError("roles and include are both empty: no weight would be put on a crossbar")
        if str(self.model) != "bundled":
            resolve_model_path(self.model)
        if self.forward == "analog":
            self.periphery()  # validates the converter settings now, not mid-trial
            shape = _selection_shape(str(self.model), tuple(self.roles), tuple(self.include), tuple(self.exclude),
                                     tuple(self.layers) if self.layers is not None else None)
            if shape is not None:  # the architecture's shapes, from its config alone (no weights loaded)
                check_analog_selection(self, *shape)
        elif self.forward != "weights":
            raise ValueError(f"forward {self.forward!r}: expected 'weights' or 'analog'")

    def periphery(self) -> PeripheryConfig:
        return PeripheryConfig(
            dac_bits=self.dac_bits, input_range=self.input_range, input_bound=self.input_bound,
            adc_bits=self.adc_bits, adc_bound=self.adc_bound, bound_management=self.bound_management,
            read_sigma=self.read_sigma if self.read_noise == "fixed" else None, out_noise=self.out_noise,
            ir_drop=self.ir_drop, wire_resistance=self.wire_resistance)

    @property
    def crossbar(self) -> CrossbarConfig:
        return CrossbarConfig(self.tile_rows, self.tile_cols, self.mapping, self.scaling)

    def device_model(self) -> DeviceModel:
        if self.noise == "gaussian":
            # the level is the sigma of the encoded weight, so it is split over the pair's devices
            return gaussian(self.level, self.crossbar.devices_per_weight)
        return device_model(self.noise, self.level)


DEFAULT_METRICS = ("perplexity",)
SEED_NOUN = "simulated chip"  # each seed programs a new chip instance: its own device-to-device draws
METRIC_HELP = {
    "perplexity": "perplexity on the held-out text (lower is better)",
    "weight_rel_error": "||W_read - W|| / ||W|| over the selected weights",
}


@contextlib.contextmanager
def restored(targets: Sequence[WeightTarget]) -> Iterator[None]:
    """Run a block that overwrites the targets' weights, then put the originals back."""
    saved = [t.param.data.clone() for t in targets]
    try:
        yield
    finally:
        for t, w in zip(targets, saved):
            t.param.data.copy_(w)


@functools.lru_cache(maxsize=4)
def _eval_ids(model: str, vocab_size: int, eval_text: str | None, eval_tokens: int) -> torch.Tensor:
    return eval_token_ids(model, vocab_size, Path(eval_text) if eval_text else None, eval_tokens)


@functools.lru_cache(maxsize=4)
def clean_perplexity(model: str, device: str, dtype: str, eval_text: str | None, eval_tokens: int,
                     seq_len: int, batch_size: int) -> float:
    m = load_model(model, device, dtype)
    ids = _eval_ids(model, m.config.vocab_size, eval_text, eval_tokens)
    return perplexity(m, ids, seq_len, batch_size)


def selected_targets(p: Params, model) -> list[WeightTarget]:
    chosen = select_targets(find_targets(model), roles=p.roles, include=p.include, exclude=p.exclude,
                            layers=p.layers)
    if not chosen:
        raise ValueError("the selection (roles/include/exclude/layers) matches no weight of this model")
    return chosen


def check_analog_selection(p: Params, widest: int, lookups: tuple[str, ...]) -> None:
    """What the analog forward cannot do with a selection: a tile taller than every selected matrix (its partial
    sums are per tile of ``tile_rows`` inputs), or a lookup table (an embedding is not a product)."""
    if lookups:
        raise ValueError(f"forward 'analog': {lookups[0]} is an embedding lookup, not a matrix-vector product; "
                         "leave it off the crossbars (roles/exclude) or use forward 'weights'")
    if p.tile_rows > widest:
        raise ValueError(f"tile_rows ({p.tile_rows}) is larger than every selected layer (the widest has {widest} "
                         f"inputs): choose tile_rows <= {widest}")


def check_tile_fits(p: Params, targets: Sequence[WeightTarget]) -> None:
    check_analog_selection(p, max(t.matrices().shape[-1] for t in targets),
                           tuple(t.name for t in targets if t.input_axis != -1))


@functools.lru_cache(maxsize=16)
def _selection_shape(model: str, roles: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
                     layers: tuple[int, ...] | None) -> tuple[int, tuple[str, ...]] | None:
    """(widest input of the selected matrices, names of selected lookup tables) from the checkpoint's config on
    the meta device; None when the architecture cannot be built that way (then the trial checks it)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(resolve_model_path(model), local_files_only=True)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(cfg)
    except Exception:  # any failure here only postpones the check to the trial
        return None
    chosen = select_targets(find_targets(meta), roles=roles, include=include, exclude=exclude, layers=layers)
    if not chosen:
        return None
    return max(t.matrices().shape[-1] for t in chosen), tuple(t.name for t in chosen if t.input_axis != -1)


@contextlib.contextmanager
def on_crossbars(p: Params, model, targets: Sequence[WeightTarget], dev_model: DeviceModel, seed: int,
                 ids: torch.Tensor) -> Iterator[AnalogForward | None]:
    """Program ``targets`` for the configured forward and run the block with it.

    ``weights``: the read-back weights are written into the parameters (digital arithmetic from then on);
    ``analog``: the parameters hold the programmed weights and, inside the block, every product with them
    runs through the analog periphery. Either way the caller restores the clean weights.
    """
    if p.forward == "weights":
        program_targets_(targets, dev_model, p.crossbar, seed, p.t_inference, drift_compensation=p.drift_compensation)
        yield None
        return
    check_tile_fits(p, targets)
    fwd = AnalogForward(model, targets, dev_model, p.crossbar, p.periphery(), seed, p.t_inference,
                        p.drift_compensation, p.engine)
    fwd.check_mapped(ids[: min(64, ids.numel())][None])
    fwd.counters = Counters()  # the mapping check's products are not part of the trial
    with fwd:
        yield fwd


def analog_metrics(fwd: AnalogForward | None) -> dict[str, float]:
    if fwd is None:
        return {}
    return {"adc_saturation": fwd.counters.saturation_rate, "bm_rounds": fwd.counters.bm_rounds}


def run_trial(p: Params, seed: int, ctx: TrialContext | None = None) -> dict[str, float | int | str]:
    model = load_model(p.model, p.device, p.dtype)
    text = str(p.eval_text) if p.eval_text else None
    ids = _eval_ids(p.model, model.config.vocab_size, text, p.eval_tokens)
    seq_len = min(p.seq_len, getattr(model.config, "max_position_embeddings", p.seq_len) or p.seq_len)
    clean = clean_perplexity(p.model, p.device, p.dtype, text, p.eval_tokens, seq_len, p.batch_size)
    targets = selected_targets(p, model)
    dev_model = p.device_model()
    with restored(targets):
        t0 = time.perf_counter()
        clean_norm2 = sum(float(t.param.data.float().pow(2).sum()) for t in targets)
        originals = [t.param.data.clone() for t in targets]
        with on_crossbars(p, model, targets, dev_model, seed, ids) as fwd:
            err2 = sum(float((t.param.data.float() - o.float()).pow(2).sum()) for t, o in zip(targets, originals))
            del originals
            t_program = time.perf_counter() - t0
            t0 = time.perf_counter()
            ppl = perplexity(model, ids, seq_len, p.batch_size)
            t_eval = time.perf_counter() - t0
    n_noisy = sum(t.param.numel() for t in targets)
    n_total = sum(q.numel() for q in model.parameters())
    return {
        "perplexity": ppl,
        "clean_perplexity": clean,
        "ppl_increase_pct": 100.0 * (ppl / clean - 1.0),
        "weight_rel_error": (err2 / clean_norm2) ** 0.5 if clean_norm2 > 0 else 0.0,
        "noisy_weights": n_noisy,
        "noisy_fraction": n_noisy / n_total,
        "eval_tokens_used": int((ids.numel() - 1) // seq_len * seq_len),
        "device_model": dev_model.description or dev_model.name,
        "program_s": t_program,
        "eval_s": t_eval,
        **analog_metrics(fwd),
    }
