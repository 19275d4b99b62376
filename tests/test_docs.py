"""The README and docs/ pages: every relative link points to a file that exists, and every #anchor
to a heading of that file (GitHub-style anchors). No network, no mkdocs needed (`make docs` builds
the pages with `mkdocs build --strict`, which checks the pages' links again)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lower case, punctuation dropped,
    spaces to hyphens (python-markdown's toc, used by mkdocs, gives the same for these headings)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("code", line)
        links += [t for t in LINK.findall(line) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    return links


def broken(path: Path) -> list[str]:
    bad = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return bad


def test_slug_is_githubs():
    assert slug("Exit codes and cron") == "exit-codes-and-cron"
    assert slug("`lstmcast evaluate`") == "lstmcast-evaluate"
    assert slug("Plots: `lstmcast plot` and `lstmcast plot-history`") == "plots-lstmcast-plot-and-lstmcast-plot-history"
    assert slug("Other data sets (is the recipe tuned to one benchmark?)") == (
        "other-data-sets-is-the-recipe-tuned-to-one-benchmark"
    )


def test_readme_links_point_to_files_and_headings():
    readme = ROOT / "README.md"
    assert relative_links(readme), "the README links to the docs pages"
    assert broken(readme) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_page_links_point_to_files_and_headings(page):
    assert broken(page) == []


def test_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    assert [p.name for p in PAGES if p.resolve() not in linked] == []


def test_mkdocs_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True and config["docs_dir"] == "docs"
    nav = [next(iter(entry.values())) for entry in config["nav"]]
    assert sorted(nav) == sorted(p.name for p in PAGES)


def test_readme_stays_short():
    # The first minute, the CSV contract, the commands in brief, exit codes and cron; the rest is in docs/.
    assert (ROOT / "README.md").stat().st_size < 15_000
