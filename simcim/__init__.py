"""simcim: hardware-noise and accelerator simulation for compressed LLMs.

One import namespace for the whole suite, so that no top-level name of ours can shadow, or be
shadowed by, a distribution in the dependency tree (Hugging Face's ``kernels`` is one):

- ``simcim`` itself: crossbar tiles, model conversion, MoE analysis and repairs (``simcim/``);
- ``simcim.noise_models``: device physics of memristive crossbars (``noise_models/``);
- ``simcim.npu``: the NPU memory-system simulator and the einsum-cascade dataflow model (``npu/``);
- ``simcim.kernels``: Triton kernels beside their PyTorch references (``kernels/``);
- ``simcim.experiments``: configs, sweeps, the results store, reports and the CLI (``experiments/``).

``simcim.load(run_dir)`` returns a run's stored trials as a pandas DataFrame.
"""

from pathlib import Path as _Path

# In a checkout the four folders sit beside simcim/ (the repo's layout) and carry no __init__.py,
# so the checkout's root, which `python -m` puts first on sys.path, holds no importable
# `kernels` or `npu` package; they are found here as simcim's subpackages. A built wheel holds
# them inside simcim/, and then there is nothing to add.
_SUBPACKAGES = ("noise_models", "npu", "kernels", "experiments")
_here = _Path(__file__).resolve().parent
if not (_here / "kernels").is_dir() and (_here.parent / "pyproject.toml").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (__path__ is set for a package)


def __getattr__(name: str):
    if name == "load":
        from simcim.experiments.store import load

        return load
    raise AttributeError(f"module 'simcim' has no attribute {name!r}")


__all__ = ["load"]
