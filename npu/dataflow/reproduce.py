"""Compare the model with FuseMax's per-model results over FLAT (attention and end to end).

    python -m simcim.npu.dataflow.reproduce [--csv out.csv]

Prints, for each model and sequence length, the paper's speedup / energy ratio / utilization
beside ours, then the averages over all 24 points (the paper's 6.7x / 79% / 5.3x / 83% are
arithmetic means over the same 4 models x 6 lengths).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from simcim.npu.dataflow.arch import MODELS, SEQ_LENS
from simcim.npu.dataflow.designs import DESIGNS
from simcim.npu.dataflow.model import evaluate, linear_layers

PAPER_CSV = Path(__file__).parent / "paper_fusemax.csv"


def ours() -> pd.DataFrame:
    rows = []
    seq = np.asarray(SEQ_LENS, dtype=np.float64)
    flat, fm = DESIGNS["flat"], DESIGNS["fusemax"]
    for name, m in MODELS.items():
        wl = {"B": m.batch, "H": m.heads, "M": seq, "P": seq, "E": m.e, "F": m.f}
        a, b = evaluate(flat, wl), evaluate(fm, wl)
        steps = {k: evaluate(DESIGNS[k], wl)["latency_s"] for k in ("unfused", "cascade", "fusemax_arch")}
        la, lb = linear_layers(flat.arch, m, seq), linear_layers(fm.arch, m, seq)
        for i, n in enumerate(SEQ_LENS):
            rows.append(
                {
                    "model": name,
                    "seq_len": n,
                    "speedup_attn": a["latency_s"][i] / b["latency_s"][i],
                    "energy_attn": b["energy_pj"][i] / a["energy_pj"][i],
                    "speedup_e2e": (a["latency_s"][i] + la["latency_s"][i]) / (b["latency_s"][i] + lb["latency_s"][i]),
                    "energy_e2e": (b["energy_pj"][i] + lb["energy_pj"][i]) / (a["energy_pj"][i] + la["energy_pj"][i]),
                    "util_2d_fusemax": b["util_2d"][i],
                    "util_1d_fusemax": b["util_1d"][i],
                    "util_2d_flat": a["util_2d"][i],
                    "util_1d_flat": a["util_1d"][i],
                    **{f"speedup_{k}": a["latency_s"][i] / v[i] for k, v in steps.items()},
                    "flat_latency_s": a["latency_s"][i],
                    "fusemax_latency_s": b["latency_s"][i],
                    "flat_dram_bytes": a["dram_bytes"][i],
                }
            )
    return pd.DataFrame(rows)


def compare() -> pd.DataFrame:
    paper = pd.read_csv(PAPER_CSV, comment="#")
    return paper.merge(ours(), on=["model", "seq_len"], suffixes=("_paper", "_ours"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=Path("fusemax_reproduction.csv"), help="where to write the table")
    args = ap.parse_args(argv)
    t = compare()
    cols = ["speedup_attn", "energy_attn", "speedup_e2e", "energy_e2e", "util_2d_fusemax", "util_2d_flat"]
    pd.set_option("display.width", 200)
    show = t[["model", "seq_len"] + [f"{c}_{s}" for c in cols for s in ("paper", "ours")]]
    print(show.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print()
    print(f"{'average over 24 points':32s} {'paper':>8s} {'ours':>8s} {'ours/paper':>10s}")
    extra = ["util_1d_fusemax", "util_1d_flat", "speedup_unfused", "speedup_cascade", "speedup_fusemax_arch"]
    for c in cols[:4] + cols[4:] + extra:
        p, o = t[f"{c}_paper"].mean(), t[f"{c}_ours"].mean()
        print(f"{c:32s} {p:8.3f} {o:8.3f} {o / p:10.3f}")
    t.to_csv(args.csv, index=False)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
