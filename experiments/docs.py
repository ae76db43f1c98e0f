"""The parameter tables of the docs pages, generated from each kind's ``Params`` help text.

Each kind's page (``KIND_PAGES``) holds its table between ``<!-- params:KIND -->`` and
``<!-- /params:KIND -->``; ``python -m simcim.experiments.docs`` rewrites those blocks, and a
test checks that every page matches, so the docs and ``simcim info --kind KIND`` cannot drift.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path

from simcim.experiments.config import _type_name
from simcim.experiments.kinds import KINDS, kind_module

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"

KIND_PAGES: dict[str, str] = {
    "noise_injection": "cim.md",
    "moe_noise": "moe.md",
    "npu_sim": "npu.md",
    "fusemax": "dataflow.md",
    "sim_vs_measured": "sim-vs-measured.md",
    "gpu_model_blind": "sim-vs-measured.md",
    "selftest": "sweeps.md",
}


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


def _bounds(meta: dict) -> str:
    lo = f"[{meta['ge']}" if meta.get("ge") is not None else (f"({meta['gt']}" if meta.get("gt") is not None else "")
    hi = f"{meta['le']}]" if meta.get("le") is not None else (f"{meta['lt']})" if meta.get("lt") is not None else "")
    if not lo and not hi:
        return ""
    return f"{lo or '(-inf'}, {hi or 'inf)'}"


def params_table(kind: str) -> str:
    """The Markdown table of a kind's parameters: name, type, range, default and help (meaning, unit)."""
    params = kind_module(kind).Params
    hints = typing.get_type_hints(params)
    rows = ["| parameter | type | range | default | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(params):
        help_text = f.metadata.get("help", "").replace("|", "\\|").replace("\n", " ")
        kind_name = _type_name(hints[f.name]).replace("|", "/")
        rows.append(f"| `{f.name}` | {kind_name} | {_bounds(f.metadata)} | `{_default(f)}` | {help_text} |")
    return "\n".join(rows)


def _block(kind: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- params:{re.escape(kind)} -->\n)(.*?)(<!-- /params:{re.escape(kind)} -->)", re.S)


def check_page(kind: str) -> str | None:
    """None when the kind's page holds its current table, else what is wrong, in one line."""
    page = DOCS_DIR / KIND_PAGES[kind]
    if not page.is_file():
        return f"{page}: missing (the page of kind {kind!r})"
    m = _block(kind).search(page.read_text(encoding="utf-8"))
    if m is None:
        return f"{page}: no <!-- params:{kind} --> block"
    if m.group(2).strip() != params_table(kind):
        return f"{page}: the parameter table of kind {kind!r} is out of date (python -m simcim.experiments.docs)"
    return None


def write_pages() -> list[Path]:
    """Rewrite every kind's parameter block in place; return the pages changed."""
    changed = []
    for kind in KINDS:
        page = DOCS_DIR / KIND_PAGES[kind]
        text = page.read_text(encoding="utf-8")
        pattern = _block(kind)
        if pattern.search(text) is None:
            raise ValueError(f"{page}: no <!-- params:{kind} --> ... <!-- /params:{kind} --> block to fill")
        table = params_table(kind)
        new = pattern.sub(lambda m, table=table: m.group(1) + table + "\n" + m.group(3), text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


def main() -> int:
    try:
        changed = write_pages()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for page in changed:
        print(f"updated {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
