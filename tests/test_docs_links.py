"""Every relative link in README.md and docs/*.md resolves: the file (or folder) exists and, for `file#anchor`, the
target has a heading with that GitHub anchor. Absolute links (https://...) are not checked here (no network)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![img](target)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())  # GitHub keeps underscores
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(m[1]) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [m[1] for m in LINK.finditer(text)] + [m[1] for m in IMAGE.finditer(text)]


def test_there_are_docs_pages_linked_from_the_readme():
    readme = links(ROOT / "README.md")
    for name in ("results.md", "colab-and-gpu.md", "cli-and-scale-out.md", "reliability.md"):
        assert (ROOT / "docs" / name).exists(), name
        assert any(link.split("#")[0] == f"docs/{name}" for link in readme), f"README does not link docs/{name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, frag = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{frag} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_link_checker_catches_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n## Some heading, here\n[ok](b.md#other) [bad](missing.md) [x](#nope)\n")
    (tmp_path / "b.md").write_text("## Other\n")
    found = links(tmp_path / "a.md")
    assert found == ["b.md#other", "missing.md", "#nope"]
    assert anchors(tmp_path / "a.md") == {"title", "some-heading-here"}
    assert "other" in anchors(tmp_path / "b.md")
