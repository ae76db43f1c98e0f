"""Experiment kind ``moe_noise``: an MoE model on noisy crossbars, its routing, and repairs.

Every ``noise_injection`` parameter is here with the same meaning (``Params`` extends that
kind's), plus the repair to apply and its settings. One trial = one simulated chip (the seed):

1. the clean model's routing on calibration and diagnostic text is recorded once per process;
2. the selected weights are programmed (``repair="digital_router"`` keeps routers off the
   crossbars; ``"redundancy"`` averages ``redundancy_copies`` programmed copies of every
   selected weight in the shallowest or deepest ``redundancy_depth`` layers);
3. for ROMER repairs, the unrepaired perplexity is measured on this same chip, then ROMER runs
   (``romer``: both steps, ``romer_replace`` / ``romer_norm``: one step alone);
4. perplexity on held-out text (optionally after a prompt prefix) and the routing diagnostics on
   diagnostic text, against the clean model's routing of the same tokens;
5. the clean weights are put back and hooks removed, so trials share one loaded model.

Calibration text is the first ``calib_tokens`` tokens of the bundled corpus's train split and
diagnostic text the next ``diag_tokens``; perplexity is measured on the held-out split.
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

from simcim import noise_injection
from simcim.crossbar import without_read_noise
from simcim.evaluate import eval_token_ids
from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext
from simcim.models import load_model
from simcim.moe.diagnostics import Router, record_routing, require_routers, routing_metrics, routing_stats
from simcim.moe.prompts import STRATEGIES, prefixed_perplexity, prompt_ids, train_token_ids
from simcim.moe.redundancy import add_redundant_copies_, redundant_layers
from simcim.moe.romer import Programming, RomerConfig, apply_romer, expert_parameters
from simcim.targets import WeightTarget

REPAIRS = ("none", "romer", "romer_replace", "romer_norm", "digital_router", "redundancy")
_ROMER_STEPS = {"romer": (True, True), "romer_replace": (True, False), "romer_norm": (False, True)}


@dataclasses.dataclass(frozen=True)
class Params(noise_injection.Params):
    repair: Literal["none", "romer", "romer_replace", "romer_norm", "digital_router", "redundancy"] = param(
        "none", help="none; romer (both steps) or one step alone; digital_router (routers kept off the "
                     "crossbars); redundancy (averaged copies on shallow or deep layers)")
    replace_threshold: float = param(0.5, gt=0, le=1, help="ROMER: expert is under-activated when its noisy "
                                                           "frequency < this x its reference frequency")
    replace_reference: Literal["clean", "uniform"] = param("clean", help="ROMER: reference frequency: the clean "
                                                                         "model's, or uniform k/E")
    replace_max_fraction: float = param(0.25, ge=0, le=0.5, help="ROMER: most experts per layer to replace")
    replace_router: Literal["keep", "donor"] = param("keep", help="ROMER: replaced expert keeps its router row, "
                                                                  "or takes the donor's")
    norm_percentiles: list[float] = param(default_factory=lambda: [5.0, 95.0], ge=0, le=100,
                                          help="ROMER: [lo, hi] logit percentiles matched")
    norm_scope: Literal["expert", "layer"] = param("expert", help="ROMER: one logit map per expert or per layer")
    norm_reference: Literal["clean", "pooled"] = param("clean", help="ROMER: map onto the clean model's "
                                                                     "percentiles or the noisy layer's pooled ones")
    calib_tokens: int = param(4096, ge=64, help="train-split tokens for ROMER's calibration passes")
    diag_tokens: int = param(4096, ge=0, help="train-split tokens for routing diagnostics (0: none)")
    redundancy_copies: int = param(2, ge=1, le=16, help="redundancy: programmed copies averaged per weight")
    redundancy_depth: int = param(1, ge=1, help="redundancy: number of layers that get copies")
    redundancy_position: Literal["shallow", "deep"] = param("shallow", help="redundancy: first or last layers")
    prompt: Literal["none", "few_shot", "reasoning", "template"] = param(
        "none", help="text before every evaluation window (see simcim.moe.prompts)")
    few_shot_examples: int = param(2, ge=1, le=32, help="prompt: number of in-context example paragraphs")
    prompt_template: Path | None = param(None, must_exist=True, help="prompt='template': the prefix text file")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.repair not in REPAIRS:
            raise ValueError(f"repair {self.repair!r} is not one of {', '.join(REPAIRS)}")
        if self.repair == "digital_router" and "router" not in self.roles:
            raise ValueError("repair 'digital_router': roles has no 'router', so routers are already digital")
        if len(self.norm_percentiles) != 2:
            raise ValueError(f"norm_percentiles must be [lo, hi], got {self.norm_percentiles}")
        if self.prompt not in STRATEGIES:
            raise ValueError(f"prompt {self.prompt!r} is not one of {', '.join(STRATEGIES)}")
        if self.prompt == "template" and self.prompt_template is None:
            raise ValueError("prompt 'template' needs prompt_template (a text file)")
        if self.repair in _ROMER_STEPS:
            self.romer()  # validates the ROMER settings now, not mid-trial

    def romer(self) -> RomerConfig:
        replace, norm = _ROMER_STEPS[self.repair]
        lo, hi = self.norm_percentiles
        return RomerConfig(replace=replace, logit_norm=norm, replace_threshold=self.replace_threshold,
                           replace_reference=self.replace_reference, replace_max_fraction=self.replace_max_fraction,
                           replace_router=self.replace_router, norm_percentiles=(lo, hi), norm_scope=self.norm_scope,
                           norm_reference=self.norm_reference)


DEFAULT_METRICS = ("perplexity", "load_cv", "topk_mismatch", "ppl_reduction_pct")
SEED_NOUN = "simulated chip"  # each seed programs a new chip instance: its own device-to-device draws


@functools.lru_cache(maxsize=4)
def _eval_ids(model: str, vocab_size: int, eval_text: str | None, eval_tokens: int) -> torch.Tensor:
    return eval_token_ids(model, vocab_size, Path(eval_text) if eval_text else None, eval_tokens)


def _calib_seq_len(p: Params, model) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or p.seq_len
    return min(p.seq_len, limit)


@functools.lru_cache(maxsize=8)
def _clean_routing(model_spec: str, device: str, dtype: str, start: int, n_tokens: int, seq_len: int,
                   batch_size: int):
    """The clean model's routing on train-split tokens [start, start + n_tokens) (call before programming)."""
    model = load_model(model_spec, device, dtype)
    ids = train_token_ids(model_spec, model.config.vocab_size, start + n_tokens)[start:]
    return record_routing(model, ids, min(seq_len, n_tokens), batch_size)


