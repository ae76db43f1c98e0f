import pytest
import torch

from simcim.kernels.attention import FusedAttention, attention_reference, fused_attention, unfused_attention
from simcim.kernels.testing import poisoned, randn, rel_err

# (batch, heads, kv heads, queries, keys, head dim): odd lengths exercise every mask
SHAPES = [(1, 4, 2, 37, 53, 64), (2, 2, 1, 29, 29, 64), (1, 2, 2, 5, 40, 128)]


def _tol(dtype: torch.dtype) -> float:
    return 1e-2 if dtype == torch.bfloat16 else 2e-3


CASES = [
    (fused_attention, SHAPES[0], False, torch.float16),
    (fused_attention, SHAPES[0], True, torch.bfloat16),
    (fused_attention, SHAPES[1], True, torch.float16),
    (fused_attention, SHAPES[1], False, torch.bfloat16),
    (fused_attention, SHAPES[2], True, torch.bfloat16),
    (fused_attention, SHAPES[2], False, torch.float16),
    (unfused_attention, SHAPES[0], True, torch.float16),
    (unfused_attention, SHAPES[1], False, torch.bfloat16),
    (unfused_attention, SHAPES[2], True, torch.bfloat16),
]


@pytest.mark.parametrize("impl,shape,causal,dtype", CASES)
def test_attention_matches_reference(impl, shape, causal, dtype, device, rng):
    b, h, hkv, m, n, d = shape
    q = randn(b, h, m, d, g=rng, dtype=dtype, device=device)
    k = randn(b, hkv, n, d, g=rng, dtype=dtype, device=device)
    v = randn(b, hkv, n, d, g=rng, dtype=dtype, device=device)
    out = poisoned(q.shape, dtype, device)
    got = impl(q, k, v, causal=causal, out=out)
    assert got.data_ptr() == out.data_ptr()
    # reference from the same rounded inputs, in float64
    ref = attention_reference(q.double().to(dtype), k, v, causal)
    s = (q.double() @ k.double().repeat_interleave(h // hkv, 1).transpose(-1, -2)) / d**0.5
    if causal:
        allowed = torch.arange(n, device=device)[None, :] <= torch.arange(m, device=device)[:, None] + (n - m)
        s = s.masked_fill(~allowed, float("-inf"))
    exact = torch.softmax(s, -1) @ v.double().repeat_interleave(h // hkv, 1)
    assert rel_err(got, exact) < _tol(dtype)
    assert rel_err(ref, exact) < _tol(dtype)


def test_causal_decode_step_sees_whole_cache(device, rng):
    # bottom-right alignment: one query against 23 keys attends to all of them
    q = randn(1, 2, 1, 64, g=rng, dtype=torch.float16, device=device)
    k = randn(1, 2, 23, 64, g=rng, dtype=torch.float16, device=device)
    v = randn(1, 2, 23, 64, g=rng, dtype=torch.float16, device=device)
    assert rel_err(fused_attention(q, k, v, causal=True), fused_attention(q, k, v, causal=False)) < 1e-3


def test_module_and_bad_inputs(device, rng):
    q = randn(1, 3, 8, 64, g=rng, dtype=torch.float16, device=device)
    k = randn(1, 2, 8, 64, g=rng, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        fused_attention(q, k, k)
    with pytest.raises(ValueError, match="head dim"):
        fused_attention(q[..., :48], q[..., :48], q[..., :48])
    with pytest.raises(ValueError, match="fp16 or bf16"):
        fused_attention(q.float(), q.float(), q.float())
    with pytest.raises(ValueError, match="causal attention needs"):
        fused_attention(q, q[:, :, :4], q[:, :, :4], causal=True)
    ok = FusedAttention(causal=True)(q, q, q)
    assert rel_err(ok, attention_reference(q, q, q, True)) < 2e-3
