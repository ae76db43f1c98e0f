"""The user docs: every relative link resolves, and no page talks about how the work was organized."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted({ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *ROOT.glob("*/README.md")})

# [text](target): a target without a scheme is a file of the repository, relative to the page
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# words that say how measurements were organized rather than on which hardware, when and by which command
ORGANIZATION = re.compile(r"device[ -]tool|\b(this|same|next|previous|earlier|later|one) session\b"
                          r"|\bsessions'|\b(was|were|is|not) lent\b|\blent this\b|other agents", re.IGNORECASE)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#+\s+(.*)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def broken_links(page: Path) -> list[str]:
    """The page's relative links (outside code blocks) whose file or heading does not exist."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    return broken


def organization_words(page: Path) -> list[str]:
    return [f"{i}: {line.strip()[:100]}" for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
            if ORGANIZATION.search(line)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_name_hardware_not_how_the_work_was_organized(page: Path) -> None:
    hits = organization_words(page)
    assert not hits, f"{page.relative_to(ROOT)}:\n" + "\n".join(hits)


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Measured, H100\n")
    page = tmp_path / "page.md"
    # the words are assembled so that the repo itself does not contain them
    line = "On the H100 via " + "device" + " tool, same " + "session."
    page.write_text("# Title\n\n[a](missing.md) [b](other.md#measured-h100) [c](other.md#gone) [d](#title)\n"
                    f"[e](https://example.com)\n```\n[f](in-code.md)\n```\n{line}\n")
    assert broken_links(page) == ["missing.md", "other.md#gone"]
    assert organization_words(page) == [f"8: {line}"]
