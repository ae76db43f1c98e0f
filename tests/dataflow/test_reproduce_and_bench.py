import pytest

from simcim.npu.dataflow import bench, reproduce


def test_paper_averages_within_15_percent():
    t = reproduce.compare()
    assert len(t) == 24  # 4 models x 6 sequence lengths
    for col in ("speedup_attn", "energy_attn", "speedup_e2e", "energy_e2e", "util_2d_fusemax"):
        paper, ours = t[f"{col}_paper"].mean(), t[f"{col}_ours"].mean()
        assert ours == pytest.approx(paper, rel=0.15), col


def test_bench_runs(tmp_path):
    row = bench.run("fusemax", 2000, repeats=1, loop_sample=20)  # also checks loop == vectorized results
    assert row["points"] == 2000 and row["vectorized_points_per_s"] > 0 and row["loop_points_per_s"] > 0
    bench.main(["--points", "200", "--repeats", "1", "--loop-sample", "5", "--csv", str(tmp_path / "b.csv")])
    assert (tmp_path / "b.csv").exists()
