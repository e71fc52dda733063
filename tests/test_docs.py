"""Every relative link of the course's Markdown pages resolves: the file exists and, for
`page.md#anchor` or `lesson.ipynb#anchor`, that page has a heading with this GitHub anchor.

Pages: the README, the docs/ pages (myths, glossary, classroom kit), and the READMEs of
notebooks/, exercises/, solutions/ and bench/, plus the rendered question-bank pages. Links to the
web are not followed (no network in tests). In a student copy (no solutions/), links into
solutions/ are skipped.
"""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import question_bank as qb

PAGES = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md"), *ROOT.glob("*/question_bank.md")]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)  # not inside code blocks
    return [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]


def test_there_are_pages_with_links():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/myths.md", "docs/glossary.md", "docs/teaching.md"} <= names
    assert sum(len(_links(p)) for p in PAGES) > 100


def _broken(page, root=ROOT):
    out = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not (root / "solutions").is_dir() and (root / "solutions") in [file, *file.parents]:
            continue  # a student copy: no solutions/
        if not file.exists():
            out.append(f"{target}: no such file")
        elif anchor and file.suffix in (".md", ".ipynb") and anchor not in qb.anchors(file):
            out.append(f"{target}: no heading with anchor '{anchor}' in {file.name}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = _broken(page)
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_check_catches_broken_files_and_anchors(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "other.md").write_text("# Other\n\n## Section one\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#section-one) [self](#top) [gone](missing.md) [bad anchor](other.md#section-two)\n"
        "[web](https://example.com/x.md) and a code block:\n```\n[not a link](nowhere.md)\n```\n# Top\n"
    )
    assert _broken(page, tmp_path) == [
        "missing.md: no such file",
        "other.md#section-two: no heading with anchor 'section-two' in other.md",
    ]
