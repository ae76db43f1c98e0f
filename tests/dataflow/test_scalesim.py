"""Our 2D-array model beside SCALE-Sim v3 on one small GEMM (output stationary).

SCALE-Sim runs in a subprocess with ``$SIMCIM_SCALESIM_PYTHON`` (or this interpreter); the test is
skipped where that interpreter cannot import ``scalesim`` (it is not a dependency: scalesim 3.0.0
fails under numpy 2.4 and runs under 2.3, so it lives in a venv of its own; see docs/dataflow.md).
"""

import pytest

from simcim.npu.dataflow.scalesim_check import Gemm, compare, ours, scalesim_available


def test_our_gemm_cycles_are_whole_output_tiles_times_the_reduction():
    # 40 x 36 outputs on a 16 x 16 array: 3 x 3 tiles, each 24 cycles of reduction
    r = ours(Gemm("small", 40, 24, 36), 16, 16, 1 << 20, 1000.0)
    assert r["ours_compute_cycles"] == 3 * 3 * 24
    assert r["ours_dram_elements"] == 40 * 24 + 24 * 36 + 40 * 36 and r["ours_stall_cycles"] == 0


@pytest.mark.skipif(not scalesim_available(), reason="SCALE-Sim (scalesim) not importable by $SIMCIM_SCALESIM_PYTHON")
def test_scalesim_agrees_once_its_per_fold_fill_and_drain_is_added():
    t = compare((Gemm("small", 40, 24, 36),), arrays=(16,), sram_kib=64, bytes_per_cycle=48).iloc[0]
    assert t["ours_compute_cycles"] == 216
    # SCALE-Sim does not overlap one fold's fill and drain (rows + cols - 2 cycles) with the next fold
    # (docs/dataflow.md: SCALE-Sim's count is folds x (k + rows + cols - 2) - 1 on all 24 shapes there)
    assert t["scalesim_compute_cycles"] == t["ours_plus_fill_drain"] - 1
    assert t["ours_stall_cycles"] == 0 and t["scalesim_stall_cycles"] == 0
