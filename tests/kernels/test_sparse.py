import pytest
import torch

from simcim.kernels.sparse import embedding_bag, embedding_bag_reference, random_csr, spmm, spmm_reference
from simcim.kernels.testing import poisoned, randn, rel_err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,k,n,density", [(37, 53, 70, 0.2), (9, 300, 5, 0.5)])
def test_spmm_matches_dense_product(m, k, n, density, dtype, device, rng):
    a = random_csr(m, k, density, rng, dtype, device)
    b = randn(k, n, g=rng, dtype=dtype, device=device)
    out = poisoned((m, n), dtype, device)
    c = spmm(a, b, out=out)
    exact = a.to_dense().double() @ b.double()
    assert rel_err(c, exact) < (1e-5 if dtype == torch.float32 else 1e-2)
    assert rel_err(spmm_reference(a, b), exact) < (1e-5 if dtype == torch.float32 else 1e-2)


def test_spmm_empty_rows_are_zero(device, rng):
    dense = randn(6, 40, g=rng, device=device)
    dense[[1, 4]] = 0.0
    c = spmm(dense.to_sparse_csr(), randn(40, 33, g=rng, device=device), out=poisoned((6, 33), torch.float32, device))
    assert torch.equal(c[1], torch.zeros_like(c[1])) and not torch.isnan(c).any()


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_matches_torch(mode, device, rng):
    table = randn(101, 48, g=rng, device=device)
    indices = torch.randint(0, 101, (57,), generator=rng).to(device)
    offsets = torch.tensor([0, 3, 3, 20, 41, 56], device=device)  # an empty bag and a bag of one
    weights = randn(57, g=rng, device=device) if mode == "sum" else None
    out = poisoned((6, 48), torch.float32, device)
    got = embedding_bag(table, indices, offsets, mode, weights, out=out)
    ref = torch.nn.functional.embedding_bag(indices, table, offsets, mode=mode, per_sample_weights=weights)
    assert rel_err(got, ref) < 1e-5
    assert rel_err(embedding_bag_reference(table, indices, offsets, mode, weights), ref) < 1e-5


def test_embedding_bag_unvalidated_input_stays_in_bounds(device, rng):
    # validate=False never syncs with the host; bad indices and offsets then add nothing instead of raising
    table = randn(20, 16, g=rng, device=device)
    indices = torch.tensor([3, -1, 7, 20, 5, 999, 2], device=device)
    offsets = torch.tensor([0, 2, 5, 9, 4], device=device)  # a bag past the end of indices, then one going back
    got = embedding_bag(table, indices, offsets, validate=False)
    expect = torch.stack([table[3], table[7] + table[5], table[2], torch.zeros(16, device=device),
                          table[5] + table[2]])
    assert rel_err(got, expect) < 1e-6
    assert rel_err(embedding_bag_reference(table, indices, offsets), expect) < 1e-6


def test_bad_inputs(device, rng):
    table = randn(10, 8, g=rng, device=device)
    idx = torch.tensor([1, 2, 3], device=device)
    with pytest.raises(ValueError, match="indices must lie"):
        embedding_bag(table, torch.tensor([1, 10], device=device), torch.tensor([0], device=device))
    with pytest.raises(ValueError, match="offsets"):
        embedding_bag(table, idx, torch.tensor([1], device=device))
    with pytest.raises(ValueError, match="mode"):
        embedding_bag(table, idx, torch.tensor([0], device=device), mode="max")
    with pytest.raises(ValueError, match="CSR"):
        spmm(table, table.t())
    with pytest.raises(ValueError, match="do not fit"):
        spmm(table.to_sparse_csr(), table)
    with pytest.raises(ValueError, match="density"):
        random_csr(3, 3, 0.0, rng)
