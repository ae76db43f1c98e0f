"""Cache and DRAM against hand-computed sequences and queueing arithmetic."""

import numpy as np
import pytest

from simcim.npu.cache import (
    D_HIT,
    D_MISS,
    CacheConfig,
    HierarchyConfig,
    demand_access,
    lookup,
    make_hierarchy,
)
from simcim.npu.dram import READS, WRITES, DRAMConfig, dram_access, make_dram

LINE = 64


def one_level(sets: int, ways: int, policy: str = "lru", latency: int = 1, dram_latency: int = 10,
              mshrs: int = 16, channels: int = 1) -> tuple:
    size_kib = sets * ways * LINE / 1024
    cfg = HierarchyConfig(levels=(CacheConfig("c", size_kib, ways, latency, policy),),
                          dram=DRAMConfig(dram_latency, channels, float(LINE)), mshrs=mshrs)
    return make_hierarchy(cfg)


def hits_of(H: tuple, lines: list[int], writes: list[bool] | None = None) -> list[int]:
    out = []
    for k, ln in enumerate(lines):
        before = H[5][0, D_HIT]
        demand_access(H, ln, 100 * k, bool(writes and writes[k]))
        out.append(int(H[5][0, D_HIT] - before))
    return out


def test_lru_two_way_hand_sequence():
    H = one_level(sets=1, ways=2)
    # 0 miss, 1 miss, 0 hit, 2 evicts LRU 1, 1 misses and evicts 0, 0 misses
    assert hits_of(H, [0, 1, 0, 2, 1, 0]) == [0, 0, 1, 0, 0, 0]
    assert H[5][0, D_MISS] == 5


def test_associativity_conflicts_direct_mapped():
    H = one_level(sets=2, ways=1)
    # lines 0 and 2 map to set 0 and keep evicting each other; 1 lives alone in set 1
    assert hits_of(H, [0, 2, 0, 2, 1, 1]) == [0, 0, 0, 0, 0, 1]
    H = one_level(sets=1, ways=2)
    assert hits_of(H, [0, 2, 0, 2]) == [0, 0, 1, 1]


def test_srrip_differs_from_lru_on_a_scan():
    seq = [0, 0, 1, 2, 3, 0]
    assert hits_of(one_level(1, 2, "lru"), seq) == [0, 1, 0, 0, 0, 0]
    # SRRIP: the re-referenced 0 sits at RRPV 0 and survives the scan of 1, 2, 3
    assert hits_of(one_level(1, 2, "srrip"), seq) == [0, 1, 0, 0, 0, 1]


def test_write_back_only_dirty_victims_reach_dram():
    H = one_level(sets=1, ways=1)
    hits_of(H, [0, 1, 2], writes=[True, False, False])
    dstats = H[8]
    assert dstats[WRITES] == 1  # dirty 0 evicted by 1; clean 1 evicted by 2 is dropped
    assert dstats[READS] == 3


def test_write_back_lands_in_l2_not_dram():
    cfg = HierarchyConfig(levels=(CacheConfig("l1", 64 / 1024, 1, 1), CacheConfig("l2", 1, 4, 5)),
                          dram=DRAMConfig(10, 1, 64.0))
    H = make_hierarchy(cfg)
    demand_access(H, 0, 0, True)
    demand_access(H, 1, 100, False)  # evicts dirty 0 from l1 into l2 (already there: marked dirty)
    assert H[8][WRITES] == 0
    slot = lookup(H, 1, 0)
    assert slot >= 0 and H[3][slot] & 1


def test_miss_latency_and_in_flight_merge():
    H = one_level(sets=4, ways=2, latency=1, dram_latency=10)
    # miss at 0: tag check 1, DRAM transfer 1..2, +10 latency -> 12
    assert demand_access(H, 5, 0, False) == 12
    # the line is still in flight at cycle 5: the access waits for it (MSHR merge)
    assert demand_access(H, 5, 5, False) == 12
    assert demand_access(H, 5, 20, False) == 21


