"""Mixture-of-Experts models on noisy crossbars: router diagnostics, ROMER, and other repairs.

* ``diagnostics``: per-layer expert load, load balance, routing entropy, top-k mismatch against
  the clean model and router-logit statistics, read with forward hooks;
* ``romer``: expert replacement and percentile-based router-logit normalization;
* ``redundancy``: k programmed copies of a weight, averaged, on shallow or deep layers;
* ``prompts``: few-shot and reasoning prefixes for the perplexity evaluation;
* ``experiment``: the ``moe_noise`` experiment kind;
* ``random_checkpoint``: random-weight checkpoints with real MoE configurations (GPU runs).
"""

from simcim.moe.diagnostics import (
                                    LayerRouting,
                                    Router,
                                    RouterRecorder,
                                    find_routers,
                                    record_routing,
                                    routing_metrics,
                                    routing_stats,
)
from simcim.moe.redundancy import add_redundant_copies_, redundant_layers
from simcim.moe.romer import LogitMaps, RomerConfig, apply_romer, route_from_logits

__all__ = [
    "LayerRouting", "LogitMaps", "RomerConfig", "Router", "RouterRecorder", "add_redundant_copies_", "apply_romer",
    "find_routers", "record_routing", "redundant_layers", "route_from_logits", "routing_metrics", "routing_stats",
]
