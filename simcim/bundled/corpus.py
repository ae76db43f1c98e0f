"""The bundled English corpus: text that ships with every CPython, so nothing is downloaded.

Evaluation text is Python's documentation topics (``pydoc_data.topics``): its paragraphs are
split deterministically, every 10th held out for evaluation and every 20th (offset) kept as a
validation split for early stopping. Training text is the rest of those topics plus the prose
paragraphs of the standard library's docstrings (read with ``ast``, nothing imported; code
examples and short or symbol-heavy paragraphs dropped). The split files are committed, so the
held-out text does not change with the Python version.
"""

from __future__ import annotations

from pathlib import Path

from simcim.bundled import CORPUS_DIR

SPLITS = ("train", "valid", "heldout")


def build_corpus(out_dir: Path = CORPUS_DIR) -> dict[str, int]:
    """Write train/valid/heldout text files from pydoc_data; return their sizes in characters."""
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for name in sorted(topics):
        for para in topics[name].split("\n\n"):
            para = para.strip("\n")
            if para.strip():
                paragraphs.append(para)
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, para in enumerate(paragraphs):
        if i % 10 == 9:
            parts["heldout"].append(para)
        elif i % 10 == 4 and (i // 10) % 2 == 0:
            parts["valid"].append(para)
        else:
            parts["train"].append(para)
    parts["train"].extend(stdlib_docstring_paragraphs())
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, paras in parts.items():
        text = "\n\n".join(paras) + "\n"
        (out_dir / f"{split}.txt").write_text(text, encoding="utf-8")
        sizes[split] = len(text)
    return sizes


def stdlib_docstring_paragraphs() -> list[str]:
    """Prose paragraphs of the standard library's docstrings, in a fixed file order."""
    import ast
    import os
    import sysconfig

    skip = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__", "ensurepip", "turtledemo"}
    root = sysconfig.get_paths()["stdlib"]
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for fname in sorted(filenames):
            if not fname.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(dirpath, fname).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    for para in (doc or "").split("\n\n"):
                        letters = sum(c.isalpha() or c == " " for c in para)
                        if len(para) > 80 and letters / len(para) > 0.85 and ">>>" not in para:
                            out.append(para)
    return out


def read_split(split: str, corpus_dir: Path = CORPUS_DIR) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r} (known: {', '.join(SPLITS)})")
    path = corpus_dir / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"bundled corpus file missing: {path} (run python -m simcim.bundled.train "
                                "--corpus-only)")
    return path.read_text(encoding="utf-8")
