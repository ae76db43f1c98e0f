"""The GPU model's prediction terms and spec files, on work counted by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest

from simcim.gpu import model as gm
from tests.gpu.spec import SPEC


def test_waited_loop_leaves_its_last_step_unhidden():
    # 4 waited steps from HBM; 1 ms of FMA work over the chip: a quarter of it, the last step's, follows the waits
    w = gm.Work("x", fma=10e12 * 1e-3, programs=10 * SPEC.sms, iters=4)
    p = gm.predict(w, SPEC)
    waves = math.ceil(10 * SPEC.sms / (SPEC.sms * 16))
    assert p.terms["chain"] == pytest.approx(waves * 4 * SPEC.dram_iter_us * 1e-6 + 1e-3 / 4)
    one = gm.predict(dataclasses.replace(w, iters=1), SPEC)  # one step a program: wait, then all of its work
    assert one.terms["chain"] == pytest.approx(SPEC.dram_iter_us * 1e-6 + 1e-3) and one.bound == "chain"


def test_tail_program_chain_follows_the_other_waves():
    # 3 waves of programs that wait 2 steps each; the last program waits 5: 2 + 2 + 5 steps
    per_sm = 64 // 4  # by warps (no registers given)
    w = gm.Work("x", programs=3 * SPEC.sms * per_sm, iters=2, tail_iters=5)
    assert gm.predict(w, SPEC).terms["chain"] == pytest.approx(9 * SPEC.dram_iter_us * 1e-6)
    plain = dataclasses.replace(w, tail_iters=0)
    assert gm.predict(plain, SPEC).terms["chain"] == pytest.approx(6 * SPEC.dram_iter_us * 1e-6)


def test_predict_terms_and_bounds():
    # first load from HBM: kernel_min 2 us + (1.5 - 0.5) us; 1 MB at 1000 GB/s = 1 us
    p = gm.predict(gm.Work("x", hbm_bytes=1e6), SPEC)
    assert p.time_s == pytest.approx(4e-6) and p.bound == "launch"
    p = gm.predict(gm.Work("x", hbm_bytes=1e9), SPEC)
    assert p.time_s == pytest.approx(3e-6 + 1e-3) and p.bound == "hbm"
    p = gm.predict(gm.Work("x", unpack=5e9, fma=1e10), SPEC)  # compute terms add: 1 ms + 1 ms
    assert p.time_s == pytest.approx(3e-6 + 2e-3) and p.bound in ("unpack", "fma")
    assert gm.predict(gm.Work("x", hbm_bytes=4e9), SPEC, l2_resident=True).time_s == pytest.approx(2e-6 + 1e-3)


def test_predict_occupancy_terms():
    # Little's law: 10 programs of 4 warps stream at 10 x 10 GB/s; of 8 warps, twice that
    p = gm.predict(gm.Work("x", hbm_bytes=1e6, programs=10), SPEC)
    assert p.terms["hbm"] == pytest.approx(1e6 / 100e9) and p.bound == "hbm"
    assert gm.predict(gm.Work("x", hbm_bytes=1e6, programs=10, warps=8), SPEC).terms["hbm"] == pytest.approx(5e-6)
    # the longest program (half the work) runs on one SM at 1/132 of the rate
    p = gm.predict(gm.Work("x", exp=2e6, programs=2, program_work=(1.0, 1.0)), SPEC)
    assert p.terms["compute"] == pytest.approx(1e-6 * 0.5 * 132) and p.bound == "exp/sm"
    # 300 programs of 16 warps: 4 per SM, one wave; 3 waited iterations from HBM
    p = gm.predict(gm.Work("x", programs=300, warps=16, iters=3), SPEC)
    assert p.terms["chain"] == pytest.approx(3 * 1.5e-6)
    p = gm.predict(gm.Work("x", programs=600, warps=16, iters=3), SPEC)
    assert p.terms["chain"] == pytest.approx(2 * 3 * 1.5e-6)
    # a chain is the sum of its launches
    two = gm.chain("c", gm.Work("c", hbm_bytes=1e6), gm.Work("c", hbm_bytes=1e9))
    assert two.launches == 2 and two.hbm_bytes == 1e6 + 1e9
    assert gm.predict(two, SPEC).time_s == pytest.approx(4e-6 + 3e-6 + 1e-3)


def test_tensor_products_overlap_the_issue_bound_work():
    # many equal programs: the chip's rates; products (mma, attn) overlap fma/exp/unpack/loads, which add
    n = 10 * SPEC.sms
    w = gm.Work("x", attn_flops=50e12 * 1e-3, exp=2e12 * 4e-4, fma=10e12 * 3e-4, programs=n)
    p = gm.predict(w, SPEC)
    assert p.terms["compute"] == pytest.approx(1e-3) and p.bound == "attn"
    more = dataclasses.replace(w, fma=10e12 * 9e-4)  # exp + fma = 1.3 ms > 1 ms of products
    assert gm.predict(more, SPEC).terms["compute"] == pytest.approx(1.3e-3)
    # one program alone runs its steps in series: products and softmax add
    one = gm.predict(dataclasses.replace(w, programs=1, warps=8), SPEC)
    assert one.terms["compute"] == pytest.approx(1.7e-3 * SPEC.sms) and one.bound == "attn/sm"


def test_dispatch_spread_of_programs_over_sms():
    assert gm.dispatch_spread(SPEC.sms, SPEC.sms) == 1.0
    assert gm.dispatch_spread(SPEC.sms + 1, SPEC.sms) == pytest.approx(2 * SPEC.sms / (SPEC.sms + 1))
    # 2 SMs, programs of work 3, 1, 1, 1 in launch order: SM0 takes 3, SM1 takes 1, 1, 1 -> 3 against a mean of 3
    assert gm.dispatch_spread((3.0, 1.0, 1.0, 1.0), 2) == 1.0
    # 1, 1, 1, 3: SM0 1 + 1, SM1 1 + 3 (the last goes to the SM free first): 4 against 3
    assert gm.dispatch_spread((1.0, 1.0, 1.0, 3.0), 2) == pytest.approx(4 / 3)
    # causal attention, one head of 32 query blocks times 16 heads (short first) on 132 SMs: 85 visits for the
    # busiest SM against a mean of 8448 / 132 = 64
    visits = tuple(float(i + 1) for i in range(32)) * 16
    assert gm.dispatch_spread(visits, 132) == pytest.approx(85 / 64)
    with pytest.raises(ValueError, match="program_work must hold 3"):
        gm.predict(gm.Work("x", fma=1.0, programs=3, program_work=(1.0, 2.0)), SPEC)
    # the compute of many equal programs stretches by the wave quantization
    p = gm.predict(gm.Work("x", fma=10e12 * 1e-3, programs=SPEC.sms + 1, warps=8), SPEC)
    assert p.terms["compute"] == pytest.approx(1e-3 * 2 * SPEC.sms / (SPEC.sms + 1))


def test_longest_program_issues_one_instruction_a_cycle_a_warp():
    # one program's FMAs at 1/sms of the chip's rate, and at warps/4 of that below 4 warps
    one_sm = 1e6 / (SPEC.fma_tops * 1e12) * SPEC.sms
    for warps, factor in ((1, 4), (2, 2), (4, 1), (8, 1)):
        p = gm.predict(gm.Work("x", fma=1e6, programs=1, warps=warps), SPEC)
        assert p.terms["compute"] == pytest.approx(one_sm * factor)
    # many programs: the chip's rate bounds it, not one program's
    many = gm.predict(gm.Work("x", fma=1e6, programs=10 * SPEC.sms, warps=2), SPEC)
    assert many.terms["compute"] == pytest.approx(1e6 / (SPEC.fma_tops * 1e12))
