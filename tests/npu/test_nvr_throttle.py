"""NVR's throttle: it must help where its own prefetches are evicted unused, and not hurt SpMV."""

import pytest

from simcim.npu.core import simulate
from simcim.npu.experiment import Params, _trace


def cycles(throttle: bool, **kw) -> int:
    p = Params(**kw, nvr_throttle=throttle, compare_baseline=False)
    trace, arrays = _trace(p.spec(), 0, None)
    return simulate(trace, p.hierarchy(), p.core(), "nvr", p.prefetcher_config(), p.width, arrays)["cycles"]


def test_throttle_recovers_an_8_kib_cache_that_nvr_floods():
    kw = dict(workload="spmm", rows=128, cols=262144, sparsity=0.9995, feat=16, npu_cache_kib=8.0)
    assert cycles(True, **kw) < 0.7 * cycles(False, **kw)


@pytest.mark.parametrize("cache", [8.0, 16.0])
def test_throttle_does_not_shorten_spmv_into_late_prefetches(cache):
    # evicted prefetches still hit in L2; halving on them alone made 1/3 of the prefetches late (+8%)
    kw = dict(workload="spmv", rows=1024, cols=262144, sparsity=0.9995, feat=1, npu_cache_kib=cache)
    assert cycles(True, **kw) <= 1.02 * cycles(False, **kw)


def test_throttle_does_not_chase_lateness_that_comes_from_bank_conflicts():
    # over DRAM banks the gathers' row conflicts make prefetches late at any distance; doubling on
    # lateness alone overflowed L2 (no NPU cache: evicted prefetches go back to DRAM)
    kw = dict(workload="spmv", rows=2048, cols=262144, sparsity=0.9995, feat=1, dram_model="banks", dram_latency=72)
    assert cycles(True, **kw) <= 1.02 * cycles(False, **kw)
