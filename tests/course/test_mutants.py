"""Mutation check of the exercise tests: wrong solutions must lose points.

For every exercise, ``tests/exercises/mutants/exNN.py`` lists a few wrong solutions as
``MUTANTS = [(name, old, new), ...]``: ``old`` is a snippet that occurs exactly once in
``solutions/exNN_*.py`` and ``new`` replaces it with one classic mistake that contradicts the stub's
docstring (top-k gates not renormalised, an inclusive cumsum, a float ceil, ties the wrong way, the
input modified in place, a documented argument ignored...). A test suite that gives such a mutant full
marks has a hole; this module proves there is none for the mistakes listed, and a new exercise gets
the same proof by adding its mutants file.

How the mutants are graded: by ``moe_tf.course.grade.grade_student``, the function ``moe-grade`` grades one
student with (a sandboxed ``python -m pytest`` subprocess over the exercise tests, per-test time limits,
restarts after a crash). All the mutants are graded in two such runs side by side (the exercises split
in two halves, as ``moe-grade --jobs 2`` grades two students), so TensorFlow is imported twice, not
once per mutant. The tests folder handed to each run holds one sub-folder per mutant: the mutated
module, a copy of the exercise's test module and a small ``conftest.py`` that points the harness's
``ex`` fixture at that folder (``MOE_TF_EXERCISES_DIR``) and skips the mutant's remaining tests once
one has failed (one failure is enough to lose points). A control folder per exercise grades the
unmutated solution in the same layout and must pass, so a broken layout cannot make every mutant look
caught; it leaves out the tests that ask for a longer time limit (``timeout_s``, e.g. training on
MNIST), which ``tests/course/test_grade.py`` already proves the solutions pass.

Skipped in a student copy of the course (no ``solutions/``).
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = REPO / "solutions"
EXERCISE_TESTS = REPO / "tests" / "exercises"
MUTANTS = EXERCISE_TESTS / "mutants"

pytestmark = [
    pytest.mark.skipif(
        not SOLUTIONS.is_dir() or not MUTANTS.is_dir(),
        reason="no solutions/ (or no tests/exercises/mutants/): a student copy of the course has no reference "
        "solutions to mutate",
    ),
    pytest.mark.xdist_group("mutants"),  # one worker under pytest-xdist: the module fixture grades every mutant
]

# The conftest of one mutant's folder. The harness's ``ex`` fixture reads MOE_TF_EXERCISES_DIR at every
# test, and an autouse fixture runs before it; pytest calls a sub-folder conftest's runtest hooks only for
# the tests of that folder.
MUTANT_CONFTEST = '''\
"""One mutant (or control) of the mutation check (tests/course/test_mutants.py): grade the module in this folder."""

from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
CONTROL = {control}
FAILED = []


@pytest.fixture(autouse=True)
def _grade_this_folder(request, monkeypatch):
    if FAILED:
        pytest.skip(f"mutant already caught by {{FAILED[0]}}")
    points = request.node.get_closest_marker("points")
    slow = request.node.get_closest_marker("timeout_s") is not None or (
        points is not None and "timeout_s" in points.kwargs)
    if CONTROL and slow:
        pytest.skip("slow test (it asks for a longer time limit): tests/course/test_grade.py proves the solutions pass it")
    monkeypatch.setenv("MOE_TF_EXERCISES_DIR", HERE)


def pytest_runtest_logreport(report):
    if report.failed and not CONTROL:
        FAILED.append(report.nodeid.split("::", 1)[-1])
'''


def _prefix(path: Path) -> str:
    return path.name.split("_", 1)[0]


def exercises() -> dict[str, Path]:
    """``{"ex01": solutions/ex01_dense_mixture.py, ...}``."""
    if not SOLUTIONS.is_dir():
        return {}
    return {_prefix(p): p for p in sorted(SOLUTIONS.glob("ex[0-9][0-9]_*.py"))}


def load_mutants(prefix: str) -> list:
    """The ``MUTANTS`` list of ``tests/exercises/mutants/<prefix>.py`` (not checked here)."""
    return runpy.run_path(str(MUTANTS / f"{prefix}.py")).get("MUTANTS")


def _mutant_files() -> list[str]:
    return sorted(p.stem for p in MUTANTS.glob("ex[0-9][0-9].py")) if MUTANTS.is_dir() else []


def _all_mutants() -> list[tuple[str, str, str, str]]:
    """Every ``(prefix, name, old, new)``; a file that does not load is left to test_mutants_are_well_formed."""
    out = []
    known = exercises()
    for prefix in _mutant_files():
        if prefix not in known:
            continue  # test_mutants_are_well_formed says so
        try:
            entries = load_mutants(prefix)
            for name, old, new in entries:
                out.append((prefix, str(name), old, new))
        except Exception:  # noqa: BLE001 - reported by test_mutants_are_well_formed
            continue
    return out


def _slug(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_") or "mutant"


# ----------------------------------------------------------------------------- the files themselves


def test_every_exercise_has_mutants():
    missing = [
        f"tests/exercises/mutants/{prefix}.py" for prefix in exercises() if not (MUTANTS / f"{prefix}.py").is_file()
    ]
    assert not missing, (
        "every exercise needs a few wrong solutions its tests must fail (MUTANTS = [(name, old, new), ...], see this "
        "module's docstring); missing: " + ", ".join(missing)
    )


@pytest.mark.parametrize("prefix", _mutant_files())
def test_mutants_are_well_formed(prefix):
    solution = exercises().get(prefix)
    assert solution is not None, f"tests/exercises/mutants/{prefix}.py has no solutions/{prefix}_*.py to mutate"
    entries = load_mutants(prefix)
    assert isinstance(entries, list) and 3 <= len(entries) <= 6, (
        f"mutants/{prefix}.py must define MUTANTS, a list of 3 to 6 (name, old, new) tuples; got {entries!r:.200}"
    )
    source = solution.read_text(encoding="utf-8")
    names = []
    for entry in entries:
        assert isinstance(entry, tuple) and len(entry) == 3 and all(isinstance(s, str) for s in entry), (
            f"mutants/{prefix}.py: each mutant is a tuple of three strings (name, old, new); got {entry!r:.200}"
        )
        name, old, new = entry
        names.append(_slug(name))
        count = source.count(old)
        assert count == 1, (
            f"mutant {prefix}::{name}: its `old` snippet must occur exactly once in {solution.name}, found {count} "
            f"times (the solution changed? update the mutant):\n{old}"
        )
        assert new != old, f"mutant {prefix}::{name} changes nothing"
        try:
            ast.parse(source.replace(old, new))
        except SyntaxError as err:
            pytest.fail(
                f"mutant {prefix}::{name} is not valid Python ({err}): a mutant must be a wrong solution, "
                "not a syntax error",
                pytrace=False,
            )
    assert len(set(names)) == len(names), f"mutants/{prefix}.py: mutant names must be distinct; got {names}"


# ----------------------------------------------------------------------------- grading them


def _test_module(prefix: str) -> Path:
    found = sorted(EXERCISE_TESTS.glob(f"test_{prefix}_*.py"))
    assert len(found) == 1, f"expected one tests/exercises/test_{prefix}_*.py; found {[p.name for p in found]}"
    return found[0]


def _lay_out(folder: Path, prefix: str, source: str, control: bool) -> None:
    solution, test_module = exercises()[prefix], _test_module(prefix)
    folder.mkdir(parents=True)
    (folder / solution.name).write_text(source, encoding="utf-8")
    # A unique file name per folder: pytest imports test modules by their base name.
    shutil.copyfile(test_module, folder / f"{test_module.stem}__{folder.name}.py")
    (folder / "conftest.py").write_text(MUTANT_CONFTEST.format(control=control), encoding="utf-8")


def _course(root: Path, prefixes: list[str], mutants: list, folders: dict) -> Path:
    """Lay out, under ``root``, a tests folder with a control and one folder per mutant of ``prefixes``."""
    tests_dir = root / "tests" / "exercises"
    tests_dir.mkdir(parents=True)
    # What the grader copies next to the tests: the course's tests/conftest.py and helpers, and the harness.
    from moe_tf.course.grade import course_test_helpers

    for entry in course_test_helpers(REPO / "tests"):
        shutil.copyfile(entry, root / "tests" / entry.name)
    shutil.copyfile(EXERCISE_TESTS / "conftest.py", tests_dir / "conftest.py")
    for prefix in prefixes:
        source = exercises()[prefix].read_text(encoding="utf-8")
        _lay_out(tests_dir / f"{prefix}__control", prefix, source, control=True)
        for _, name, old, new in (m for m in mutants if m[0] == prefix):
            if source.count(old) != 1:
                continue  # test_mutants_are_well_formed says why
            folder = f"{prefix}__{_slug(name)}"
            while (tests_dir / folder).exists():  # two names with the same slug: well-formedness fails too
                folder += "_"
            folders[(prefix, name)] = folder
            _lay_out(tests_dir / folder, prefix, source.replace(old, new), control=False)
    return tests_dir


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every mutant and every control; ``{folder: {test id: outcome}}``.

    The exercises are split into two groups of about the same number of folders, each graded as one
    "student" (one pytest subprocess, TensorFlow imported once in each); the two run side by side on
    a machine with two cores or more, as ``moe-grade --jobs 2`` would.
    """
    from moe_tf.course import grade

    mutants = _all_mutants()
    if not mutants:
        pytest.skip("no mutants")
    prefixes = sorted({m[0] for m in mutants})
    jobs = 2 if (os.cpu_count() or 1) >= 2 and len(prefixes) >= 2 else 1
    groups: list[list[str]] = [[] for _ in range(jobs)]
    sizes = [0] * jobs
    for prefix in sorted(prefixes, key=lambda p: -sum(m[0] == p for m in mutants)):
        i = sizes.index(min(sizes))
        groups[i].append(prefix)
        sizes[i] += 1 + sum(m[0] == prefix for m in mutants)
    root = tmp_path_factory.mktemp("mutants")
    folders: dict = {}
    tests_dirs = [_course(root / f"group{i}", sorted(g), mutants, folders) for i, g in enumerate(groups)]

    def grade_group(tests_dir: Path):
        opts = grade.Options(
            tests_dir=tests_dir,
            hidden_dir=None,
            exercises=None,
            timeout=10.0,
            student_timeout=600.0,
            max_output=1_000_000,
            max_restarts=5,
            deny_read=[],
        )
        catalogue = grade.Catalogue()
        return grade.grade_student("mutants", None, opts, catalogue), catalogue

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        graded_groups = list(pool.map(grade_group, tests_dirs))
    elapsed = time.monotonic() - t0
    # Reported, not asserted (timings here are noisy): what keeps the check cheap is 3 to 6 mutants
    # per exercise, each caught by a fast test (test_mutants_are_well_formed checks the count).
    print(f"\nmutation check: {len(folders)} mutants graded in {elapsed:.1f} s ({jobs} grader process(es))")
    by_folder: dict[str, dict[str, grade.Outcome]] = {}
    notes = []
    for result, catalogue in graded_groups:
        notes += result.notes
        for test in catalogue.tests.values():
            parts = test.id.split("::")[0].split("/")
            folder = parts[-2] if len(parts) >= 2 else "?"
            outcome = result.results.get(test.id, grade.Outcome("not run", "not run"))
            by_folder.setdefault(folder, {})[test.id] = outcome
    return {"by_folder": by_folder, "folders": folders, "notes": notes, "elapsed": elapsed, "jobs": jobs}


