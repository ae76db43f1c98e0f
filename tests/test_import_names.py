"""No import name of ours shadows, or is shadowed by, a distribution in the dependency tree.

Everything imports as ``simcim.*``. The repo's top-level folders ``kernels/``, ``npu/``,
``experiments/`` and ``noise_models/`` carry no ``__init__.py``, so a process started at the
repo root (``python -m pytest``) cannot pick them up as top-level packages: Hugging Face's
``kernels``, which transformers imports, stays the one ``import kernels`` finds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("noise_models", "npu", "kernels", "experiments")

# Builds a tiny OLMoE (stacked 3-D experts) through transformers, runs it, then imports our
# kernels and reports where each package came from.
PROBE = """
import importlib.util, json, torch, transformers
cfg = transformers.OlmoeConfig(vocab_size=64, hidden_size=32, intermediate_size=16, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2)
model = transformers.OlmoeForCausalLM(cfg)
logits = model(torch.zeros(1, 5, dtype=torch.long)).logits
import simcim.kernels.quant_gemv, simcim.npu.core, simcim.experiments.cli, simcim.noise_models.presets
hf = importlib.util.find_spec("kernels")
print(json.dumps({"logits": list(logits.shape), "ours": simcim.kernels.quant_gemv.__file__,
                  "kernels": hf.origin if hf else None}))
"""


def _probe(cwd: Path) -> dict:
    import json

    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _hf_kernels_installed() -> bool:
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_the_repo_root_holds_no_top_level_package_but_simcim():
    for name in SUBPACKAGES:
        assert (ROOT / name).is_dir()
        assert not (ROOT / name / "__init__.py").exists(), f"{name}/__init__.py would make {name!r} importable"
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert packages == ["simcim"]


def test_no_installed_distribution_provides_our_import_name():
    providers = importlib.metadata.packages_distributions().get("simcim", [])
    assert set(providers) <= {"simcim"}, f"'simcim' is also provided by {providers}"


def test_a_transformers_moe_model_builds_and_our_kernels_import_from_the_root_and_elsewhere(tmp_path):
    for cwd in (ROOT, tmp_path):
        seen = _probe(cwd)
        assert seen["logits"] == [1, 5, 64]
        assert Path(seen["ours"]).resolve().parent.name == "kernels"
        if _hf_kernels_installed():
            # Hugging Face's package, not our folder, whatever the working directory
            assert not Path(seen["kernels"]).resolve().is_relative_to(ROOT), seen["kernels"]


def test_a_built_wheel_holds_every_folder_and_imports_without_the_checkout(tmp_path):
    """The wheel maps the four folders inside simcim/ (pyproject's package-dir); nothing is left out."""
    import zipfile

    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("simcim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for top in ("simcim", *SUBPACKAGES):
        for folder in (ROOT / top).rglob("*"):
            if folder.is_dir() and "__pycache__" not in folder.parts and any(f.is_file() for f in folder.iterdir()):
                rel = folder.relative_to(ROOT).as_posix()
                inside = rel if top == "simcim" else f"simcim/{rel}"
                assert any(n.startswith(inside + "/") for n in names), f"{rel}/ is not in the wheel"
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import simcim, simcim.kernels.quant_gemv, simcim.npu.core, simcim.experiments.cli\n"
             "from simcim.bundled import MODEL_DIR\n"
             "assert len(simcim.__path__) == 1, simcim.__path__\n"
             "assert (MODEL_DIR / 'model.safetensors').is_file()\n"
             "print(simcim.kernels.quant_gemv.__file__)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).is_relative_to(target)
