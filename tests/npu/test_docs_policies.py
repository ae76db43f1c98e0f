"""The NPU simulator's user page and parameter help state what a user cannot guess, and stay in sync."""

import dataclasses
from pathlib import Path

from simcim.npu.cache import CacheConfig, HierarchyConfig, demand_access, lookup, make_hierarchy
from simcim.npu.dram import DRAMConfig
from simcim.npu.experiment import Params

PAGE = Path(__file__).resolve().parents[2] / "docs" / "npu.md"


def test_every_npu_sim_parameter_is_documented_with_its_help_text():
    text = PAGE.read_text()
    for f in dataclasses.fields(Params):
        help_text = f.metadata.get("help", "")
        assert help_text, f"{f.name} has no help text"
        assert f"| `{f.name}` |" in text, f"{f.name} missing from docs/npu.md"
        assert help_text in text, f"docs/npu.md has an outdated help text for {f.name}"


def test_mshrs_help_says_when_it_matters():
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(Params)}["mshrs"]
    assert "stalls on use" in help_text and "width" in help_text


def test_page_states_the_writeback_and_mshr_policies():
    text = PAGE.read_text()
    assert "does not move it in the replacement order" in text  # writeback hit, as ChampSim
    assert "`mshrs` limits only the misses of one instruction" in text


def test_writeback_hit_does_not_refresh_lru():
    # L1: one line; L2: one set of two ways. A dirty line written back into L2 stays least recently used.
    cfg = HierarchyConfig(levels=(CacheConfig("l1", 64 / 1024, 1, 1), CacheConfig("l2", 128 / 1024, 2, 1)),
                          dram=DRAMConfig(10, 1, 64.0))
    H = make_hierarchy(cfg)
    demand_access(H, 0, 0, True)     # A: L1 (dirty) and L2
    demand_access(H, 2, 100, False)  # B: L1 evicts dirty A, written back into L2 (a hit there)
    demand_access(H, 4, 200, False)  # C: L2 evicts its LRU line, still A
    assert lookup(H, 1, 0) == -1 and lookup(H, 1, 2) >= 0

