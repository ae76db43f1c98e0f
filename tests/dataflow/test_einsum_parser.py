import pytest

from simcim.npu.dataflow.einsum import CascadeSyntaxError, builtin_cascade, load_cascade, parse_cascade


def test_shipped_cascades_parse_and_round_trip():
    for name in ("attention_3pass", "attention_2pass", "attention_1pass"):
        c = builtin_cascade(name)
        again = parse_cascade(str(c), name)
        assert [str(e) for e in again.einsums] == [str(e) for e in c.einsums]
        assert again.partitions == c.partitions


def test_structure_of_the_1pass_cascade():
    c = builtin_cascade("attention_1pass")
    assert set(c.inputs) == {"Q", "BK", "BV"}
    assert c.outputs == ("AV",)
    assert c.partitions == {"m": ("m1", "m0")}
    rm = c.einsum("RM")
    assert rm.is_recurrence and rm.output.indices[0].offset == 1
    assert c.einsum("LM").reduce == "max" and c.einsum("LM").reduced_vars == ("m0",)
    assert c.einsum("QK").op_counts() == {"mac": 1}
    assert c.einsum("SLN").op_counts() == {"exp": 1, "add": 1}
    av = c.einsum("AV")
    assert av.inputs[0].indices[1].bound == "M1" and av.op_counts() == {"div": 1}


def test_constraints_are_kept():
    c = parse_cascade("QK[m,p] = Q[e,p] * K[e,m] where m <= p, p - m < 128\n")
    assert [str(x) for x in c.einsums[0].constraints] == ["m <= p", "p - m < 128"]


@pytest.mark.parametrize(
    "text, where, words",
    [
        ("A[m,p] = foo(B[m,p])", ":1:10:", "unknown function 'foo'"),
        ("A[m,p] = B[m,p", ":1:15:", "expected ',' or ']'"),
        ("A[m,p] = B[m,p] $ C[m,p]", ":1:17:", "unexpected character '$'"),
        ("A[m,p] := B[m,p]", ":1:8:", "unexpected character ':'"),
        ("A[p] max= B[p]", ":1:6:", "needs an index to reduce"),
        ("A[m,q] = B[m,p]", ":1:1:", "output index 'q'"),
        ("A[M,p] = B[m,p]", ":1:3:", "lower-case index"),
        ("A[m,p] = B[m,p] B[m,p]", ":1:17:", "unexpected 'B'"),
        ("A[m,p] = exp(B[m,p], C[m,p])", ":1:10:", "takes 1 argument"),
        ("A[m,p] = B", ":1:10:", "needs indices"),
        ("A[m,p] = B[m,p] where q < p", ":1:1:", "does not iterate"),
        ("A[m,p] = B[m,p]\nC[m] = B[m]", ":2:8:", "B has 1 indices here but 2 at line 1"),
        ("A[m,p] = B[m,p]\nA[m,p] = C[m,p]", ":2:1:", "defined twice"),
        ("A[m,p] = C[m,p]\nC[m,p] = B[m,p]", ":1:10:", "read before the Einsum"),
        ("partition m -> m1", ":1:18:", "expected ','"),
        ("partition m -> m1, m1", ":1:16:", "two new, distinct"),
        ("# only a comment\n", ":1:1:", "no Einsums"),
        ("A[m+2,p] = A[m,p] + B[m,p]", ":1:1:", "index+1"),
        ("A[m,p] = B[m,p]\nC[p] = A[M,p]", ":2:8:", "is not a recurrence over m"),
        ("R[m+1,p] = R[m,p] + B[m,p]\nC[p] = R[p,M]", ":2:8:", "is not a recurrence over m"),
    ],
)
def test_bad_notation_points_at_line_and_column(text, where, words):
    with pytest.raises(CascadeSyntaxError) as info:
        parse_cascade(text, "user.einsum")
    msg = str(info.value)
    assert msg.startswith("user.einsum" + where), msg
    assert words in msg, msg
    assert "\n" not in msg


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="cascade file not found"):
        load_cascade(tmp_path / "nope.einsum")
    with pytest.raises(ValueError, match="unknown cascade 'nope'"):
        builtin_cascade("nope")
    path = tmp_path / "mine.einsum"
    path.write_text("S[m,p] = Q[e,p] * K[e,m]\nO[f,p] = S[m,p] * V[f,m]\n")
    assert builtin_cascade(str(path)).name == "mine"