def _evaluate(p: Params, model, ids: torch.Tensor, seq_len: int) -> float:
    prefix = prompt_ids(p.model, model.config.vocab_size, p.prompt, p.few_shot_examples,
                        str(p.prompt_template) if p.prompt_template else None)
    return prefixed_perplexity(model, ids, seq_len, p.batch_size, prefix)


_CLEAN_PPL: dict[tuple[str, ...], float] = {}


def _clean_perplexity(p: Params, model, ids: torch.Tensor, seq_len: int) -> float:
    """The clean model's perplexity under this evaluation setup (call before programming)."""
    fields = ("model", "device", "dtype", "eval_text", "eval_tokens", "batch_size", "prompt", "few_shot_examples",
              "prompt_template")
    key = tuple(str(getattr(p, f)) for f in fields) + (str(seq_len),)
    if key not in _CLEAN_PPL:
        _CLEAN_PPL[key] = _evaluate(p, model, ids, seq_len)
    return _CLEAN_PPL[key]


@contextlib.contextmanager
def _snapshot(named: Sequence[tuple[str, torch.nn.Parameter]]) -> Iterator[dict[str, torch.Tensor]]:
    """Clean copies of the given weights by name; put back when the block ends, whatever happens."""
    saved: dict[str, torch.Tensor] = {}
    params: dict[str, torch.nn.Parameter] = {}
    for name, prm in named:
        if name not in saved:
            saved[name], params[name] = prm.data.clone(), prm
    try:
        yield saved
    finally:
        for name, prm in params.items():
            prm.data.copy_(saved[name])


def _programmed_targets(p: Params, model, routers: Sequence[Router]) -> list[WeightTarget]:
    targets = noise_injection.selected_targets(p, model)
    if p.repair == "digital_router":
        router_names = {f"{r.name}.weight" for r in routers}
        targets = [t for t in targets if t.name not in router_names]
        if not targets:
            raise ValueError("repair 'digital_router': the selection has only routers, nothing left to program")
    return targets


