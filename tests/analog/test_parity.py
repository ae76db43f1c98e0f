"""Parity with the anchor: aihwkit-lightning's forward and aihwkit's formulas (skipped without lightning)."""

from __future__ import annotations

import math

import pytest

from simcim.analog import parity


def test_error_statistics_match_the_anchor_within_5_percent():
    pytest.importorskip("aihwkit_lightning")
    rows = parity.run(tokens=192)
    assert {r["anchor"] for r in rows} == {"aihwkit-lightning", "aihwkit formulas"}
    for r in rows:
        assert abs(r["std_diff_pct"]) < 5.0, r
        if r["anchor"] == "aihwkit-lightning" and not math.isnan(r["anchor_saturated"]):
            assert abs(r["ours_saturated"] - r["anchor_saturated"]) <= 0.01, r
    saturating = next(r for r in rows if "saturating" in r["setting"])
    assert saturating["anchor_saturated"] > 0.1  # the case does exercise the ADC bound


def test_formula_anchor_is_independent_and_sensitive():
    """The NumPy formula anchor disagrees with a periphery that leaves out the effect it models."""
    import dataclasses

    case = next(c for c in parity.CASES if c.periphery.ir_drop > 0)
    w, x = parity.problem(64)
    ideal = x.double() @ w.double().t()

    def std(y_sat):
        return parity.stats(y_sat[0], ideal, y_sat[1])["std"]

    no_drop = dataclasses.replace(case, periphery=dataclasses.replace(case.periphery, ir_drop=0.0))
    anchor, ours_with, ours_without = std(parity.formula(case, w, x, 0)), std(parity.ours(case, w, x, 0)), std(
        parity.ours(no_drop, w, x, 0))
    assert abs(ours_with / anchor - 1) < 0.02
    assert abs(ours_without / anchor - 1) > 0.1
