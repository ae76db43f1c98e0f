"""The bundled models: tiny OLMoE-architecture MoE language models trained on Python's docs.

``simcim/bundled/assets`` holds the corpus split they were trained and evaluated on, the first
model (``model/``: 8 experts, top-2, with its tokenizer) and the second (``moe64/``: 64 experts,
top-8, OLMoE's routing; it reuses the first one's tokenizer), each with its training log;
``python -m simcim.bundled.train [--model bundled-64e]`` reproduces them.
"""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
MODEL_DIR = ASSETS / "model"
MOE64_DIR = ASSETS / "moe64"
CORPUS_DIR = ASSETS / "corpus"
# model name (as a config's ``model = ...``) -> checkpoint folder
BUNDLED_DIRS = {"bundled": MODEL_DIR, "bundled-64e": MOE64_DIR}
