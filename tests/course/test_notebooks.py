"""The course notebooks: their format, their committed outputs, and a smoke run of each.

Format (every `notebooks/NN_*.ipynb`): a title and the notebook's own "Open in
Colab" badge in the first cell, learning objectives, an install cell, a call
to `nb.setup`, a recap, and numbered interview questions at the end whose
answers are in `solutions/notebooks/<same name>.md` (one `### N.` heading each; that check is
skipped in a student copy of the course, which has no `solutions/`).

Committed outputs must come from a full run (`python tools/nbrun.py`): every
code cell executed in order, no errors, no TensorFlow log noise, and the
"full run" banner of `nb.setup`.

The smoke run executes each notebook with `MOE_TF_SMOKE=1` in a fresh kernel
(small subsets, 1 epoch); notebooks that read MNIST or IMDB are skipped when
no local copy is found. Each smoke run's wall time is printed (`-s`), for
`notebooks/README.md`; it is not asserted (machines here are noisy).
"""

import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSWERS = ROOT / "solutions" / "notebooks"
IDS = [p.stem for p in NOTEBOOKS]

sys.path.insert(0, str(ROOT / "tools"))
import nbrun  # noqa: E402

from moe_tf.course.notebook import INSTALL_CELL, colab_badge  # noqa: E402


def _read(path):
    return nbformat.read(path, as_version=4)


def _markdown(nb):
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _questions(nb):
    """The numbered items of the last `## Interview questions` section."""
    for source in reversed(_markdown(nb)):
        if re.search(r"^## Interview questions", source, re.M):
            section = source.split("## Interview questions", 1)[1]
            return re.findall(r"^\d+\.\s+(.+)$", section, re.M)
    return []


def _output_text(cell):
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"])
    return "".join(parts)


def test_lessons_are_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), f"notebooks must be numbered 01, 02, ...: {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_format(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(r"# \d\d · \S", first.source), "first cell: '# NN · Title'"
    assert colab_badge(f"notebooks/{path.name}") in first.source, "first cell: this notebook's Colab badge"
    markdown = "\n".join(_markdown(nb))
    for heading in ("## Learning objectives", "## Recap", "## Interview questions"):
        assert re.search(rf"^{heading}", markdown, re.M), f"missing section {heading!r}"
    code = _code(nb)
    assert code[0].source == INSTALL_CELL, (
        "the first code cell is moe_tf.course.notebook.INSTALL_CELL (installs moe-tf in Colab)"
    )
    assert any("nb.setup(" in c.source for c in code[:3]), "one of the first code cells calls nb.setup(...)"
    last_markdown = _markdown(nb)[-1]
    assert "## Interview questions" in last_markdown, "interview questions close the notebook"


@pytest.mark.skipif(
    not ANSWERS.is_dir(),
    reason="no solutions/notebooks/ (a student copy of the course leaves the "
    "answers out): the interview answers are checked in the full course",
)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_interview_question_has_an_answer(path):
    questions = _questions(_read(path))
    assert len(questions) >= 3, "at least three interview questions"
    answers_file = ANSWERS / f"{path.stem}.md"
    assert answers_file.is_file(), f"answers go in {answers_file.relative_to(ROOT)}"
    answers = re.findall(r"^### (\d+)\.", answers_file.read_text(encoding="utf-8"), re.M)
    assert [int(a) for a in answers] == list(range(1, len(questions) + 1)), (
        f"{answers_file.name} must answer questions 1..{len(questions)} with '### N.' headings; found {answers}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_outputs_come_from_a_clean_full_run(path):
    nb = _read(path)
    code = _code(nb)
    counts = [c.execution_count for c in code if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), "every code cell executed once, in order (tools/nbrun.py)"
    text = ""
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"committed error output: {out.get('ename')}: {out.get('evalue')}"
        text += _output_text(cell)
    assert "full run" in text and "SMOKE run" not in text, "outputs must come from a full run, not a smoke run"
    noisy = [line for line in text.splitlines() if nbrun.NOISE.match(line)]
    assert not noisy, f"TensorFlow log noise in the outputs (run tools/nbrun.py --clean): {noisy[:3]}"
    assert nbrun.clean(_read(path)) == nb, "outputs not cleaned: run python tools/nbrun.py --clean " + str(path)


def test_cleaning_rewrites_this_machines_paths():
    """`nbrun.clean` turns this machine's absolute paths into portable ones (tests/course/test_docs.py fails on any left)."""
    home, repo = Path.home(), nbrun.REPO
    text = (
        f"defined @ /opt/venv/lib/python3.11/site-packages/keras/core.py:43\n"
        f"saved {repo}/notebooks/runs/x.png, cache {home}/.keras/datasets; {repo}-old and https://a.org{repo} kept\n"
    )
    assert nbrun.clean_text(text) == (
        "defined @ <site-packages>/keras/core.py:43\n"
        f"saved <repo>/notebooks/runs/x.png, cache ~/.keras/datasets; {repo}-old and https://a.org{repo} kept\n"
    )


def _data_available(source):
    from moe_tf.data._sources import cache_dir, resolve_data_dir

    needed = []
    if "load_mnist" in source:
        needed.append("mnist.npz")
    if "load_imdb" in source:
        needed.append("imdb/train.jsonl.gz")
    folders = [f for f in (resolve_data_dir(), cache_dir()) if f is not None]
    missing = [n for n in needed if not any((f / n).is_file() for f in folders)]
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_smoke_run(path):
    nb = _read(path)
    source = "\n".join(c.source for c in _code(nb))
    missing = _data_available(source)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: set MOE_TF_DATA_DIR (python -m moe_tf.data download DIR)")
    executed, stats = nbrun.execute(path, smoke=True, timeout=600)
    print(f"\n{path.name}: smoke run {stats['seconds']:.1f} s")
    outputs = "".join(_output_text(c) for c in _code(executed))
    assert "SMOKE run" in outputs, "nb.setup must report the smoke mode"
