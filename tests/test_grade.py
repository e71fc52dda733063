"""``moe-grade``: a synthetic mini-course with a fixture class of broken submissions, then the real course.

The synthetic part builds, in ``tmp_path``, three tiny exercises (stubs, solutions and tests that use the
course's real ``tests/exercises/conftest.py`` harness) and grades them in-process through
``moe_tf.grade.main`` (each student still runs in its own pytest subprocess, which imports no
TensorFlow here, so it is quick).

The ``real_course`` tests are the acceptance tests of the graded exercises: ``moe-grade --solutions``
scores 100% on every exercise, the untouched stubs score 0, and a small class built from the
solutions with one module broken per student is graded exactly. Run them alone with
``pytest tests/test_grade.py -k real_course``. The two that need ``solutions/`` are skipped in a student copy
of the course (``tools/student_version.py``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moe_tf import grade

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "tests" / "exercises" / "conftest.py"

# A student copy of the course (tools/student_version.py) has no solutions/.
needs_solutions = pytest.mark.skipif(
    not (REPO / "solutions").is_dir(),
    reason="no solutions/ folder: a student copy of the course leaves the reference solutions out")

# ----------------------------------------------------------------------------- the mini-course

STUBS = {
    "ex01_add": '''
        def add(a, b):
            """Return a + b."""
            raise NotImplementedError("ex01: write add")
    ''',
    "ex02_mul": '''
        def mul(a, b):
            """Return a * b."""
            raise NotImplementedError("ex02: write mul")
    ''',
    "ex03_greet": '''
        def greet(name):
            """Return 'hello, <name>'."""
            raise NotImplementedError("ex03: write greet")
    ''',
}

SOLUTIONS = {
    "ex01_add": "def add(a, b):\n    return a + b\n",
    "ex02_mul": "def mul(a, b):\n    return a * b\n",
    "ex03_greet": "def greet(name):\n    return 'hello, ' + name\n",
}

TESTS = {
    "test_ex01_add": '''
        import pytest

        EXERCISE = "ex01_add"

        @pytest.mark.points(2)
        def test_add_ints(ex):
            assert ex.add(2, 3) == 5

        @pytest.mark.points(1)
        def test_add_floats(ex):
            assert ex.add(0.5, 0.25) == 0.75
    ''',
    "test_ex02_mul": '''
        import pytest

        EXERCISE = "ex02_mul"

        @pytest.mark.points(2)
        def test_mul_ints(ex):
            assert ex.mul(4, 5) == 20

        @pytest.mark.points(1)
        @pytest.mark.timeout_s(0.5)
        def test_mul_zero(ex):
            assert ex.mul(7, 0) == 0
    ''',
    "test_ex03_greet": '''
        import pytest

        EXERCISE = "ex03_greet"

        @pytest.mark.points(4)
        def test_greet(ex):
            assert ex.greet("moe") == "hello, moe"

        @pytest.mark.points(5)
        @pytest.mark.timeout_s(0.5)
        def test_greet_needs_data(ex):
            pytest.skip("the data for this test is not on this machine")  # not counted, for anyone
    ''',
}
MAX = {"ex01_add": 3, "ex02_mul": 3, "ex03_greet": 4}
TOTAL = 10

HIDDEN = {
    "test_ex01_extra": '''
        import pytest

        EXERCISE = "ex01_add"

        # SECRET_SOURCE_MARKER: the instructor's edge cases
        @pytest.mark.points(2)
        def test_add_negative(ex):
            assert ex.add(-2, -3) == -5, "SECRET_ASSERT_TEXT negative numbers"
    ''',
}


def _write(folder: Path, modules: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("course")
    tests = _write(root / "tests" / "exercises", TESTS)
    shutil.copyfile(HARNESS, tests / "conftest.py")
    _write(root / "exercises", STUBS)
    _write(root / "solutions", SOLUTIONS)
    _write(root / "hidden", HIDDEN)
    return root


def run_grade(capsys, *args) -> tuple[int, str, str]:
    code = grade.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


TABLE_ROW = re.compile(r"^(ex\d\d_\w+)\s+([\d.]+) / ([\d.]+)\s+(\d+) passed, (\d+) failed(?:, \d+ skipped)?$", re.MULTILINE)
TOTAL_ROW = re.compile(r"^total\s+([\d.]+) / ([\d.]+)\s+(\d+) passed, (\d+) failed(?:, \d+ skipped)?$", re.MULTILINE)


def parse_table(out: str) -> tuple[dict[str, tuple[float, float, int, int]], tuple[float, float]]:
    rows = {m[1]: (float(m[2]), float(m[3]), int(m[4]), int(m[5])) for m in TABLE_ROW.finditer(out)}
    total = TOTAL_ROW.search(out)
    assert total, out
    return rows, (float(total[1]), float(total[2]))


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["student"]: row for row in csv.DictReader(fh)}


# ----------------------------------------------------------------------------- learner mode


def test_solutions_score_full_marks_with_a_table(course, capsys):
    code, out, _ = run_grade(capsys, "--tests-dir", course / "tests" / "exercises", "--exercises", course / "solutions")
    assert code == 0
    rows, total = parse_table(out)
    assert rows == {"ex01_add": (3, 3, 2, 0), "ex02_mul": (3, 3, 2, 0), "ex03_greet": (4, 4, 1, 0)}
    assert total == (TOTAL, TOTAL)
    # The test that skips itself (its data is missing) is shown but not counted.
    assert re.search(r"^ex03_greet\s+4 / 4\s+1 passed, 0 failed, 1 skipped$", out, re.MULTILINE), out


def test_stubs_score_zero(course, capsys):
    code, out, _ = run_grade(capsys, "--tests-dir", course / "tests" / "exercises", "--exercises", course / "exercises")
    assert code == 0
    rows, total = parse_table(out)
    assert rows == {"ex01_add": (0, 3, 0, 2), "ex02_mul": (0, 3, 0, 2), "ex03_greet": (0, 4, 0, 1)}
    assert total == (0, TOTAL)


def test_exercise_prefix_grades_a_subset_and_lists_failures(course, capsys):
    code, out, _ = run_grade(capsys, "--tests-dir", course / "tests" / "exercises", "--exercises", course / "exercises",
                             "--exercise", "ex02", "3")
    assert code == 0
    rows, total = parse_table(out)
    assert set(rows) == {"ex02_mul", "ex03_greet"}
    assert total == (0, 7)
    # With --exercise the learner sees why each test failed.
    assert "test_ex02_mul.py::test_mul_ints" in out and "NotImplementedError: ex02: write mul" in out


# ----------------------------------------------------------------------------- a class of broken submissions


def _student(root: Path, name: str, broken: dict[str, str], nested: bool = False) -> None:
    folder = root / name / "exercises" if nested else root / name
    modules = dict(SOLUTIONS)
    modules.update(broken)
    _write(folder, modules)


@pytest.fixture(scope="module")
def graded_class(course, tmp_path_factory):
    """Grade one student per failure mode once; the tests below check the outputs."""
    root = tmp_path_factory.mktemp("class")
    subs = root / "submissions"
    canary = root / "canary.txt"
    canary.write_text("keep me", encoding="utf-8")
    canary_dir = root / "canary_dir"
    canary_dir.mkdir()
    (canary_dir / "file.txt").write_text("keep me too", encoding="utf-8")
    students = {
        "good": {},
        "nested_good": {},
        "raises": {"ex01_add": "def add(a, b):\n    raise ValueError('nope')\n"},
        "loops": {"ex02_mul": "def mul(a, b):\n    while True:\n        pass\n"},
        # Swallows the timeout again and again: the plugin stops the process, the grader restarts it.
        "stubborn": {"ex03_greet": textwrap.dedent('''
            def greet(name):
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
        ''')},
        # Never gives the interpreter back (one long C call): only the grader's hard kill stops it.
        "c_loop": {"ex03_greet": "def greet(name):\n    return sum(range(10 ** 13))\n"},
        "exit_import": {"ex01_add": "import sys\nsys.exit(3)\n\ndef add(a, b):\n    return a + b\n"},
        "exit_call": {"ex02_mul": "import sys\n\ndef mul(a, b):\n    sys.exit(3)\n"},
        "os_exit": {"ex01_add": "import os\n\ndef add(a, b):\n    os._exit(1)\n"},
        "os_exit_import": {"ex02_mul": "import os\nos._exit(1)\n"},
        "prints": {"ex02_mul": "def mul(a, b):\n    print('x' * 5_000_000)\n    return a * b\n"},
        "deletes": {"ex03_greet": textwrap.dedent(f'''
            import os, shutil

            def greet(name):
                for action in (lambda: os.remove({str(canary)!r}), lambda: shutil.rmtree({str(canary_dir)!r}),
                               lambda: os.rename({str(canary)!r}, {str(canary) + ".moved"!r})):
                    try:
                        action()
                    except OSError:
                        pass  # caught, but the attempt still costs the test
                return "hello, " + name
        ''')},
        "overwrites": {"ex01_add": textwrap.dedent(f'''
            def add(a, b):
                with open({str(canary)!r}, "w") as fh:
                    fh.write("gone")
                return a + b
        ''')},
        "syntax": {"ex02_mul": "def mul(a, b)\n    return a * b\n"},
        "skips": {"ex02_mul": "import pytest\n\ndef mul(a, b):\n    pytest.skip('not today')\n"},
    }
    for name, broken in students.items():
        _student(subs, name, broken, nested=name.startswith("nested"))
    out = root / "out"
    # In-process (TensorFlow is imported once); the grader's hard kill comes 2 s after a test's limit.
    hard_grace, grade.HARD_GRACE_S = grade.HARD_GRACE_S, 2.0
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = grade.main([str(a) for a in ("--tests-dir", course / "tests" / "exercises", "--submissions", subs,
                                                "--out", out, "--timeout", "1", "--jobs", "3")])
    finally:
        grade.HARD_GRACE_S = hard_grace
    capsys_out = subprocess.CompletedProcess([], code, stdout.getvalue(), stderr.getvalue())
    return {"root": root, "out": out, "canary": canary, "canary_dir": canary_dir, "proc": capsys_out,
            "students": students}


EXPECTED = {  # student: (ex01, ex02, ex03)
    "good": (3, 3, 4),
    "nested_good": (3, 3, 4),
    "raises": (0, 3, 4),
    "loops": (3, 0, 4),
    "stubborn": (3, 3, 0),
    "c_loop": (3, 3, 0),
    "exit_import": (0, 3, 4),
    "exit_call": (3, 0, 4),
    "os_exit": (0, 3, 4),
    "os_exit_import": (3, 0, 4),
    "prints": (3, 0, 4),
    "deletes": (3, 3, 0),
    "overwrites": (0, 3, 4),
    "syntax": (3, 0, 4),
    "skips": (3, 0, 4),
}


def test_class_grading_runs_and_exits_zero(graded_class):
    proc = graded_class["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (graded_class["out"] / "grades.csv").is_file()
    assert "wrote" in proc.stdout


def test_grades_csv_row_by_row(graded_class):
    rows = read_csv(graded_class["out"] / "grades.csv")
    assert list(rows) == ["max", *sorted(EXPECTED)]
    assert rows["max"] == {"student": "max", "ex01_add": "3", "ex02_mul": "3", "ex03_greet": "4", "total": "10"}
    for student, points in EXPECTED.items():
        want = {"student": student, "ex01_add": str(points[0]), "ex02_mul": str(points[1]),
                "ex03_greet": str(points[2]), "total": str(sum(points))}
        assert rows[student] == want, student


def test_files_outside_the_sandbox_survive(graded_class):
    assert graded_class["canary"].read_text(encoding="utf-8") == "keep me"
    assert (graded_class["canary_dir"] / "file.txt").read_text(encoding="utf-8") == "keep me too"
    assert not Path(str(graded_class["canary"]) + ".moved").exists()
    # The submissions themselves are graded from copies: untouched.
    subs = graded_class["root"] / "submissions"
    assert (subs / "good" / "ex01_add.py").read_text(encoding="utf-8") == SOLUTIONS["ex01_add"]


def test_feedback_files_explain_each_test(graded_class):
    feedback = graded_class["out"] / "feedback"
    assert sorted(p.stem for p in feedback.glob("*.md")) == sorted(EXPECTED)
    good = (feedback / "good.md").read_text(encoding="utf-8")
    assert "Total: 10 / 10" in good
    assert "- PASS `test_ex01_add.py::test_add_ints` (2 / 2)" in good
    raises = (feedback / "raises.md").read_text(encoding="utf-8")
    assert "- FAIL `test_ex01_add.py::test_add_ints` (0 / 2)" in raises and "ValueError: nope" in raises
    loops = (feedback / "loops.md").read_text(encoding="utf-8")
    # --timeout 1 by default; test_mul_zero asks for 0.5 s with @pytest.mark.timeout_s(0.5).
    assert "longer than its 1 s time limit" in loops and "longer than its 0.5 s time limit" in loops
    assert "- SKIP `test_ex03_greet.py::test_greet_needs_data` (not counted)" in good
    assert "skipped the test: that does not count" in (feedback / "skips.md").read_text(encoding="utf-8")
    assert "timed out" in (feedback / "c_loop.md").read_text(encoding="utf-8")
    assert "sandbox violation" in (feedback / "deletes.md").read_text(encoding="utf-8")
    assert "sandbox violation" in (feedback / "overwrites.md").read_text(encoding="utf-8")
    assert "printed too much" in (feedback / "prints.md").read_text(encoding="utf-8")
    assert "the test process ended during this test" in (feedback / "os_exit.md").read_text(encoding="utf-8")
    assert "importing this exercise stopped the test process" in (feedback / "os_exit_import.md").read_text(
        encoding="utf-8")
    assert "SyntaxError" in (feedback / "syntax.md").read_text(encoding="utf-8")
    assert "SystemExit" in (feedback / "exit_call.md").read_text(encoding="utf-8")
    # Output is capped: the 5 MB print reaches neither the feedback nor the grader's stdout.
    assert (feedback / "prints.md").stat().st_size < 20_000
    assert len(graded_class["proc"].stdout) < 20_000


# ----------------------------------------------------------------------------- hidden tests


def test_hidden_tests_show_only_names_points_and_verdicts(course, tmp_path, capsys):
    subs = tmp_path / "subs"
    _write(subs / "stub", STUBS)
    _write(subs / "good", SOLUTIONS)
    hidden_dir = course / "hidden"
    # A student who hunts for the hidden tests on disk (in the sandbox copy and at the original path)
    # and puts what it finds in a visible failure message.
    _student(subs, "snoop", {"ex02_mul": textwrap.dedent(f'''
        import os

        def mul(a, b):
            found = []
            for top in (os.getcwd(), {str(hidden_dir)!r}):
                for root, _, files in os.walk(top):
                    for f in files:
                        try:
                            text = open(os.path.join(root, f), encoding="utf-8").read()
                        except OSError:
                            continue
                        i = text.find("SECRET")
                        if i >= 0:
                            found.append(text[i:i + 60])
            raise AssertionError("LEAK " + " | ".join(found))
    ''')})
    code, out, err = run_grade(capsys, "--tests-dir", course / "tests" / "exercises", "--hidden-tests", hidden_dir,
                               "--submissions", subs, "--out", tmp_path / "out")
    assert code == 0
    rows = read_csv(tmp_path / "out" / "grades.csv")
    assert rows["max"]["ex01_add"] == "5" and rows["max"]["total"] == "12"
    assert rows["good"]["total"] == "12" and rows["stub"]["total"] == "0"
    assert rows["snoop"]["ex02_mul"] == "0" and rows["snoop"]["ex01_add"] == "5"
    stub = (tmp_path / "out" / "feedback" / "stub.md").read_text(encoding="utf-8")
    assert "- FAIL `[hidden] test_ex01_extra.py::test_add_negative` (0 / 2)" in stub
    snoop = (tmp_path / "out" / "feedback" / "snoop.md").read_text(encoding="utf-8")
    # Reading the hidden tests is refused (and costs the test), the visible message is shown...
    assert "sandbox violation: reading" in snoop
    everything = out + err + "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "out").rglob("*.md"))
    assert "SECRET" not in everything  # ...but never the hidden tests' source or assertion text
    assert "edge cases" not in everything


def test_timeout_marker_and_points_kwarg():
    """A test's time limit: @pytest.mark.timeout_s(s), else points(n, timeout_s=s), else the default."""
    from moe_tf import _grade_plugin as plugin

    class Mark:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class Item:
        def __init__(self, **marks):
            self.marks = marks

        def get_closest_marker(self, name):
            return self.marks.get(name)

    assert plugin._timeout_for(Item(points=Mark(3), timeout_s=Mark(30))) == 30
    assert plugin._timeout_for(Item(points=Mark(3, timeout_s=25))) == 25
    assert plugin._timeout_for(Item(points=Mark(3))) == 10
    assert plugin._points_for(Item(points=Mark(3))) == 3


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("args", [
    ["--submissions", "/nonexistent/moe-grade-class"],
    ["--exercises", "/nonexistent/moe-grade-ex"],
    ["--solutions", "--exercises", "."],
    ["--out", "somewhere"],
    ["--timeout", "0"],
    ["--no-such-option"],
])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        grade.main(args)
    assert exc.value.code == 2
    assert "moe-grade: error:" in capsys.readouterr().err


