"""The bundled model: a tiny OLMoE-architecture MoE language model trained on Python's docs.

``simcim/bundled/assets`` holds its config, safetensors weights, tokenizer and the text
split it was trained and evaluated on; ``python -m simcim.bundled.train`` reproduces it.
"""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
MODEL_DIR = ASSETS / "model"
CORPUS_DIR = ASSETS / "corpus"
