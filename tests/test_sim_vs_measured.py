"""The sim_vs_measured kind: decode-step shapes, the simulated half without a GPU, and the report on stored runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simcim.experiments.config import ConfigError, load_config
from simcim.validation import report
from simcim.validation.decode_step import arch_of, decode_ops, step_order

DATA = Path(__file__).parent / "data"
CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "sim_vs_measured.toml"


def test_decode_step_shapes():
    a = arch_of("olmoe-1b-7b")
    ops = {op.role: op for op in decode_ops(a, "int4", 4096)}
    assert ops["q_proj"].args == {"n": 2048, "k": 2048, "scheme": "int4"}
    assert ops["expert_gate_up"].calls == 16 * 8 and ops["expert_down"].args["k"] == 1024
    assert ops["router"].kernel == "linear_bf16" and ops["lm_head"].args["n"] == 50304
    assert len(step_order(a, list(ops.values()))) == 16 * (6 + 2 * 8) + 1
    prune = {op.role: op for op in decode_ops(a, "prune", 4096, 0.75)}
    assert prune["expert_down"].args["nnz"] == 2048 * 1024 // 4 and prune["q_proj"].kernel == "linear_bf16"
    assert {op.role: op for op in decode_ops(a, "kv2", 64)}["attention"].args["bits"] == 2
    with pytest.raises(ValueError, match="compression"):
        decode_ops(a, "fp8", 64)


def test_config_and_errors():
    cfg = load_config(CONFIG)
    assert len(cfg.trials()) == 14
    with pytest.raises(ConfigError, match="no such directory"):
        load_config(CONFIG, {"params.model": "/nonexistent/model"}).trials(sweep=False)
    with pytest.raises(ConfigError, match="cim_noise"):
        load_config(CONFIG, {"params.cim_noise": "nope"})


def test_simulated_half_without_gpu(tmp_path, capsys):
    from simcim.experiments.kinds import TrialContext
    from simcim.validation.experiment import Params, run_trial

    out = run_trial(Params(model="olmoe-1b-7b", compression="kv4", measure="off"), 0, TrialContext(tmp_path, "t"))
    assert "measure = 'off'" in out["measured"]
    assert out["e2e_pred_us"] > 0 and all(t > 0 for t in out["k_pred_us"])
    out = run_trial(Params(model="bundled", compression="prune", quality=False, npu_rows=32), 0,
                    TrialContext(tmp_path, "p"))
    if "needs a CUDA GPU" in out["measured"]:
        assert "needs a CUDA GPU" in capsys.readouterr().out
    assert out["sim_npu_nvr_speedup"] > 0


def test_report_from_cpu_only_run(tmp_path):
    run = tmp_path / "cpu"
    shutil.copytree(DATA / "sim_vs_measured_cpu", run)
    text = report.write(run).read_text()
    assert "needs a CUDA GPU" in text and "FuseMax 1-pass over 3-pass" in text and "NVR runahead" in text
    assert "| bundled | int4 |" in text and not (run / "sim_vs_measured.png").exists()


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_report_from_gpu_run(tmp_path, gpu):
    run = tmp_path / gpu
    shutil.copytree(DATA / f"sim_vs_measured_{gpu}", run)
    text = report.write(run).read_text()
    kt = report.kernel_table(report.load(run))
    assert f"MAPE over {len(kt)} kernel calls" in text and (run / "sim_vs_measured.png").is_file()
    assert "Over 20% error" in text and f"Measured on: NVIDIA {gpu.upper()}" in text


def test_instruction_counts_match_the_h200_compile():
    # the model's SASS counts are what triton compiled on the H200 in the stored run, told apart by their registers
    from simcim.gpu.counts import FWHT_INSTR, KV_COMBINE_INSTR, KV_SPLIT_INSTR, KV_SPLIT_RESOURCES, QGEMV1_INSTR

    grids = json.loads((DATA / "sim_vs_measured_h200" / "kernel_grids.json").read_text())
    compiled = {}
    for r in grids["triton_resources"]:
        compiled.setdefault(r["kernel"], set()).add((r["regs"], r["sass_instructions"]))
    assert {KV_SPLIT_RESOURCES[key][0]: n for key, n in KV_SPLIT_INSTR.items()} == dict(compiled["_kv_split_kernel"])
    assert set(KV_COMBINE_INSTR.values()) == {n for _, n in compiled["_kv_combine_kernel"]}
    assert set(QGEMV1_INSTR.values()) == {n for _, n in compiled["_qgemv1_kernel"]}
    assert {FWHT_INSTR[(2, 32)], FWHT_INSTR[(2, 128)]} == {n for _, n in compiled["_fwht_kernel"]}  # bf16 q


def test_kv_split_registers_match_the_h100_compile():
    # the model's register table holds what triton compiled on the H100 in the stored run (d = 32 and 128)
    from simcim.gpu.counts import KV_SPLIT_RESOURCES

    grids = json.loads((DATA / "sim_vs_measured_h100" / "kernel_grids.json").read_text())
    compiled = {(r["regs"], r["shared"]) for r in grids["triton_resources"] if r["kernel"] == "_kv_split_kernel"}
    assert {v for (bits, d), v in KV_SPLIT_RESOURCES.items() if d in (32, 128)} == compiled
