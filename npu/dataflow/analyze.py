"""``python -m simcim.npu.dataflow.analyze CASCADE [--rank m]``: parse a cascade and print its pass analysis.

CASCADE is a shipped name (``attention_3pass``) or a path to a ``.einsum`` file; notation errors
are printed as ``file:line:col: message``.
"""

from __future__ import annotations

import argparse

from simcim.npu.dataflow.einsum import builtin_cascade
from simcim.npu.dataflow.passes import analyze_passes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="pass lower bound and per-point operations of an Einsum cascade")
    ap.add_argument("cascade", help="a shipped cascade name (e.g. attention_3pass) or a .einsum file")
    ap.add_argument("--rank", default="m", help="index to count passes over (default m)")
    args = ap.parse_args(argv)
    try:
        cascade = builtin_cascade(args.cascade)
        report = analyze_passes(cascade, args.rank)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"cascade {cascade.name}: inputs {', '.join(cascade.inputs)}; outputs {', '.join(cascade.outputs)}")
    for e in cascade.einsums:
        ops = ", ".join(f"{n} {op}" for op, n in e.op_counts().items())
        print(f"  {str(e):60s} [{ops}]")
    print(report.summary())


if __name__ == "__main__":
    main()