def run_trial(p: Params, seed: int, ctx: TrialContext | None = None) -> dict[str, float | int | str | list[float]]:
    model = load_model(p.model, p.device, p.dtype)
    routers = require_routers(model)
    seq_len = _calib_seq_len(p, model)
    ids = _eval_ids(p.model, model.config.vocab_size, str(p.eval_text) if p.eval_text else None, p.eval_tokens)
    clean_ppl = _clean_perplexity(p, model, ids, seq_len)
    romer_on = p.repair in _ROMER_STEPS
    key = (p.model, p.device, p.dtype)
    clean_calib = _clean_routing(*key, 0, p.calib_tokens, seq_len, p.batch_size) if romer_on else None
    clean_diag = _clean_routing(*key, p.calib_tokens, p.diag_tokens, seq_len, p.batch_size) if p.diag_tokens else None

    targets = _programmed_targets(p, model, routers)
    touched = [(t.name, t.param) for t in targets]
    if romer_on:  # replacement writes expert (and maybe router) weights that may be digital
        for r in routers:
            touched += expert_parameters(model, r) + [(f"{r.name}.weight", r.module.weight)]
    dev_model = p.device_model()
    # with the analog forward a re-programmed copy leaves its read noise to every read, as the original does
    prog = Programming(without_read_noise(dev_model) if p.forward == "analog" else dev_model, p.crossbar, seed,
                       p.t_inference, p.drift_compensation)
    metrics: dict[str, float | int | str | list[float]] = {}
    romer_result = None
    with _snapshot(touched) as clean, contextlib.ExitStack() as stack:
        try:
            t0 = time.perf_counter()
            fwd = stack.enter_context(noise_injection.on_crossbars(p, model, targets, dev_model, seed, ids))
            n_programmed = sum(t.param.numel() for t in targets)
            if p.repair == "redundancy":
                layers = redundant_layers(_num_layers(model), p.redundancy_depth, p.redundancy_position)
                extra = add_redundant_copies_(targets, layers, p.redundancy_copies, clean, prog)
                metrics["redundancy_extra_weights"] = extra
                metrics["redundancy_extra_fraction"] = extra / n_programmed
            metrics["program_s"] = time.perf_counter() - t0
            if romer_on:
                t0 = time.perf_counter()
                metrics["unrepaired_perplexity"] = _evaluate(p, model, ids, seq_len)
                metrics["unrepaired_eval_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                calib_ids = train_token_ids(p.model, model.config.vocab_size, p.calib_tokens)
                romer_result = apply_romer(
                    model, routers, p.romer(),
                    lambda: record_routing(model, calib_ids, min(seq_len, p.calib_tokens), p.batch_size, routers),
                    clean_calib, clean, {t.name for t in targets}, prog)
                metrics["romer_s"] = time.perf_counter() - t0
                metrics["romer_replaced_experts"] = romer_result.n_replaced
                unrep = routing_metrics(routing_stats(romer_result.unrepaired, clean_calib), prefix="unrepaired_")
                metrics["unrepaired_load_cv"] = unrep["unrepaired_load_cv"]
                metrics["unrepaired_topk_mismatch"] = unrep["unrepaired_topk_mismatch"]
            t0 = time.perf_counter()
            ppl = _evaluate(p, model, ids, seq_len)
            metrics["eval_s"] = time.perf_counter() - t0
            if clean_diag is not None:
                diag_ids = train_token_ids(p.model, model.config.vocab_size, p.calib_tokens + p.diag_tokens)
                rec = record_routing(model, diag_ids[p.calib_tokens:], min(seq_len, p.diag_tokens), p.batch_size,
                                     routers)
                metrics.update(routing_metrics(routing_stats(rec, clean_diag)))
                metrics.update({f"clean_{k}": v for k, v in routing_metrics(routing_stats(clean_diag)).items()
                                if k in ("load_cv", "load_max_over_mean", "routing_entropy")})
        finally:
            if romer_result is not None:
                romer_result.remove()
    metrics.update(noise_injection.analog_metrics(fwd))
    metrics.update({
        "perplexity": ppl,
        "clean_perplexity": clean_ppl,
        "ppl_increase_pct": 100.0 * (ppl / clean_ppl - 1.0),
        "noisy_weights": n_programmed,
        "eval_tokens_used": int((ids.numel() - 1) // seq_len * seq_len),
        "device_model": dev_model.description or dev_model.name,
    })
    if romer_on:
        metrics["ppl_reduction_pct"] = 100.0 * (1.0 - ppl / float(metrics["unrepaired_perplexity"]))
    return metrics


def _num_layers(model) -> int:
    n = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"model {type(model).__name__}: config has no num_hidden_layers")
    return n
