"""What Triton makes of the weight-only and KV kernels for a Hopper GPU, checked without one: the quantized tiles reach
the tensor cores' register operand without a trip through shared memory (the compiler runs in a subprocess, with the
interpreter off, for sm_90)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
from simcim.kernels import kv_quant, quant_gemm
from simcim.kernels.profile import hopper_ttgir, staged_tiles

out = {}
gemm = {n: "*bf16" for n in ("X", "S", "Z", "B", "Y")} | {"WP": "*i32", "P": "*fp32", "CNT": "*i32"}
gemm = {n: gemm.get(n, "i32") for n in ("X", "WP", "S", "Z", "B", "Y", "P", "CNT", "M", "N", "K", "stride_xm",
                                        "stride_wp", "stride_wn", "stride_sp", "stride_sn", "stride_ym")}
for bits, planes in ((4, 1), (2, 2)):
    ir = hopper_ttgir(quant_gemm._qmm_tc_kernel, gemm, dict(BITS=bits, PLANES=planes, HAS_ZERO=planes == 1,
                      HAS_BIAS=False, GROUP=128, BLOCK_N=64, BLOCK_K=256, SPLIT_K=4, MP=16))
    out[f"tc{bits}"] = {"staged": staged_tiles(ir), "async": ir.count("async_copy_global_to_local")}
kv = {n: "*bf16" for n in ("Q", "KS", "KL", "VS", "VL", "FK", "FV")} | {"KW": "*i32", "VW": "*i32", "qk_scale": "fp32"}
kv |= {n: "*fp32" for n in ("PO", "PM", "PL")}
order = ["Q", "KW", "KS", "KL", "VW", "VS", "VL", "FK", "FV", "PO", "PM", "PL", "qk_scale", "HKV", "T_Q", "T_F",
         "TOK_PER_SPLIT", "NUM_SPLITS", "s_qb", "s_qh", "s_kw", "s_ks", "s_vw", "s_vs", "s_f"]
kv = {n: kv.get(n, "i32") for n in order}
for left in (True, False):
    ir = hopper_ttgir(kv_quant._kv_split_kernel, kv, dict(GROUP=4, GP=16, BITS=2, KG=64, VG=64, D=128, ASM=True,
                      KF=16, PAIR=False, LEFT=left), num_stages=2)
    out[f"kv_left{left}"] = {"staged": staged_tiles(ir), "async": ir.count("async_copy_global_to_local")}
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def layouts():
    pytest.importorskip("triton.backends.nvidia")
    env = dict(os.environ, TRITON_INTERPRET="0")
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0:
        pytest.fail(f"compiling for sm_90 failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout)


def test_weight_codes_reach_the_tensor_cores_without_a_tile_in_shared_memory(layouts):
    for case in ("tc4", "tc2"):
        staged = layouts[case]["staged"]
        # only the activations (the right operand, 16 x 16 or 16 x 32 a code position) go to shared memory by hand;
        # the weight words come in by the pipeline's asynchronous copies
        assert staged and all(t.startswith("16x") and t.endswith("bf16") for t in staged), staged
        assert layouts[case]["async"] > 0


def test_kv_left_operand_keeps_key_tiles_out_of_shared_memory(layouts):
    left, right = layouts["kv_leftTrue"]["staged"], layouts["kv_leftFalse"]["staged"]
    assert "64x128xbf16" in right  # the dequantized key (or value) tile, the right operand of the former kernel
    assert "64x128xbf16" not in left and "64x16xi32" not in left  # no key tile, no key words staged by hand
    assert "128x64xbf16" in left  # the value tile, transposed, still goes through shared memory
