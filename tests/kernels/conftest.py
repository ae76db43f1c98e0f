"""Run the kernels under the Triton interpreter on CPU tensors where no CUDA GPU is present.

The variable must be set before any kernel module is imported (triton reads it when a kernel is
first compiled); on a GPU machine the same tests run the compiled kernels on CUDA tensors.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture
def rng() -> torch.Generator:
    """A fresh seed per test run: inputs differ between runs, the seed is printed on failure."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed={seed}")
    g = torch.Generator().manual_seed(seed)
    return g
