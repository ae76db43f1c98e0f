import pytest
import torch

from simcim.kernels.fwht import fwht, fwht_reference, hadamard_matrix
from simcim.kernels.testing import poisoned, randn, rel_err


@pytest.mark.parametrize("d", [2, 16, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fwht_matches_hadamard_product(d, dtype, device, rng):
    x = randn(3, 7, d, g=rng, dtype=dtype, device=device)
    out = poisoned(x.shape, dtype, device)
    y = fwht(x, out=out)
    exact = x.double() @ hadamard_matrix(d, torch.float64, device) / d**0.5
    assert rel_err(y, exact) < (1e-6 if dtype == torch.float32 else 1e-2)
    assert rel_err(fwht_reference(x), exact) < (1e-6 if dtype == torch.float32 else 1e-2)


def test_fwht_is_an_involution(device, rng):
    x = randn(5, 128, g=rng, device=device)
    assert rel_err(fwht(fwht(x)), x) < 1e-6


def test_fwht_rejects_bad_sizes(device):
    with pytest.raises(ValueError, match="power of two"):
        fwht(torch.zeros(4, 96, device=device))
    with pytest.raises(ValueError, match="dtype"):
        fwht(torch.zeros(4, 64, dtype=torch.int32, device=device))