def test_mshr_limit_serialises_misses():
    H = one_level(sets=4, ways=2, mshrs=1)
    assert demand_access(H, 0, 0, False) == 12
    # the only MSHR is busy until 12: the second miss starts then
    assert demand_access(H, 1, 0, False) == 23
    H = one_level(sets=4, ways=2, mshrs=2)
    assert demand_access(H, 0, 0, False) == 12
    # a free MSHR, but the channel is busy until 2: the transfer runs 2..3
    assert demand_access(H, 1, 0, False) == 13


@pytest.mark.parametrize("channels,bpc,latency", [(1, 16.0, 50), (2, 16.0, 100), (4, 8.0, 0)])
def test_dram_queueing_arithmetic(channels, bpc, latency):
    D = make_dram(DRAMConfig(latency, channels, bpc), LINE)
    service = int(np.ceil(LINE / bpc))
    n = 64
    done = [dram_access(*D, line, 0, False) for line in range(n)]
    # line k is the (k // channels)-th request on its channel: it finishes after that many services
    expected = [latency + (k // channels + 1) * service for k in range(n)]
    assert done == expected
    # sustained throughput is channels * bytes_per_cycle
    span = max(done) - latency
    assert n * LINE / span == pytest.approx(channels * min(bpc, LINE))


def test_dram_idle_channel_has_no_queueing():
    D = make_dram(DRAMConfig(30, 1, 32.0), LINE)
    assert dram_access(*D, 0, 0, False) == 32
    assert dram_access(*D, 1, 1000, False) == 1032


def test_bad_geometry_is_rejected():
    with pytest.raises(ValueError, match="whole number of sets"):
        CacheConfig("l2", 1.5, 16, 10)
    with pytest.raises(ValueError, match="unknown policy"):
        CacheConfig("l2", 16, 4, 10, "plru")
    with pytest.raises(ValueError, match="at least one cache level"):
        HierarchyConfig(levels=(CacheConfig("l2", 0, 4, 10),))
    with pytest.raises(ValueError, match="bytes_per_cycle"):
        DRAMConfig(10, 1, float("nan"))


def test_dram_request_for_a_future_cycle_does_not_delay_an_earlier_one():
    D = make_dram(DRAMConfig(10, 1, 16.0), LINE)  # 4-cycle transfers
    # a prefetch simulated first but issued for cycle 1000 (waiting for its index data)
    assert dram_access(*D, 0, 1000, False) == 1014
    # a demand simulated after it but happening at cycle 0 uses the idle channel at once
    assert dram_access(*D, 1, 0, False) == 14
    # a request at 1000 queues behind the one that took that slot
    assert dram_access(*D, 2, 1000, False) == 1018
    # requests off a slot boundary start at the next one
    assert dram_access(*D, 3, 5, False) == 8 + 4 + 10


def test_dram_matches_a_simpy_fifo_channel_on_random_arrivals():
    import simpy

    rng = np.random.default_rng(7)
    service, latency = 4, 30
    # slot-aligned arrivals in time order, bursty enough to queue
    arrivals = np.cumsum(rng.integers(0, 3, size=300)) * service
    D = make_dram(DRAMConfig(latency, 1, LINE / service), LINE)
    ours = [dram_access(*D, k, int(t), False) for k, t in enumerate(arrivals)]

    env = simpy.Environment()
    channel = simpy.Resource(env, capacity=1)
    done = [0] * len(arrivals)

    def request(k, t):
        yield env.timeout(t)
        with channel.request() as req:
            yield req
            yield env.timeout(service)
        done[k] = env.now + latency

    for k, t in enumerate(arrivals):
        env.process(request(k, int(t)))
    env.run()
    assert ours == done
    assert max(ours) - latency > arrivals[-1]  # the channel did queue
