"""The model against hand arithmetic on a 2x2 array, 2-PE 1D array, 1 Hz clock, 4-token sequence."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from simcim.npu.dataflow.arch import FLAT_ARCH, FUSEMAX_ARCH, MODELS, Arch
from simcim.npu.dataflow.designs import DESIGNS
from simcim.npu.dataflow.einsum import cascade_path as builtin_cascade_path
from simcim.npu.dataflow.model import Design, Stage, bottleneck, evaluate

TINY = {"rows": 2, "cols": 2, "pes_1d": 2, "clock_hz": 1.0, "dram_bytes_per_s": 4.0}
WL = {"B": 1, "H": 1, "M": 4, "P": 4, "E": 2, "F": 2}


def tiny(design: str, glb_bytes: int = 1 << 20, **changes) -> Design:
    d = DESIGNS[design]
    arch = dataclasses.replace(d.arch, glb_bytes=glb_bytes, **TINY)
    return dataclasses.replace(d, arch=arch, **changes)


def test_flat_3pass_on_tiny_array():
    r = evaluate(tiny("flat"), WL)
    # 2D: QK and AV are 4*4*2 = 32 MACs each -> 64 MACs / 4 PEs = 16 cycles
    assert r["busy_2d_s"] == pytest.approx(16)
    # 1D: GM, SN, SD, A each touch the 16 scores once (pipelined PEs: 1 point/cycle) -> 64 / 2 = 32
    assert r["busy_1d_s"] == pytest.approx(32)
    # one stage: max(16, 32) = 32 cycles
    assert r["compute_s"] == pytest.approx(32)
    # Q (4x2) re-read per 2-wide key tile: 2 x 16 B; K and V (4x2) per 2-high row tile: 2 x 16 B each;
    # AV written once: 16 B -> 112 B at 4 B/s = 28 s, under the 32 s of compute
    assert r["dram_bytes"] == pytest.approx(112)
    assert r["memory_s"] == pytest.approx(28)
    assert r["latency_s"] == pytest.approx(32)
    assert r["util_2d"] == pytest.approx(0.5) and r["util_1d"] == pytest.approx(1.0)
    assert r["spill_fraction"] == 0
    assert bottleneck(r) == "1d_array"


def test_flat_spills_when_the_score_rows_do_not_fit():
    # buffer 32 B: K/V tiles 2 cols x (E+F) x 2 B = 16 B, Q rows 2 x 2 x 2 B = 8 B -> 8 B left for
    # one 4-long score fiber of each of 2 rows (16 B): half spills. Spilled scores cost 4 accesses
    # (QK and SN written and read back): 0.5 x 4 x 16 scores x 2 B = 64 B more -> 176 B, 44 s
    r = evaluate(tiny("flat", glb_bytes=32), WL)
    assert r["spill_fraction"] == pytest.approx(0.5)
    assert r["dram_bytes"] == pytest.approx(176)
    assert r["latency_s"] == pytest.approx(44)
    assert bottleneck(r) == "dram"


def test_fusemax_1pass_on_tiny_array():
    r = evaluate(tiny("fusemax"), WL)
    # M = 4 split into M1 = 2 tiles of M0 = 2 (the array width). Cycles per Einsum:
    #   2D: QK 32 MACs /4 = 8, LM 16 max /4 = 4, SLN 16 x (exp 6 + sub 1) /4 = 28, SLD 16/4 = 4,
    #       SLNV 32 MACs /4 = 8                                         -> busy 52
    #   1D: RM 8/2 = 4, PRM 8 x 7 /2 = 28, SPD 8/2 = 4, RD 8/2 = 4, SPNV 16/2 = 8, RNV 16/2 = 8,
    #       AV 8 divides /2 = 4                                         -> busy 60
    # stages: max(8+4, 4+8+4) + 4 + max(28+4, 28+4) + max(8, 8) = 16 + 4 + 32 + 8 = 60
    assert r["busy_2d_s"] == pytest.approx(52)
    assert r["busy_1d_s"] == pytest.approx(60)
    assert r["compute_s"] == pytest.approx(60)
    assert r["util_2d"] == pytest.approx(52 / 60) and r["util_1d"] == pytest.approx(1.0)
    # every row fits in the buffer: Q, BK, BV read once, AV written once: 4 x 8 values x 2 B
    assert r["rows_resident"] == 4 and r["dram_bytes"] == pytest.approx(64)
    assert r["latency_s"] == pytest.approx(60)


def test_fusemax_rereads_keys_when_rows_do_not_fit():
    # 40 B buffer: K/V tile 16 B, each query row keeps Q (2) + RM, RD (1 each) + RNV (2) = 6 values
    # = 12 B -> 2 rows resident -> BK and BV read twice: 16 + 2x16 + 2x16 + 16 = 96 B
    r = evaluate(tiny("fusemax", glb_bytes=40), WL)
    assert r["rows_resident"] == 2 and r["dram_bytes"] == pytest.approx(96)


def test_non_interleaved_tiles_pay_a_stall():
    d = tiny("fusemax_arch", stall_cycles_per_tile=3)
    r = evaluate(d, WL)
    # (M/2) x (P/2) = 4 tiles x 3 cycles = 12 cycles of stall on top of the stages
    assert r["stall_s"] == pytest.approx(12)
    stages = max(8 + 4, 4 + 4) + 4 + max(28 + 4, 28 + 4) + max(8, 8 + 8)
    assert r["compute_s"] == pytest.approx(stages + 12)


def test_unfused_sums_each_einsum_against_its_own_traffic():
    r = evaluate(tiny("unfused"), WL)
    # QK: reads Q 16 B + K 16 B, writes 32 B (16 scores) -> 64 B = 16 s vs 32/4 = 8 cycles -> 16
    # GM: reads 32 B, writes 8 B -> 10 s vs 16/2 = 8 -> 10;  SN: reads 32 + 8, writes 32 -> 18 vs 8 -> 18
    # SD: reads 32, writes 8 -> 10;  A: reads 32 + 8, writes 32 -> 18;  AV: reads 32 + 16, writes 16 -> 16
    assert r["latency_s"] == pytest.approx(16 + 10 + 18 + 10 + 18 + 16)
    assert r["dram_bytes"] == pytest.approx(64 + 40 + 72 + 40 + 72 + 64)


def test_energy_components_add_up_and_dram_is_64_pj_per_byte():
    r = evaluate(tiny("flat", glb_bytes=32), WL)
    parts = sum(r[k] for k in ("energy_mac_2d_pj", "energy_ops_pj", "energy_reg_pj", "energy_glb_pj", "energy_dram_pj"))
    assert r["energy_pj"] == pytest.approx(parts)
    assert r["energy_dram_pj"] == pytest.approx(176 * 64.0)
    # 64 MACs at 17.1645 pJ
    assert r["energy_mac_2d_pj"] == pytest.approx(64 * 17.1645)


def test_paper_configuration_closed_form():
    # FLAT at 1K on BERT is bound by 4 softmax ops per score on 256 PEs; FuseMax by its stages:
    # (E+1) + 1 + 8 + F, plus the final divide F*256/M, in units of scores/65536 cycles.
    m = MODELS["BERT"]
    wl = {"B": m.batch, "H": m.heads, "M": 1024, "P": 1024, "E": m.e, "F": m.f}
    flat, fm = evaluate(DESIGNS["flat"], wl), evaluate(DESIGNS["fusemax"], wl)
    scores = m.batch * m.heads * 1024 * 1024
    assert flat["latency_s"] == pytest.approx(4 * scores / 256 / 940e6)
    assert fm["latency_s"] == pytest.approx((1 + 64 + 16 + 1 + 8 + 64) * scores / 65536 / 940e6)


def test_vectorized_matches_pointwise():
    dims = np.array([16.0, 64.0, 256.0])
    glb = np.array([1.0, 8.0, 64.0]) * 2**20
    seq = np.array([1024.0, 65536.0, 1048576.0])
    wl = {"B": 2, "H": 4, "M": seq, "P": seq, "E": 64, "F": 64}
    for name, d in DESIGNS.items():
        vec = evaluate(d, wl, {"rows": dims, "cols": dims, "glb_bytes": glb})
        for i in range(3):
            one = evaluate(d, {**wl, "M": seq[i], "P": seq[i]}, {"rows": dims[i], "cols": dims[i], "glb_bytes": glb[i]})
            for k in ("latency_s", "energy_pj", "dram_bytes", "util_2d"):
                assert vec[k][i] == pytest.approx(float(one[k])), (name, k, i)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match="workload rank M must be >= 1"):
        evaluate(DESIGNS["flat"], {**WL, "M": 0})
    with pytest.raises(ValueError, match="must be >= 1 and finite"):
        evaluate(DESIGNS["flat"], {**WL, "E": float("nan")})
    with pytest.raises(ValueError, match="missing rank 'P'"):
        evaluate(DESIGNS["flat"], {k: v for k, v in WL.items() if k != "P"})
    with pytest.raises(ValueError, match="unknown arch override 'banks'"):
        evaluate(DESIGNS["flat"], WL, {"banks": 3})
    with pytest.raises(ValueError, match="arch glb_bytes must be positive"):
        evaluate(DESIGNS["flat"], WL, {"glb_bytes": -1})
    with pytest.raises(ValueError, match="does not give"):
        evaluate(DESIGNS["flat"], {"B": 1, "H": 1, "M": 4, "P": 4})
    with pytest.raises(ValueError, match="LM needs 'max', which the 2D array of arch 'flat'"):
        Design(
            "bad",
            "attention_1pass",
            FLAT_ARCH,
            stages=(
                Stage(
                    two_d=tuple(
                        e
                        for e in (
                            "QK",
                            "LM",
                            "RM",
                            "SLN",
                            "SLD",
                            "SLNV",
                            "PRM",
                            "SPD",
                            "RD",
                            "SPNV",
                            "RNV",
                            "AV",
                        )
                    )
                ),
            ),
        )
    with pytest.raises(ValueError, match="bound to no array"):
        Design("bad", "attention_3pass", FUSEMAX_ARCH, stages=(Stage(two_d=("QK",)),))
    with pytest.raises(ValueError, match="no Einsum named 'XX'"):
        Design("bad", "attention_3pass", FUSEMAX_ARCH, stages=(Stage(two_d=("XX",)),))
    with pytest.raises(ValueError, match="Arch.rows: expected a positive integer"):
        Arch("x", rows=0)


def test_constraints_shrink_the_iteration_space(tmp_path):
    # causal mask on a 4-token sequence keeps 10 of the 16 (m, p) pairs; a window of 2 keeps 7
    for text, kept in (("where m <= p", 10), ("where m <= p, p - m < 2", 7), ("where m < 1", 4)):
        path = tmp_path / "masked.einsum"
        path.write_text(f"S[m,p] = Q[e,p] * K[e,m] {text}\n")
        arch = dataclasses.replace(FLAT_ARCH, glb_bytes=1 << 20, **TINY)
        d = Design("masked", str(path), arch, stages=(Stage(two_d=("S",)),))
        r = evaluate(d, WL)
        # kept pairs x E = 2 MACs each, on 4 PEs at 1 Hz
        assert r["busy_2d_s"] == pytest.approx(kept * 2 / 4), text
        assert r["energy_mac_2d_pj"] == pytest.approx(kept * 2 * 17.1645), text


def test_shipped_variants_scale_as_expected():
    m = MODELS["BERT"]
    wl = {"B": m.batch, "H": m.heads, "M": 65536, "P": 65536, "E": m.e, "F": m.f}
    base = DESIGNS["fusemax"]
    dense = evaluate(base, wl)
    causal = evaluate(dataclasses.replace(base, cascade="attention_causal_1pass"), wl)
    # a causal mask halves the work (up to one 256-key tile per row)
    assert causal["latency_s"] / dense["latency_s"] == pytest.approx(0.5, abs=0.01)
    # at 4K tokens every query row stays resident, so each of Q, K, V, O moves once
    wl = {**wl, "M": 4096, "P": 4096}
    dense = evaluate(base, wl)
    gqa = evaluate(dataclasses.replace(base, cascade="attention_gqa_1pass"), {**wl, "H": m.heads // 4, "G": 4})
    # same work; K and V read once per group of 4 query heads: Q + O + (K + V) / 4 of the traffic
    assert gqa["latency_s"] == pytest.approx(dense["latency_s"])
    assert gqa["dram_bytes"] / dense["dram_bytes"] == pytest.approx((2 + 2 / 4) / 4)


# ----------------------------------------------------------------------------- masks, padding, inputs


def _masked_1pass(tmp_path, where: str) -> str:
    """The shipped causal 1-pass cascade with another mask on every Einsum."""
    text = (Path(builtin_cascade_path("attention_causal_1pass"))).read_text().replace("where m <= p", where)
    path = tmp_path / "masked_1pass.einsum"
    path.write_text(text)
    return str(path)


def test_a_window_mask_cuts_key_traffic_to_the_keys_each_row_block_sees(tmp_path):
    # 8 tokens, window of 2 (m <= p, p - m < 2), 2 query rows resident (40 B buffer, as above):
    # row blocks [0,1] [2,3] [4,5] [6,7] need keys [0,1] [1,3] [3,5] [5,7] = 2 + 3 + 3 + 3 = 11 keys
    # (unmasked: 4 x 8 = 32). K and V: 11 x (E + F = 4) x 2 B = 88 B; Q once 32 B, AV once 32 B.
    d = dataclasses.replace(tiny("fusemax", glb_bytes=40), cascade=_masked_1pass(tmp_path, "where m <= p, p - m < 2"))
    wl = {**WL, "M": 8, "P": 8}
    r = evaluate(d, wl)
    assert r["rows_resident"] == 2
    assert r["dram_bytes"] == pytest.approx(88 + 32 + 32)
    dense = evaluate(tiny("fusemax", glb_bytes=40), wl)
    assert dense["dram_bytes"] == pytest.approx(4 * 8 * 8 + 32 + 32)


def test_shipped_sliding_window_at_1m_keys_is_not_dram_bound():
    m = MODELS["BERT"]
    n = 1 << 20
    wl = {"B": m.batch, "H": m.heads, "M": n, "P": n, "E": m.e, "F": m.f}
    d = dataclasses.replace(DESIGNS["fusemax"], cascade="attention_sliding_window_1pass")
    r = evaluate(d, wl)
    # hand count: blocks of R resident rows, each needing its rows' 4096-key windows
    rows = int(r["rows_resident"])
    keys = sum(min(n - 1, b + rows - 1) - max(0, b - 4095) + 1 for b in range(0, n, rows))
    heads = m.batch * m.heads
    kv = heads * keys * (m.e + m.f) * 2
    q_and_out = heads * n * (m.e + m.f) * 2
    assert r["dram_bytes"] == pytest.approx(kv + q_and_out)
    assert r["dram_bytes"] < 0.5e12  # it was charged 3.71 TB, every key once per row block
    assert bottleneck(r) != "dram" and r["latency_s"] == pytest.approx(r["compute_s"])


def test_a_banded_mask_on_flat_keeps_its_score_rows_on_chip(tmp_path):
    # FLAT's 3-pass cascade with a +-256 window: a row keeps 513 scores, which fit; dense 1M spills 94%
    text = builtin_cascade_path("attention_3pass").read_text()
    lines = [ln.split("#")[0].rstrip() for ln in text.splitlines() if ln.split("#")[0].strip()]
    banded = "\n".join(f"{ln} where p - m <= 256, m - p <= 256" for ln in lines if "[" in ln) + "\n"
    path = tmp_path / "banded.einsum"
    path.write_text(banded)
    m = MODELS["BERT"]
    wl = {"B": m.batch, "H": m.heads, "M": 1 << 20, "P": 1 << 20, "E": m.e, "F": m.f}
    assert evaluate(DESIGNS["flat"], wl)["spill_fraction"] == pytest.approx(0.94, abs=0.01)
    r = evaluate(dataclasses.replace(DESIGNS["flat"], cascade=str(path)), wl)
    assert r["spill_fraction"] == 0
    # Q re-read per 256-key tile only by the rows within 256 of it: (256 + 2 x 256) rows, not 1M
    assert r["dram_bytes"] < 0.01 * evaluate(DESIGNS["flat"], wl)["dram_bytes"]


def test_padding_costs_cycles_but_not_energy_or_traffic():
    m = MODELS["BERT"]
    heads = m.batch * m.heads

    def at(n: int, name: str = "fusemax") -> dict:
        return evaluate(DESIGNS[name], {"B": m.batch, "H": m.heads, "M": n, "P": n, "E": m.e, "F": m.f})

    r257, r512 = at(257), at(512)
    # 257 keys fill two 256-wide tiles and 257 queries two 256-row blocks: the arrays take as long as at 512
    assert r257["busy_2d_s"] == pytest.approx(r512["busy_2d_s"])
    # but only real scores cost MAC energy (QK and SLNV: E and F MACs each) and only real tokens move
    assert r257["energy_mac_2d_pj"] == pytest.approx(heads * 257 * 257 * (m.e + m.f) * 17.1645)
    assert r257["dram_bytes"] == pytest.approx(heads * 257 * (m.e + m.f) * 2 * 2)
    # the energy ratio to FLAT moves smoothly across a tile boundary (it jumped from 0.87 to 1.62)
    ratio = {n: at(n)["energy_pj"] / at(n, "flat")["energy_pj"] for n in (256, 257)}
    assert abs(ratio[257] - ratio[256]) < 0.1
    # one token: both designs pay for idle PEs in time, neither in energy
    one, one_flat = at(1), at(1, "flat")
    assert one["energy_pj"] / one_flat["energy_pj"] < 1.5  # was 98.5
    assert one_flat["latency_s"] / one["latency_s"] > 0.3  # was 0.008
    # FLAT's one score still takes E cycles of its one busy PE for QK and F for AV
    assert one_flat["busy_2d_s"] == pytest.approx((m.e + m.f) * heads / 940e6)


def test_nonsense_inputs_are_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="workload rank M must be a whole number, got 1.5"):
        evaluate(DESIGNS["fusemax"], {**WL, "M": 1.5, "P": 1.5})
    with pytest.raises(ValueError, match="arch rows must be a whole number, got 3.7"):
        evaluate(DESIGNS["fusemax"], WL, {"rows": np.array([2.0, 3.7])})
    # one K/V tile: 2 keys x (E + F = 128) x 2 B = 512 B; one query row: Q (64) + RM, RD + RNV (64) = 260 B
    with pytest.raises(ValueError, match=r"arch glb_bytes = 1 B cannot hold .* \(772 B\)"):
        evaluate(DESIGNS["fusemax"], {**WL, "E": 64, "F": 64}, {"glb_bytes": 1, "cols": 2})
    from simcim.npu.dataflow.model import linear_layers

    with pytest.raises(ValueError, match="linear_layers: seq_len must be a whole number, got 1.5"):
        linear_layers(FUSEMAX_ARCH, MODELS["BERT"], 1.5)
    with pytest.raises(ValueError, match="linear_layers: arch rows must be a whole number, got 3.7"):
        linear_layers(FUSEMAX_ARCH, MODELS["BERT"], 1024, {"rows": 3.7})
    # a buffer that holds fewer rows than the array has re-reads the keys for every block it does hold
    r = evaluate(tiny("fusemax", glb_bytes=28), WL)
    assert r["rows_resident"] == 1 and r["dram_bytes"] == pytest.approx(16 + 4 * 16 + 4 * 16 + 16)


def test_linear_layers_pay_for_partial_tiles_in_time_only():
    from simcim.npu.dataflow.model import linear_layers

    m = dataclasses.replace(MODELS["BERT"], batch=1)
    fast = {"dram_bytes_per_s": 1e18}  # compute bound
    full, part = linear_layers(FUSEMAX_ARCH, m, 512, fast), linear_layers(FUSEMAX_ARCH, m, 257, fast)
    # 257 tokens fill two 256-row tiles, as 512 do: Q/K/V/O projections and the FFN, k cycles a tile
    cycles = sum(2 * -(-n // 256) * k for k, n in ((768, 768),) * 4 + ((768, 3072), (3072, 768)))
    assert part["latency_s"] == pytest.approx(cycles / 940e6) and full["latency_s"] == pytest.approx(cycles / 940e6)
    assert part["macs"] == pytest.approx(full["macs"] * 257 / 512)