def test_solutions_without_a_solutions_folder_exit_2(tmp_path, monkeypatch, capsys):
    """In a student copy (no solutions/), --solutions is refused with a message that says why."""
    monkeypatch.setattr(grade, "REPO", tmp_path)
    with pytest.raises(SystemExit) as exc:
        grade.main(["--solutions"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "moe-grade: error: --solutions: no solutions/ folder in" in err and "student copy" in err


def test_unknown_exercise_exits_2(course, capsys):
    code, _, err = run_grade(capsys, "--tests-dir", course / "tests" / "exercises", "--exercises",
                             course / "solutions", "--exercise", "ex99")
    assert code == 2 and "no tests matching ex99" in err


# ----------------------------------------------------------------------------- the real course (acceptance)


def _moe_grade(*args, timeout=600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("moe-grade")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moe_tf.grade"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          check=False)


@needs_solutions
def test_real_course_solutions_score_100_percent():
    proc = _moe_grade("--solutions")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows, total = parse_table(proc.stdout)
    assert len(rows) >= 16, proc.stdout
    for name, (earned, possible, _, failed) in rows.items():
        assert possible > 0 and earned == possible and failed == 0, f"{name}: {earned}/{possible}\n{proc.stdout}"
    assert total[0] == total[1] > 0


def test_real_course_untouched_exercises_score_zero():
    proc = _moe_grade()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows, total = parse_table(proc.stdout)
    assert len(rows) >= 16, proc.stdout
    for name, (earned, possible, passed, _) in rows.items():
        assert possible > 0 and earned == 0 and passed == 0, f"{name}: {earned}/{possible}\n{proc.stdout}"
    assert total[0] == 0


@needs_solutions
def test_real_course_fixture_class(tmp_path):
    """Copies of solutions/, one module broken per student, graded on two exercises."""
    solutions = REPO / "solutions"
    chosen = [min(solutions.glob(f"{p}_*.py")).stem for p in ("ex02", "ex03")]
    subs = tmp_path / "subs"
    breakers = {
        "good": None,
        "raises_on_import": (chosen[0], "\nraise RuntimeError('broken on purpose')\n"),
        "exits_on_import": (chosen[1], "\nimport os\nos._exit(1)\n"),
    }
    for student, breaker in breakers.items():
        shutil.copytree(solutions, subs / student / "exercises", ignore=shutil.ignore_patterns("__pycache__"))
        if breaker:
            path = subs / student / "exercises" / f"{breaker[0]}.py"
            path.write_text(path.read_text(encoding="utf-8") + breaker[1], encoding="utf-8")
    proc = _moe_grade("--submissions", subs, "--out", tmp_path / "out", "--exercise", "ex02", "ex03", "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_csv(tmp_path / "out" / "grades.csv")
    assert set(rows) == {"max", *breakers}
    assert list(rows["max"])[1:-1] == chosen
    full = rows["max"]
    assert all(float(full[c]) > 0 for c in chosen)
    assert rows["good"] == {**full, "student": "good"}
    assert rows["raises_on_import"][chosen[0]] == "0" and rows["raises_on_import"][chosen[1]] == full[chosen[1]]
    assert rows["exits_on_import"][chosen[1]] == "0" and rows["exits_on_import"][chosen[0]] == full[chosen[0]]