NORMS = {
    # LayerNorm over the hidden index m of token p (width 64), with 1 / sqrt
    "layernorm": (
        "MU[p] = X[m,p]\n"
        "XC[m,p] = X[m,p] - MU[p] / 64\n"
        "VAR[p] = XC[m,p] * XC[m,p]\n"
        "Y[m,p] = XC[m,p] / sqrt(VAR[p] / 64 + 0.00001) * G[m] + BETA[m]\n",
        {"Y": {"sqrt": 1, "div": 2, "add": 2, "mul": 1}},
    ),
    "rmsnorm": (
        "SS[p] = X[m,p] * X[m,p]\nR[p] = rsqrt(SS[p] * 0.015625 + 0.00001)\nY[m,p] = X[m,p] * R[p] * G[m]\n",
        {"SS": {"mac": 1}, "R": {"rsqrt": 1, "mul": 1, "add": 1}, "Y": {"mul": 2}},
    ),
    "logsumexp": (
        "RM[m+1,p] = max(RM[m,p], X[m,p])\n"
        "RS[m+1,p] = RS[m,p] * exp(RM[m,p] - RM[m+1,p]) + exp(X[m,p] - RM[m+1,p])\n"
        "L[p] = RM[M,p] + log(RS[M,p])\n",
        {"L": {"add": 1, "log": 1}, "RS": {"exp": 2, "add": 3, "mul": 1}},
    ),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_norms_and_log_sum_exp_are_written_and_costed(name):
    text, ops = NORMS[name]
    c = parse_cascade(text, f"{name}.einsum")
    for tensor, counts in ops.items():
        assert c.einsum(tensor).op_counts() == counts


def test_norm_functions_cost_cycles_on_each_array(tmp_path):
    import dataclasses

    from simcim.npu.dataflow.arch import FLAT_ARCH, FUSEMAX_ARCH
    from simcim.npu.dataflow.model import Design, Stage, evaluate

    path = tmp_path / "rmsnorm.einsum"
    path.write_text(NORMS["rmsnorm"][0])
    wl = {"B": 1, "H": 1, "M": 4, "P": 4}
    tiny = {"rows": 2, "cols": 2, "pes_1d": 2, "clock_hz": 1.0, "glb_bytes": 1 << 20}
    for arch, rsqrt_cycles in ((FLAT_ARCH, 1), (FUSEMAX_ARCH, 6)):
        a = dataclasses.replace(arch, **tiny)
        d = Design("rms", str(path), a, stages=(Stage(two_d=("SS",)), Stage(one_d=("R",)), Stage(one_d=("Y",))))
        r = evaluate(d, wl)
        # R: 4 rows x (rsqrt + multiply + add) on 2 PEs: pipelined FLAT PEs 1 point a cycle, FuseMax PEs the sum
        per_point = 1 if a.pipelined_1d else rsqrt_cycles + 1 + 1
        y = 4 * 4 * (1 if a.pipelined_1d else 2) / 2
        assert r["busy_1d_s"] == pytest.approx(4 * per_point / 2 + y)
    # FuseMax's 2D PEs compute rsqrt with multiply-adds; FLAT's 2D PEs only multiply-accumulate
    Design("rms", str(path), FUSEMAX_ARCH, stages=(Stage(two_d=("SS", "R", "Y")),))
    with pytest.raises(ValueError, match="Einsum R needs '(add|rsqrt|mul)', which the 2D array of arch 'flat'"):
        Design("rms", str(path), FLAT_ARCH, stages=(Stage(two_d=("SS", "R", "Y")),))


def test_a_tensor_that_reads_itself_must_be_a_recurrence():
    with pytest.raises(CascadeSyntaxError) as info:
        parse_cascade("X[m,p] = Q[m,p]\nS[p] = S[p] + X[m,p]\n", "user.einsum")
    assert str(info.value).startswith("user.einsum:2:8: S reads itself but is not a recurrence")