def _summary(outcomes: dict) -> str:
    lines = []
    for tid, o in outcomes.items():
        msg = " ".join((o.msg or "").split())[:300]
        lines.append(f"  {o.outcome.upper():7} {tid.split('::', 1)[-1]}" + (f": {msg}" if msg else ""))
    return "\n".join(lines)


@pytest.mark.parametrize("prefix", sorted({m[0] for m in _all_mutants()}))
def test_the_unmutated_solution_passes_in_the_same_layout(graded, prefix):
    outcomes = graded["by_folder"].get(f"{prefix}__control")
    notes = "; ".join(graded["notes"])
    assert outcomes, f"the control of {prefix} collected no tests ({notes or 'no note'}): the layout is broken"
    bad = {tid: o for tid, o in outcomes.items() if o.outcome not in ("passed", "skipped")}
    assert not bad, (
        f"the unmutated solutions/{prefix}_*.py fails tests in the mutation layout, so the mutants' "
        f"failures prove nothing:\n{_summary(bad)}"
    )
    assert any(o.outcome == "passed" for o in outcomes.values()), f"the control of {prefix} passed no test"


@pytest.mark.parametrize(
    "prefix, name", [(m[0], m[1]) for m in _all_mutants()], ids=[f"{m[0]}-{_slug(m[1])}" for m in _all_mutants()]
)
def test_the_tests_catch_the_mutant(graded, prefix, name):
    folder = graded["folders"].get((prefix, name))
    assert folder is not None, f"mutant {prefix}::{name} was not graded (see test_mutants_are_well_formed)"
    outcomes = graded["by_folder"].get(folder)
    assert outcomes, (
        f"mutant {prefix}::{name}: no test was collected for it ({'; '.join(graded['notes']) or 'no note'})"
    )
    lost = [tid for tid, o in outcomes.items() if o.outcome not in ("passed", "skipped")]
    if lost:  # shown with ``pytest -s``: which test caught the mutant, and why
        why = " ".join((outcomes[lost[0]].msg or "").split())[:160]
        print(f"\n{prefix}::{name} caught by {lost[0].split('::', 1)[-1]}: {why}")
    assert lost, (
        f"mutant {prefix}::{name} (mutants/{prefix}.py) scored full marks on test_{prefix}_*.py: the tests accept "
        f"this wrong solution. Add a test for the docstring's promise it breaks.\n{_summary(outcomes)}"
    )
