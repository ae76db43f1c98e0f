import pytest

from simcim.npu.dataflow.einsum import builtin_cascade, parse_cascade
from simcim.npu.dataflow.passes import analyze_passes


def test_attention_cascades_take_3_2_and_1_passes():
    three = analyze_passes(builtin_cascade("attention_3pass"))
    two = analyze_passes(builtin_cascade("attention_2pass"))
    one = analyze_passes(builtin_cascade("attention_1pass"))
    assert (three.passes, two.passes, one.passes) == (3, 2, 1)


def test_3pass_details():
    r = analyze_passes(builtin_cascade("attention_3pass"))
    assert r.einsum_pass == {"QK": 1, "GM": 1, "SN": 2, "SD": 2, "A": 3, "AV": 3}
    # recomputing QK in passes 2 and 3 means reading K three times; V only in the last pass
    assert r.passes_per_input == {"K": 3, "V": 1}
    # QK (pass 1 -> 2) and SN (pass 2 -> 3) outlive their pass; one M fiber per row at any gap;
    # spilled, each is written once and read once more: 4 accesses per score
    assert r.cross_pass == ("QK", "SN")
    assert r.live_fibers == 1 and r.spill_accesses == 4


def test_2pass_global_values_are_computed_between_passes():
    r = analyze_passes(builtin_cascade("attention_2pass"))
    assert r.einsum_pass["SPD"] == 1.5 and r.einsum_pass["SD"] == 1.5
    assert r.einsum_pass["A"] == 2
    assert r.cross_pass == ("SLN",) and r.spill_accesses == 2
    assert r.passes_per_input == {"BK": 2, "BV": 1}


def test_1pass_keeps_nothing_of_size_m():
    r = analyze_passes(builtin_cascade("attention_1pass"))
    assert r.cross_pass == () and r.live_fibers == 0 and r.spill_accesses == 0
    assert r.einsum_pass["AV"] == 1.5  # the final divide waits for the last tile
    assert r.passes_per_input == {"BK": 1, "BV": 1}
    assert "independent of M" in r.summary()


def test_unpartitioned_running_max_still_needs_two_passes():
    # without the M1 x M0 split, a max over all of m is a full reduction: the exp needs a new pass
    c = parse_cascade(
        "S[m,p] = Q[e,p] * K[e,m]\nG[p] max= S[m,p]\nN[m,p] = exp(S[m,p] - G[p])\nO[f,p] = N[m,p] * V[f,m]\n"
    )
    r = analyze_passes(c)
    assert r.passes == 2 and r.cross_pass == ("S",)


def test_linear_attention_is_one_pass():
    c = parse_cascade("KV[e,f] = K[e,m] * V[f,m]\nO[f,p] = Q[e,p] * KV[e,f]\n")
    r = analyze_passes(c)
    assert r.passes == 1 and r.passes_per_input == {"K": 1, "V": 1}


def test_rank_must_be_iterated():
    with pytest.raises(ValueError, match="no Einsum iterates index 'm'"):
        analyze_passes(parse_cascade("O[f,p] = Q[e,p] * W[e,f]\n"))


@pytest.mark.parametrize(
    "name",
    ["attention_causal_1pass", "attention_sliding_window_1pass", "attention_gqa_1pass", "linear_attention"],
)
def test_shipped_variants_are_one_pass(name):
    r = analyze_passes(builtin_cascade(name))
    assert r.passes == 1 and r.live_fibers == 0


def test_analyze_cli(tmp_path, capsys):
    from simcim.npu.dataflow.analyze import main

    main(["attention_3pass"])
    assert "passes over m: 3" in capsys.readouterr().out
    bad = tmp_path / "bad.einsum"
    bad.write_text("X[m,p] = foo(Y[m,p])\n")
    with pytest.raises(SystemExit, match="bad.einsum:1:10: unknown function 'foo'"):
        main([str(bad)])


def test_recurrences_read_only_at_their_final_element_keep_no_fiber():
    # online softmax over an unsplit rank: pass 1 runs the max and denominator recurrences, pass 2
    # reads only their final values RM[M,p], RD[M,p]: one value per row, nothing M-long is kept
    c = parse_cascade(
        "RM[m+1,p] = max(RM[m,p], X[m,p])\n"
        "RD[m+1,p] = RD[m,p] * exp(RM[m,p] - RM[m+1,p]) + exp(X[m,p] - RM[m+1,p])\n"
        "Y[m,p] = exp(X[m,p] - RM[M,p]) / RD[M,p]\n"
    )
    r = analyze_passes(c)
    assert r.passes == 2 and r.passes_per_input == {"X": 2}
    assert r.cross_pass == () and r.live_fibers == 0 and r.spill_accesses == 0
    # reading the whole running max in the later pass does keep it
    c = parse_cascade("RM[m+1,p] = max(RM[m,p], X[m,p])\nG[p] max= X[m,p]\nY[m,p] = exp(X[m,p] - G[p]) + RM[m,p]\n")
    assert analyze_passes(c).cross_pass == ("RM",)


def test_shipped_norms_take_3_2_and_1_passes():
    ln, rms, lse = (analyze_passes(builtin_cascade(n)) for n in ("layernorm", "rmsnorm", "logsumexp"))
    assert (ln.passes, rms.passes, lse.passes) == (3, 2, 1)
    # LayerNorm keeps the centred values from pass 2 to pass 3, or reads X a third time
    assert ln.cross_pass == ("XC",) and ln.passes_per_input["X"] == 3
    assert rms.cross_pass == () and rms.passes_per_input == {"X": 2, "G": 1}
    assert lse.cross_pass == () and lse.live_fibers == 0
