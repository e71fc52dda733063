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

ROOT = Path(__file__).resolve().parents[2]
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


# ------------------------------------------------------------- no machine paths
# A learner has none of the folders of the machine the course was written on: no committed file
# (pages, code, notebook sources and outputs) may name one. Flagged: a path under the usual roots of
# a work tree, a home folder or a temp folder (a bare `/tmp` or `/root` names a system folder every
# machine has, not one of ours), a path into an installed package (`.../site-packages/`),
# and this machine's own repository and home folders. Examples with made-up roots (`/media/usb/...`)
# and web addresses are not paths of this machine.
_ROOTS = "|".join(["work", "home", "root", "tmp", "Users", "private"])
MACHINE_PATH = re.compile(
    rf"(?<![\w.~$<>-])/(?:{_ROOTS})/[^\s'\"`()<>\[\],;]+(?<![.])"  # /work/..., /home/..., /tmp/... (not bare /tmp)
    r"|(?<![\w.~$<>-])/[^\s'\"`()<>\[\],;]*/(?:site|dist)-packages\b"  # any prefix, then site- or dist-packages
    r"|[A-Za-z]:\\Users\\"  # a Windows user folder (drive letter, then Users)
)


def _machine_path_pattern(extra=()):
    folders = [f for f in (ROOT, Path.home(), *extra) if len(Path(f).parts) > 2]
    if not folders:
        return MACHINE_PATH
    own = "|".join(re.escape(str(f)) for f in folders)
    return re.compile(rf"{MACHINE_PATH.pattern}|(?<![\w.~$<>-])(?:{own})/")


def _committed_files(root):
    """The files git tracks (their working-tree text), else every file outside hidden and build folders."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {"__pycache__", "runs", "build", "dist"}
        names = [
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file()
            and not any(
                part.startswith(".") or part in skip or part.endswith(".egg-info") for part in p.relative_to(root).parts
            )
        ]
    return [root / n for n in names if (root / n).is_file()]


def _notebook_texts(nb):
    """(where, text) of every cell's source and every text output of a notebook (images left out)."""
    for i, cell in enumerate(nb.get("cells", [])):
        yield f"cell {i} source", "".join(cell.get("source", ""))
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [out.get("evalue", "")] + list(out.get("traceback", []))
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/") or k.endswith("json")]
            for text in texts:
                yield f"cell {i} output", "".join(text) if isinstance(text, list) else str(text)


def machine_paths(root, extra=(), exempt=()):
    """`file:line: path` (or `file cell N output: path`) for every machine path in the committed files
    (but those in `exempt`)."""
    import json

    pattern = _machine_path_pattern(extra)
    found = []
    for path in _committed_files(root):
        if path.resolve() in {Path(e).resolve() for e in exempt}:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        name = path.relative_to(root).as_posix()
        if path.suffix == ".ipynb":
            for where, chunk in _notebook_texts(json.loads(text)):
                found += [f"{name} {where}: {m.group(0)}" for m in pattern.finditer(chunk)]
        else:
            for n, line in enumerate(text.splitlines(), 1):
                found += [f"{name}:{n}: {m.group(0)}" for m in pattern.finditer(line)]
    return found


def test_no_committed_file_names_a_folder_of_this_machine():
    found = machine_paths(
        ROOT, exempt=[ROOT / "tests" / "course" / "test_notebooks.py"]
    )  # the cleaning test's own example
    assert not found, (
        "absolute paths of the machine the course was written on (a learner has none of them; name a source "
        "by title, a file by its path in the repository; notebook outputs: python tools/nbrun.py --clean "
        "rewrites installed-package, repository and home paths):\n" + "\n".join(found)
    )


def test_the_machine_path_check_is_exact(tmp_path):
    import json

    R = "/"  # the example paths are put together at run time, so this file names no absolute path itself

    (tmp_path / "page.md").write_text(
        f"bad: see {R}work/ana/notes/ and {R}home/ana/x.py, C:\\Users\\ana\\x\n"
        "fine: /media/usb/moe_tf_data, https://example.org/home/x, ~/.keras, <repo>/runs, <site-packages>/keras\n"
        "fine: #!/usr/bin/env bash, tests/tmp/x, a/work/b, a private /tmp and /dev/shm, pyenv under /root.\n",
        encoding="utf-8",
    )
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["print(1)\n"],
                "outputs": [
                    {
                        "output_type": "stream",
                        "name": "stdout",
                        "text": [f"(defined @ {R}opt/venv/lib/python3.11/site-packages/keras/core.py:43)\n"],
                    },
                    {
                        "output_type": "display_data",
                        "data": {"image/png": f"iVBORw0KGgo{R}tmp/x", "text/plain": [f"{R}tmp/run/a.png"]},
                    },
                ],
            },
            {"cell_type": "markdown", "source": ["Read `/media/usb/data` (an example)\n"]},
        ]
    }
    (tmp_path / "lesson.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    (tmp_path / "own.txt").write_text("written in /srv/course/runs/x.png, not /srv/course-old\n", encoding="utf-8")
    found = machine_paths(tmp_path, extra=["/srv/course"])
    assert sorted(found) == sorted(
        [
            f"page.md:1: {R}work/ana/notes/",
            f"page.md:1: {R}home/ana/x.py",
            "page.md:1: C:\\Users\\",
            f"lesson.ipynb cell 0 output: {R}opt/venv/lib/python3.11/site-packages",
            f"lesson.ipynb cell 0 output: {R}tmp/run/a.png",
            "own.txt:1: /srv/course/",
        ]
    ), found
