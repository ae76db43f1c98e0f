import math

import pytest
import torch

from simcim.kernels import bench
from simcim.kernels.bench import quant_gemv as quant_bench
from simcim.kernels.bench.harness import Env, Row, finish
from simcim.kernels.testing import rel_err


def test_a_nan_output_fails_the_comparison():
    # one rel_err for tests and benches: an element a kernel never wrote (NaN) is an error, not a quiet NaN
    with pytest.raises(AssertionError, match="NaN"):
        rel_err(torch.tensor([1.0, float("nan")]), torch.ones(2))
    assert not hasattr(bench, "rel_err")


def test_quant_gemv_cases_hold_the_goal_and_olmoe_rows():
    cases = quant_bench.cases(Env(torch.device("cpu"), tiny=False))
    goal = {(c.n, c.k, c.m) for c in cases if c.label == "goal"}
    assert goal == {(n, k, m) for n, k in quant_bench.GOAL_SHAPES for m in quant_bench.GOAL_M}
    low = {(c.n, c.m) for c in cases if c.label == "goal" and "ternary" in c.schemes and "int2" in c.schemes}
    assert {m for _, m in low} == {1, 8}
    olmoe = {(c.n, c.k) for c in cases if c.label.startswith("OLMoE")}
    assert olmoe == {(2048, 2048), (2048, 1024)}


def test_finish_sets_ratios_against_the_named_baseline():
    rows = [Row("k", "c", "base", 2.0), Row("k", "c", "fast", 0.5), Row("k", "other", "x", 1.0)]
    finish(rows, "base", "c")
    assert rows[1].ratio_to_baseline == 4.0 and rows[0].ratio_to_baseline == 1.0
    assert math.isnan(rows[2].ratio_to_baseline)


def test_kv_bench_quantizes_large_caches_in_slices_that_join_into_one():
    from simcim.kernels.bench import kv_decode as kv_bench
    from simcim.kernels.kv_quant import dequantize_kv

    g = torch.Generator().manual_seed(0)
    k, v = (torch.randn(3, 2, 40, 64, generator=g).to(torch.bfloat16) for _ in range(2))
    env = Env(torch.device("cpu"), tiny=True)
    whole, sliced = kv_bench._quantize(k, v, 2, env), kv_bench._quantize(k, v, 2, env, max_elems=1)
    for a, b in zip(dequantize_kv(whole), dequantize_kv(sliced)):
        assert torch.equal(a, b)
    cases = kv_bench.cases(Env(torch.device("cpu"), tiny=False))
    assert (8, 32, 8, 32768) in {(c.b, c.h, c.hkv, c.t) for c in cases}
    assert {(c.b, c.t) for c in cases if c.label == "context"} == {(1, 4096), (32, 4096), (1, 131072), (32, 131072)}
    assert any(c.label == "OLMoE" and (c.h, c.hkv) == (16, 16) for c in cases)


def test_tiny_quant_gemv_bench_times_the_tensor_core_kernel_and_hands_over_rows_case_by_case():
    seen = []
    rows = bench.run(["quant_gemv"], tiny=True, on_progress=lambda done: seen.append(len(done)))
    # the roofline's rows, then each of the 2 cases, then the bench's end
    assert len(seen) >= 4 and seen == sorted(seen) and seen[1] < seen[-1] == len(rows)
    rows = [r for r in rows if r.kernel == "quant_gemv"]
    batch = {r.impl for r in rows if r.case.startswith("goal M3")}
    assert batch == {"bf16 F.linear", "triton int4 tc", "triton int2 tc", "triton ternary tc"}
    assert all(r.rel_err < 1e-2 for r in rows if r.impl != "bf16 F.linear")
