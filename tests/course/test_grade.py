"""``moe-grade``: a synthetic mini-course with a fixture class of broken submissions, then the real course.

The synthetic part builds, in ``tmp_path``, three tiny exercises (stubs, solutions and tests that use the
course's real ``tests/exercises/conftest.py`` harness) and grades them in-process through
``moe_tf.course.grade.main`` (each student still runs in its own pytest subprocess, which imports no
TensorFlow here, so it is quick).

The ``real_course`` tests are the acceptance tests of the graded exercises: ``moe-grade --solutions``
scores 100% on every exercise, the untouched stubs score 0, and a small class built from the
solutions with one module broken per student is graded exactly. Run them alone with
``pytest tests/course/test_grade.py -k real_course``. The two that need ``solutions/`` are skipped in a student copy
of the course (``tools/student_version.py``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from moe_tf.course import grade

# One worker runs this whole module under pytest-xdist (`make test`): its module fixture is expensive.
pytestmark = pytest.mark.xdist_group("grade")

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "exercises" / "conftest.py"

# A student copy of the course (tools/student_version.py) has no solutions/.
needs_solutions = pytest.mark.skipif(
    not (REPO / "solutions").is_dir(),
    reason="no solutions/ folder: a student copy of the course leaves the reference solutions out",
)

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
    "test_ex01_add": """
        import pytest

        EXERCISE = "ex01_add"

        @pytest.mark.points(2)
        def test_add_ints(ex):
            assert ex.add(2, 3) == 5

        @pytest.mark.points(1)
        def test_add_floats(ex):
            assert ex.add(0.5, 0.25) == 0.75
    """,
    "test_ex02_mul": """
        import pytest

        EXERCISE = "ex02_mul"

        @pytest.mark.points(2)
        def test_mul_ints(ex):
            assert ex.mul(4, 5) == 20

        @pytest.mark.points(1)
        @pytest.mark.timeout_s(0.5)
        def test_mul_zero(ex):
            assert ex.mul(7, 0) == 0
    """,
    "test_ex03_greet": """
        import pytest

        EXERCISE = "ex03_greet"

        @pytest.mark.points(4)
        def test_greet(ex):
            assert ex.greet("moe") == "hello, moe"

        @pytest.mark.points(5)
        @pytest.mark.timeout_s(0.5)
        def test_greet_needs_data(ex):
            pytest.skip("the data for this test is not on this machine")  # not counted, for anyone
    """,
}
MAX = {"ex01_add": 3, "ex02_mul": 3, "ex03_greet": 4}
TOTAL = 10

HIDDEN = {
    "test_ex01_extra": """
        import pytest

        EXERCISE = "ex01_add"

        # SECRET_SOURCE_MARKER: the instructor's edge cases
        @pytest.mark.points(2)
        def test_add_negative(ex):
            assert ex.add(-2, -3) == -5, "SECRET_ASSERT_TEXT negative numbers"
    """,
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


TABLE_ROW = re.compile(
    r"^(ex\d\d_\w+)\s+([\d.]+) / ([\d.]+)\s+(\d+) passed, (\d+) failed(?:, \d+ skipped)?$", re.MULTILINE
)
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
    code, out, _ = run_grade(
        capsys,
        "--tests-dir",
        course / "tests" / "exercises",
        "--exercises",
        course / "exercises",
        "--exercise",
        "ex02",
        "3",
    )
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
    listener = socket.socket()  # what the "network" student tries to reach
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    PORT = listener.getsockname()[1]  # noqa: N806
    (canary_dir / "file.txt").write_text("keep me too", encoding="utf-8")
    students = {
        "good": {},
        "nested_good": {},
        "raises": {"ex01_add": "def add(a, b):\n    raise ValueError('nope')\n"},
        "loops": {"ex02_mul": "def mul(a, b):\n    while True:\n        pass\n"},
        # Swallows the timeout again and again: the plugin stops the process, the grader restarts it.
        "stubborn": {
            "ex03_greet": textwrap.dedent("""
            def greet(name):
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
        """)
        },
        # Never gives the interpreter back (one long C call): only the grader's hard kill stops it.
        "c_loop": {"ex03_greet": "def greet(name):\n    return sum(range(10 ** 13))\n"},
        "exit_import": {"ex01_add": "import sys\nsys.exit(3)\n\ndef add(a, b):\n    return a + b\n"},
        "exit_call": {"ex02_mul": "import sys\n\ndef mul(a, b):\n    sys.exit(3)\n"},
        "os_exit": {"ex01_add": "import os\n\ndef add(a, b):\n    os._exit(1)\n"},
        "os_exit_import": {"ex02_mul": "import os\nos._exit(1)\n"},
        "prints": {"ex02_mul": "def mul(a, b):\n    print('x' * 5_000_000)\n    return a * b\n"},
        "deletes": {
            "ex03_greet": textwrap.dedent(f"""
            import os, shutil

            def greet(name):
                for action in (lambda: os.remove({str(canary)!r}), lambda: shutil.rmtree({str(canary_dir)!r}),
                               lambda: os.rename({str(canary)!r}, {str(canary) + ".moved"!r})):
                    try:
                        action()
                    except OSError:
                        pass  # caught, but the attempt still costs the test
                return "hello, " + name
        """)
        },
        "overwrites": {
            "ex01_add": textwrap.dedent(f"""
            def add(a, b):
                with open({str(canary)!r}, "w") as fh:
                    fh.write("gone")
                return a + b
        """)
        },
        "syntax": {"ex02_mul": "def mul(a, b)\n    return a * b\n"},
        "skips": {"ex02_mul": "import pytest\n\ndef mul(a, b):\n    pytest.skip('not today')\n"},
        # --- issue 16: a hostile class (one attack per student; see HOSTILE below for what each proves)
        # Copies: the library's object, found through an import the source does not spell out.
        "copy_lib": {
            "ex01_add": textwrap.dedent("""
            import importlib.util, os

            _path = os.path.join(os.path.dirname(importlib.util.find_spec("moe" + "_tf").origin), "course", "_grade_jail.py")
            _spec = importlib.util.spec_from_file_location("library", _path)
            _lib = importlib.util.module_from_spec(_spec)
            _spec.loader.exec_module(_lib)
            overlay = _lib.overlay  # (a library function that imports no TensorFlow: this test runs with 1 s limits)

            def add(a, b):
                return a + b
        """)
        },
        # Copies: loads a reference from a solutions/ folder.
        "copy_solutions": {
            "ex02_mul": textwrap.dedent(f"""
            import importlib.util

            try:
                _spec = importlib.util.spec_from_file_location("ref", {str(root.parent / "solutions" / "ex02_mul.py")!r})
                _ref = importlib.util.module_from_spec(_spec)
                _spec.loader.exec_module(_ref)
                mul = _ref.mul
            except Exception:
                def mul(a, b):
                    return a * b
        """)
        },
        # Forged catalogue: a 1000-point fake test, malformed records, through the report's open descriptor.
        "forger": {
            "ex01_add": textwrap.dedent("""
            import json, os, sys

            def add(a, b):
                fd = getattr(sys.modules.get("moe_grade_plugin"), "_REPORT_FD", None)
                if fd is not None:
                    fake = {"id": "tests/exercises/test_fake.py::test_fake", "exercise": "ex01_add", "points": 1000,
                            "timeout": 1, "hidden": False}
                    for rec in ({"ev": "collected", "tests": [fake]}, {"ev": "start", "id": fake["id"]},
                                {"ev": "result", "id": fake["id"], "outcome": "passed"}, {"ev": "collected", "tests": 5},
                                {"ev": "result", "id": ["x"], "outcome": "passed"}, [1, 2], {"ev": "copied"}):
                        os.write(fd, (json.dumps(rec) + "\\n").encode())
                    os.write(fd, b"{not json\\n")
                return a + b
        """)
        },
        # Plants a conftest.py that passes every test, and a pytest.py in its working folder, then crashes:
        # the restart must run the instructor's tests, not these.
        "planter": {
            "ex01_add": textwrap.dedent('''
            import os

            CONFTEST = """
            import pytest
            @pytest.hookimpl(hookwrapper=True)
            def pytest_runtest_makereport(item, call):
                outcome = yield
                outcome.get_result().outcome = "passed"
            """

            def add(a, b):
                box = os.path.dirname(os.environ["MOE_TF_EXERCISES_DIR"])
                for path, text in ((os.path.join(box, "tests", "exercises", "conftest.py"), CONFTEST),
                                   (os.path.join(box, "tests", "exercises", "zz_conftest.py"), CONFTEST),
                                   (os.path.join(os.getcwd(), "pytest.py"), "raise SystemExit(0)\\n")):
                    try:
                        with open(path, "a") as fh:
                            fh.write(text)
                    except OSError:
                        pass
                os._exit(1)
        ''')
        },
        # Outside the box without audit events: dir_fd, a hard link, _posixsubprocess.fork_exec; /dev/shm;
        # a process meant to outlive grading. None of it may reach the machine.
        "escaper": {
            "ex03_greet": textwrap.dedent(f"""
            import os

            def greet(name):
                try:
                    d = os.open({str(root)!r}, os.O_RDONLY)
                    fd = os.open("escaped.txt", os.O_WRONLY | os.O_CREAT, dir_fd=d)
                    os.write(fd, b"out")
                except OSError:
                    pass
                try:
                    os.link({str(canary)!r}, "hardlink.txt")
                    with open("hardlink.txt", "w") as fh:
                        fh.write("gone")
                except OSError:
                    pass
                try:
                    with open("/dev/shm/moe-grade-leak-{MARKER}", "w") as fh:
                        fh.write("left behind")
                except OSError:
                    pass
                try:
                    import _posixsubprocess
                    cmd = "echo out > {root}/forked.txt; exec sleep {MARKER}".encode()
                    r, w = os.pipe()
                    {_spawn('[b"/bin/sh", b"-c", cmd]')}
                except Exception:
                    pass
                return "hello, " + name
        """)
        },
        # No limits: the network, and 7 GB of address space.
        "network": {
            "ex01_add": textwrap.dedent(f"""
            import socket

            def add(a, b):
                try:
                    socket.create_connection(("127.0.0.1", {PORT}), timeout=0.5).close()
                    return "the network was reachable"
                except OSError:
                    return a + b
        """)
        },
        "hog": {"ex02_mul": "def mul(a, b):\n    block = bytearray(7 * 2 ** 30)\n    return a * b\n"},
        # --- issue 16, continued: the attacks the list above did not cover yet
        # Reads the student graded at the same time (--jobs 3): "victim" holds a marker in its ex01_add.py;
        # "peeker" scores ex01 only if it reads that marker in some other student's files (plain open(),
        # and with the OS sandbox also os.open(dir_fd=...), which the audit hook alone cannot see).
        "victim": {
            "ex01_add": f"# {VICTIM}: this line must stay inside victim's own grading\n" + SOLUTIONS["ex01_add"]
        },
        "peeker": {
            "ex01_add": textwrap.dedent(f"""
            import glob, os, time

            WANTED = "VICTIM_" + "MARKER_{MARKER}"  # spelled in two halves: not in this file's own text
            RUNS = {os.path.join(tempfile.gettempdir(), "moe-grade-")!r}  # where the grader makes its folders
            PLACES = [RUNS + "*/submission/*.py", RUNS + "*/box/exercises/*.py", RUNS + "class-*/subs/*/*.py",
                      {str(subs)!r} + "/*/*.py"]

            def _read(path):
                if {OS_SANDBOX!r}:
                    try:  # relative to "/": the audit hook resolves the name against the working folder instead
                        d = os.open("/", os.O_RDONLY)
                        return os.read(os.open(path.lstrip("/"), os.O_RDONLY, dir_fd=d), 1 << 16).decode()
                    except OSError:
                        pass
                try:
                    with open(path, encoding="utf-8") as fh:
                        return fh.read()
                except OSError:
                    return ""

            def add(a, b):
                end = time.monotonic() + 0.6
                while time.monotonic() < end:
                    for pattern in PLACES:
                        for path in glob.glob(pattern):
                            if WANTED in _read(path):
                                return a + b  # points only for reading another student's file
                    time.sleep(0.05)
                return a - b
        """)
        },
        # Finds the instructor's tests folder (the parent's command line, every /proc/<pid>/cmdline and cwd; the
        # in-process grader has no --tests-dir on its command line, so the course's path stands in for what
        # an attacker reads there) and appends a failing 100-point test and a conftest hook that fails every
        # test, for the students graded later. Only folders under the fixture's course are touched (never
        # the repository running these tests); os.open(dir_fd=...) only with the OS sandbox.
        "poisoner": {
            "ex02_mul": textwrap.dedent(f"""
            import os

            COURSE = {str(course)!r}
            TEST = ("\\n\\nimport pytest\\n\\n@pytest.mark.points(100)\\ndef test_poisoned():\\n"
                    "    assert False, 'POISONED'\\n")
            HOOK = "\\n\\ndef pytest_runtest_setup(item):\\n    raise RuntimeError('POISONED by a student')\\n"

            def _folders():
                found = {{os.path.join(COURSE, "tests", "exercises")}}
                for pid in [str(os.getppid())] + [p for p in os.listdir("/proc") if p.isdigit()]:
                    try:
                        with open(f"/proc/{{pid}}/cmdline", "rb") as fh:
                            args = [a.decode("utf-8", "replace") for a in fh.read().split(b"\\0")]
                        cwd = os.readlink(f"/proc/{{pid}}/cwd")
                    except OSError:
                        continue
                    for arg in args + ["tests/exercises"]:
                        path = os.path.realpath(os.path.join(cwd, arg))
                        if os.path.isfile(os.path.join(path, "conftest.py")):
                            found.add(path)
                return [f for f in found if f.startswith(COURSE + os.sep)]

            def _append(path, text):
                try:
                    with open(path, "a") as fh:
                        fh.write(text)
                except OSError:
                    pass
                if {OS_SANDBOX!r}:
                    try:
                        d = os.open(os.path.dirname(path), os.O_RDONLY)
                        os.write(os.open(os.path.basename(path), os.O_WRONLY | os.O_APPEND, dir_fd=d), text.encode())
                    except OSError:
                        pass

            def mul(a, b):
                for folder in _folders():
                    try:
                        names = os.listdir(folder)
                    except OSError:  # hidden from it: the course's test modules have public names
                        names = ["test_ex01_add.py", "test_ex02_mul.py", "test_ex03_greet.py"]
                    for name in names:
                        if name.startswith("test_") and name.endswith(".py"):
                            _append(os.path.join(folder, name), TEST)
                    _append(os.path.join(folder, "conftest.py"), HOOK)
                return a * b
        """)
        },
        # In-process forgery, NOT contained (documented): a hook registered at import turns every failed report
        # into a pass. mul is wrong (a + b), yet ex02 scores full marks.
        "hooker": {"ex02_mul": HOOKER},
        # The same, by patching the plugin's reporting (add is wrong) ...
        "patcher": {
            "ex01_add": textwrap.dedent("""
            import sys

            _plugin = sys.modules["moe_grade_plugin"]
            _emit = _plugin._emit
            _plugin._emit = lambda rec: _emit({**rec, "outcome": "passed"} if rec.get("ev") == "result" else rec)

            def add(a, b):
                return a - b
        """)
        },
        # ... and by rewriting the collected tests (greet is wrong): every test not run yet passes.
        "rewriter": {
            "ex03_greet": textwrap.dedent("""
            import gc

            for _obj in gc.get_objects():
                if type(_obj).__name__ == "Function" and hasattr(_obj, "runtest"):
                    _obj.runtest = lambda: None

            def greet(name):
                return "bye"
        """)
        },
        "zz_late": {},  # graded last: what the poisoner and the survivor did must not reach it
    }
    if OS_SANDBOX:
        # Without the OS sandbox this gets through (setsid escapes the process group, and the reports are the
        # grader's own user's files): the fallback is documented as not containing it, so it runs only here.
        # A process that outlives its own grading (a new session, no audit event) and appends a failure for
        # every collected test to the other students' reports.
        students["survivor"] = {
            "ex03_greet": textwrap.dedent(f'''
            import os, sys

            SCRIPT = """# survivor-{MARKER}
            import glob, json, os, time
            own = os.path.dirname(os.environ.get("MOE_GRADE_CONFIG", "/nonexistent/x"))
            end = time.time() + 30
            while time.time() < end:
                for rep in glob.glob({os.path.join(tempfile.gettempdir(), "moe-grade-*", "report-*.jsonl")!r}):
                    if os.path.dirname(rep) == own:
                        continue
                    try:
                        ids = []
                        with open(rep) as fh:
                            for line in fh:
                                try:
                                    rec = json.loads(line)
                                    ids += [t["id"] for t in rec["tests"]] if rec.get("ev") == "collected" else []
                                except Exception:
                                    pass
                        with open(rep, "a") as fh:
                            for i in ids:
                                rec = dict(ev="result", id=i, outcome="failed", msg="INJECTED")
                                fh.write(json.dumps(rec) + chr(10))
                    except OSError:
                        pass
                time.sleep(0.05)
            """

            def greet(name):
                try:
                    import _posixsubprocess
                    exe = sys.executable.encode()
                    r, w = os.pipe()
                    {_spawn('[exe, b"-c", SCRIPT.encode()]')}
                except Exception:
                    pass
                return "hello, " + name
        ''')
        }
    for name, broken in students.items():
        _student(subs, name, broken, nested=name.startswith("nested"))
    # Names: a CSV formula, a reserved name, a 200-character name; a submission that is a symbolic link.
    for name in ("-2+3", "max", "a" * 200):
        _student(subs, name, {})
    (subs / "linked").symlink_to(subs / "good", target_is_directory=True)
    out = root / "out"
    # Symbolic links planted where the grader writes: replaced, never written through.
    (out / "feedback").mkdir(parents=True)
    for victim, link in (("victim.md", out / "feedback" / "good.md"), ("victim.csv", out / "grades.csv")):
        (root / victim).write_text("victim", encoding="utf-8")
        link.symlink_to(root / victim)
    # In-process (TensorFlow is imported once); the grader's hard kill comes 2 s after a test's limit.
    tests_before = _digest(course / "tests" / "exercises")
    hard_grace, grade.HARD_GRACE_S = grade.HARD_GRACE_S, 2.0
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = grade.main(
                [
                    str(a)
                    for a in (
                        "--tests-dir",
                        course / "tests" / "exercises",
                        "--submissions",
                        subs,
                        "--out",
                        out,
                        "--timeout",
                        "1",
                        "--jobs",
                        "3",
                    )
                ]
            )
    finally:
        grade.HARD_GRACE_S = hard_grace
        listener.close()
    survivors = [
        p
        for p in Path("/proc").glob("[0-9]*")
        if _cmdline(p).endswith(f"sleep {MARKER}") or f"survivor-{MARKER}" in _cmdline(p)
    ]
    for p in survivors:
        with contextlib.suppress(OSError):
            os.kill(int(p.name), signal.SIGKILL)
    capsys_out = subprocess.CompletedProcess([], code, stdout.getvalue(), stderr.getvalue())
    return {
        "root": root,
        "out": out,
        "canary": canary,
        "canary_dir": canary_dir,
        "proc": capsys_out,
        "students": students,
        "survivors": survivors,
        "course_tests": (tests_before, _digest(course / "tests" / "exercises")),
    }


def _spawn(argv: str, r: str = "r", w: str = "w") -> str:
    """Source of one expression that starts ``argv`` (a source list of bytes) with no audit event, as a hostile
    student would: ``_posixsubprocess.fork_exec`` with this Python's positional arguments (3.11); returns the pid.
    One definition, checked by ``test_the_students_spawn_call_starts_a_process``, so that a Python whose
    signature differs cannot turn the attacks that use it into silent no-ops."""
    return (
        f"_posixsubprocess.fork_exec({argv}, [({argv})[0]], True, ({w},), None, None, -1, -1, -1, -1, -1, -1, "
        f"{r}, {w}, False, True, -1, None, None, None, -1, None, False)"
    )


MARKER = 86400 + os.getpid()  # "sleep MARKER": the process the "escaper" student leaves behind
VICTIM = f"VICTIM_MARKER_{MARKER}"  # in "victim"'s ex01_add.py only


def _hooker(function: str, wrong: str) -> str:
    """An exercise module that registers, at import, a pytest hook turning every failed report into a pass."""
    return textwrap.dedent(f"""
        import gc

        import pytest


        class _Forge:
            @pytest.hookimpl(hookwrapper=True)
            def pytest_runtest_makereport(self, item, call):
                outcome = yield
                report = outcome.get_result()
                if report.failed:
                    report.outcome, report.longrepr = "passed", None


        for _obj in gc.get_objects():
            if type(_obj).__name__ == "PytestPluginManager" and not _obj.has_plugin("forge"):
                _obj.register(_Forge(), "forge")
                break


        def {function}(a, b):
            return {wrong}
    """)


HOOKER = _hooker("mul", "a + b")  # wrong: mul(4, 5) is 9


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


LONG = "a" * 55 + "-" + hashlib.sha1(("a" * 200).encode()).hexdigest()[:8]


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
    # issue 16: a hostile class
    "copy_lib": (0, 3, 4),
    "copy_solutions": (3, 0, 4),
    "forger": (3, 3, 4),
    "planter": (0, 3, 4),
    "escaper": (3, 3, 4),
    "network": (3, 3, 4),
    "hog": (3, 0, 4),
    "-2_3": (3, 3, 4),
    LONG: (3, 3, 4),
    "linked": (0, 0, 0),
    "victim": (3, 3, 4),
    "peeker": (0, 3, 4),  # it read no other student's file
    "poisoner": (3, 0, 4),  # its writes outside the box are refused, which costs it ex02
    # NOT contained (see test_in_process_forgery_is_not_contained): wrong answers, forged passes.
    "hooker": (3, 3, 4),
    "patcher": (3, 3, 4),
    "rewriter": (3, 3, 4),
    "zz_late": (3, 3, 4),  # graded after the poisoner and the survivor: untouched
}
# Without an OS sandbox (no bwrap, not root) the network is reachable: noted, not contained.
OS_SANDBOX = grade.JAIL.detect() != "none"
if not OS_SANDBOX:
    EXPECTED["network"] = (0, 3, 4)
if OS_SANDBOX:
    EXPECTED["survivor"] = (3, 3, 4)


def test_class_grading_runs_and_exits_zero(graded_class):
    proc = graded_class["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (graded_class["out"] / "grades.csv").is_file()
    assert "wrote" in proc.stdout


def test_grades_csv_row_by_row(graded_class):
    rows = read_csv(graded_class["out"] / "grades.csv")
    rows["-2_3"] = {**rows.pop("'-2_3"), "student": "-2_3"}  # the CSV escapes a leading -
    assert list(rows)[0] == "max" and sorted(rows) == sorted(["max", *EXPECTED])
    assert rows["max"] == {"student": "max", "ex01_add": "3", "ex02_mul": "3", "ex03_greet": "4", "total": "10"}
    for student, points in EXPECTED.items():
        want = {
            "student": student,
            "ex01_add": str(points[0]),
            "ex02_mul": str(points[1]),
            "ex03_greet": str(points[2]),
            "total": str(sum(points)),
        }
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
    assert not (feedback / "max.md").exists()
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
        encoding="utf-8"
    )
    assert "SyntaxError" in (feedback / "syntax.md").read_text(encoding="utf-8")
    assert "SystemExit" in (feedback / "exit_call.md").read_text(encoding="utf-8")
    # Output is capped: the 5 MB print reaches neither the feedback nor the grader's stdout.
    assert (feedback / "prints.md").stat().st_size < 20_000
    assert len(graded_class["proc"].stdout) < 20_000


def test_hostile_class_copies_score_zero_with_a_reason(graded_class):
    feedback = graded_class["out"] / "feedback"
    lib = (feedback / "copy_lib.md").read_text(encoding="utf-8")
    assert "copied:" in lib and "overlay from" in lib and "moe_tf/course/_grade_jail.py" in lib and "scores 0" in lib
    sol = (feedback / "copy_solutions.md").read_text(encoding="utf-8")
    assert "copied:" in sol and "solutions/ folder" in sol


def test_hostile_class_cannot_forge_the_catalogue_or_survive_a_restart(graded_class):
    rows = read_csv(graded_class["out"] / "grades.csv")
    assert rows["max"]["total"] == "10"  # the forger's 1000-point test is not in the catalogue
    everything = "".join(p.read_text(encoding="utf-8") for p in (graded_class["out"] / "feedback").glob("*.md"))
    assert "test_fake" not in everything
    # The planter's conftest.py (every test passes) and pytest.py were not run after its crash: ex01 scored 0.
    assert rows["planter"]["ex01_add"] == "0"


def test_hostile_class_names_links_and_csv(graded_class):
    root, out = graded_class["root"], graded_class["out"]
    text = (out / "grades.csv").read_text(encoding="utf-8")
    assert "\n-2" not in text and "'-2_3" in text  # no cell starts a formula
    assert "reserved name" in graded_class["proc"].stderr
    assert "symbolic link" in (out / "feedback" / "linked.md").read_text(encoding="utf-8")
    for victim in ("victim.md", "victim.csv"):
        assert (root / victim).read_text(encoding="utf-8") == "victim"
    assert not (out / "grades.csv").is_symlink() and not (out / "feedback" / "good.md").is_symlink()
    assert "Total: 10 / 10" in (out / "feedback" / "good.md").read_text(encoding="utf-8")


@pytest.mark.skipif(
    not OS_SANDBOX,
    reason="no OS sandbox here (no bwrap, not root): moe-grade says so and "
    "falls back to the audit hook, which cannot contain these",
)
def test_hostile_class_leaves_nothing_on_the_machine(graded_class):
    root = graded_class["root"]
    assert not (root / "escaped.txt").exists()  # dir_fd
    assert not (root / "forked.txt").exists()  # _posixsubprocess.fork_exec
    assert not Path(f"/dev/shm/moe-grade-leak-{MARKER}").exists()
    assert graded_class["survivors"] == []  # the process it started died with its pid namespace
    assert "sandbox: unshare namespaces" in graded_class["proc"].stdout or "bubblewrap" in graded_class["proc"].stdout


def test_hostile_class_cannot_read_the_student_graded_alongside(graded_class):
    """--jobs 3: "peeker" polls the other students' grading folders and the class's private copies for the
    marker in "victim"'s ex01_add.py, and scores ex01 only if it finds it."""
    rows = read_csv(graded_class["out"] / "grades.csv")
    assert rows["peeker"]["ex01_add"] == "0" and rows["victim"]["total"] == "10"
    outputs = [graded_class["out"] / "grades.csv", *(graded_class["out"] / "feedback").glob("*.md")]
    assert not [p.name for p in outputs if VICTIM in p.read_text(encoding="utf-8")]
    assert VICTIM not in graded_class["proc"].stdout + graded_class["proc"].stderr


def test_hostile_class_cannot_poison_the_tests_for_later_students(graded_class):
    """ "poisoner" appends a failing 100-point test and a fail-everything conftest hook to the instructor's
    tests folder: the folder is byte for byte what it was, and no later student (zz_late) loses a point."""
    before, after = graded_class["course_tests"]
    assert before and after == before
    rows = read_csv(graded_class["out"] / "grades.csv")
    assert rows["max"]["total"] == "10" and rows["zz_late"]["total"] == "10"
    everything = "".join(p.read_text(encoding="utf-8") for p in (graded_class["out"] / "feedback").glob("*.md"))
    assert "POISONED" not in everything and "test_poisoned" not in everything
    assert "sandbox violation" in (graded_class["out"] / "feedback" / "poisoner.md").read_text(encoding="utf-8")


@pytest.mark.skipif(
    not OS_SANDBOX,
    reason="the survivor runs only with an OS sandbox: without one it gets through (documented in solutions/README.md)",
)
def test_hostile_class_a_surviving_process_reaches_no_later_report(graded_class):
    """ "survivor" starts a process in a new session (no audit event) that, for 30 s, appends a failure for
    every collected test to every other grading report it can find: it dies with its pid namespace."""
    assert graded_class["survivors"] == []
    everything = "".join(p.read_text(encoding="utf-8") for p in (graded_class["out"] / "feedback").glob("*.md"))
    assert "INJECTED" not in everything
    rows = read_csv(graded_class["out"] / "grades.csv")
    assert rows["survivor"]["total"] == "10" and rows["zz_late"]["total"] == "10"


def test_in_process_forgery_is_not_contained(graded_class):
    """Documents a known hole, not a guarantee: code running in the test process can report its own failed
    tests as passed: "hooker" registers a pytest hook at import (its mul returns a + b), "patcher" wraps the
    plugin's reporting (add returns a - b), "rewriter" replaces the collected tests' bodies (greet returns
    "bye"); all three score full marks. What stops them going further (other students, points, the
    catalogue) is tested above; solutions/README.md and docs/teaching.md say so and give the high-stakes
    set-up. If this test fails, the grader learnt to contain it: update those documents."""
    rows = read_csv(graded_class["out"] / "grades.csv")
    assert (rows["hooker"]["ex02_mul"], rows["patcher"]["ex01_add"], rows["rewriter"]["ex03_greet"]) == ("3", "3", "4")
    hooker = (graded_class["out"] / "feedback" / "hooker.md").read_text(encoding="utf-8")
    assert "- PASS `test_ex02_mul.py::test_mul_ints` (2 / 2)" in hooker
    # ...but only their own verdicts: the class's maximum is unchanged. Their forged pass of the test that skips
    # itself for everyone (its data is missing) would have raised the max row to 15; it counts for no one.
    assert rows["max"]["total"] == "10"
    for student in ("patcher", "rewriter"):
        feedback = (graded_class["out"] / "feedback" / f"{student}.md").read_text(encoding="utf-8")
        assert "- SKIP `test_ex03_greet.py::test_greet_needs_data` (not counted)" in feedback
        assert "skipped itself for most of the class" in feedback


def test_hostile_class_code_to_read_by_hand_is_listed(graded_class):
    """The grader lists the submissions whose modules use what an exercise has no use for (the test process's
    internals, C calls, new processes, dir_fd): every forger is among them, no honest student is."""
    stdout = graded_class["proc"].stdout
    assert "Read by hand:" in stdout
    listed = {m[1] for m in re.finditer(r"^  (\S+): \S+\.py ", stdout.split("Read by hand:")[1], re.MULTILINE)}
    want = {
        "forger",
        "copy_lib",
        "copy_solutions",
        "escaper",
        "network",
        "skips",
        "peeker",
        "poisoner",
        "hooker",
        "patcher",
        "rewriter",
    } | ({"survivor"} if OS_SANDBOX else set())
    assert listed == want
    assert re.search(r"^  hooker: ex02_mul\.py imports gc, imports pytest$", stdout, re.MULTILINE), stdout
    # Nothing of it reaches the students' feedback.
    assert "Read by hand" not in (graded_class["out"] / "feedback" / "hooker.md").read_text(encoding="utf-8")


def test_review_findings_reads_the_source(tmp_path):
    _write(
        tmp_path,
        {
            "ex01_a": "import numpy as np\nfrom keras import ops\n\ndef f(x):\n    return ops.sum(x)\n",
            "ex02_b": "import sys\nplugin = sys.modules['moe_grade_plugin']\n",
            "ex03_c": "import os\nfd = os.open('x', os.O_RDONLY, dir_fd=3)\nf = __import__('g' + 'c')\n",
            "ex04_d": "from _pytest import runner\n",
        },
    )
    assert grade.review_findings(tmp_path) == [
        "ex02_b.py uses sys.modules, names 'moe_grade_plugin'",
        "ex03_c.py calls __import__(), opens relative to a folder descriptor (dir_fd)",
        "ex04_d.py imports _pytest",
    ]
    # The course's own stubs and references use none of it.
    for folder in (REPO / "exercises", REPO / "solutions"):
        assert grade.review_findings(folder) == [], folder


def test_copy_findings_reads_the_source(tmp_path):
    """Copy detection from the source alone: imports of moe_tf or solutions, and solutions/ paths."""
    _write(
        tmp_path,
        {
            "ex01_a": "from moe_tf.routing import top_k_gates\n",
            "ex02_b": "import moe_tf\n",
            "ex03_c": "import helper\n",
            "helper": "import importlib\nm = importlib.import_module('solutions.ex03_topk_gating')\n",
            "ex04_d": '"""A docstring may say solutions/ freely."""\nimport numpy as np\n',
            "ex05_e": "PATH = '../solutions/ex05_cv_losses.py'\n",
            "ex06_f": "from moe_tf import rng\n",
        },
    )
    found = grade.copy_findings(tmp_path)
    assert found["ex01_a"] == ["ex01_a.py imports moe_tf.routing.top_k_gates"]
    assert found["ex02_b"] == ["ex02_b.py imports moe_tf"]
    assert found["ex03_c"] == ["helper.py imports solutions.ex03_topk_gating"]
    assert "ex04_d" not in found
    assert "solutions/ folder" in found["ex05_e"][0]
    allow, grade.COPY_ALLOW = grade.COPY_ALLOW, {"ex06": ("moe_tf.rng",)}
    try:
        assert "ex06_f" not in grade.copy_findings(tmp_path)
    finally:
        grade.COPY_ALLOW = allow


def test_student_names_are_sanitised_and_reserved_ones_refused():
    assert grade.student_name("alice", set()) == ("alice", "")
    assert grade.student_name("=cmd|' /C calc'!A0", set())[0] == "_cmd____C_calc__A0"
    assert grade.student_name("max", set())[0] is None and grade.student_name("Total", set())[0] is None
    assert grade.student_name("bob", {"bob"})[0] is None
    assert len(grade.student_name("x" * 254, set())[0]) == grade.NAME_LIMIT
    assert grade.csv_cell("-1") == "'-1" and grade.csv_cell("@x") == "'@x" and grade.csv_cell("a=b") == "a=b"


# ----------------------------------------------------------------------------- hidden tests


def test_hidden_tests_show_only_names_points_and_verdicts(course, tmp_path, capsys):
    subs = tmp_path / "subs"
    _write(subs / "stub", STUBS)
    _write(subs / "good", SOLUTIONS)
    hidden_dir = course / "hidden"
    # A student who hunts for the hidden tests on disk (in the sandbox copy and at the original path)
    # and puts what it finds in a visible failure message.
    _student(
        subs,
        "snoop",
        {
            "ex02_mul": textwrap.dedent(f"""
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
    """)
        },
    )
    code, out, err = run_grade(
        capsys,
        "--tests-dir",
        course / "tests" / "exercises",
        "--hidden-tests",
        hidden_dir,
        "--submissions",
        subs,
        "--out",
        tmp_path / "out",
    )
    assert code == 0
    rows = read_csv(tmp_path / "out" / "grades.csv")
    assert rows["max"]["ex01_add"] == "5" and rows["max"]["total"] == "12"
    assert rows["good"]["total"] == "12" and rows["stub"]["total"] == "0"
    assert rows["snoop"]["ex02_mul"] == "0" and rows["snoop"]["ex01_add"] == "5"
    stub = (tmp_path / "out" / "feedback" / "stub.md").read_text(encoding="utf-8")
    assert "- FAIL `[hidden] test_ex01_extra.py::test_add_negative` (0 / 2)" in stub
    snoop = (tmp_path / "out" / "feedback" / "snoop.md").read_text(encoding="utf-8")
    # The visible tests run in a session without the hidden ones, which are out of reach; the visible message
    # is shown...
    assert "LEAK" in snoop
    everything = out + err + "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "out").rglob("*.md"))
    assert "SECRET" not in everything  # ...but never the hidden tests' source or assertion text
    assert "edge cases" not in everything


# ----------------------------------------------------------------------------- hidden tests against a hostile class

# Each leaker finds the hidden test's text with one technique. Called by the hidden test (add(-2, -3)) it
# stashes what it found wherever it can write, and passes only if it found it: a hidden PASS shows that the
# technique did see the hidden test. Called by a visible test, it fails with whatever it finds, itself or in
# the stashes of the students graded before it: a visible PASS and no SECRET text in any output show
# that nothing left the hidden session. The shared folders are tried only with the OS sandbox (without
# one, /tmp is the machine's own, and a stash there reaches a later student: documented, not contained).
LEAK_COMMON = """
import glob, inspect, linecache, os, sys

HIDDEN_DIR = {hidden!r}  # the instructor's folder, as if found
BOX_HIDDEN = os.path.join(os.path.dirname(os.environ.get("MOE_TF_EXERCISES_DIR", "/nonexistent")), "tests",
                          "exercises", "_hidden")
PLACES = [".", os.environ.get("HOME", "."), os.environ.get("TMPDIR", ".")] + {shared!r}
STASH = "stash-{marker}.txt"
KEY = "SECRET" + "_"  # how the hidden test's text starts (spelled so that this module's own text does not hold it)


def _stash(text):
    for place in PLACES:
        try:  # through dir_fd: the audit hook sees only a name relative to the working folder
            d = os.open(place, os.O_RDONLY)
            os.write(os.open(STASH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666, dir_fd=d), text.encode() + b"\\n")
        except OSError:
            pass


def _stashed():
    out = []
    for place in PLACES:
        try:
            with open(os.path.join(place, STASH), encoding="utf-8") as fh:
                out.append(fh.read())
        except OSError:
            pass
    return " | ".join(out)


def add(a, b):
    found = _find()
    if a < 0:  # the hidden test
        if KEY in found:
            _stash(found)
            return a + b
        return a - b
    leaked = found + _stashed()
    if KEY in leaked:
        raise AssertionError("LEAK " + leaked[:2000])
    return a + b
"""

LEAKERS = {
    # Modules already loaded in the process: the hidden test module's constants and cached lines.
    "leak_modules": """
def _find():
    out = []
    for name, module in list(sys.modules.items()):
        path = str(getattr(module, "__file__", "") or "")
        for value in list(vars(module).values()) if "test_" in path else []:
            code = getattr(value, "__code__", None)
            out += [c for c in getattr(code, "co_consts", ()) if isinstance(c, str)]
        out += linecache.cache.get(path, (0, 0, []))[2] if "hidden" in path else []
    return " ".join(out)
""",
    # The calling frames: sys._getframe and inspect.stack (without reading source files).
    "leak_frame": """
def _find():
    out = []
    frame = sys._getframe(1)
    while frame is not None:
        out += [c for c in frame.f_code.co_consts if isinstance(c, str)]
        frame = frame.f_back
    for info in inspect.stack(0):
        if info.frame.f_globals is not globals():  # not its own
            out += [v for v in info.frame.f_globals.values() if isinstance(v, str)]
    return " ".join(out)
""",
    # A hard link to the hidden test file, read under its new name.
    "leak_hardlink": """
def _find():
    out = []
    for i, path in enumerate(glob.glob(HIDDEN_DIR + "/*.py") + glob.glob(BOX_HIDDEN + "/*.py")):
        link = "hl%d.py" % i
        try:
            os.link(path, link)
            with open(link, encoding="utf-8") as fh:
                out.append(fh.read())
        except OSError:
            pass
    return " ".join(out)
""",
    # os.open(name, dir_fd=...) from the folder above: the audit hook resolves the names against the working
    # folder, so neither the hidden folder nor its files are seen as such.
    "leak_dirfd": """
def _find():
    out = []
    for folder in (HIDDEN_DIR, BOX_HIDDEN):
        try:
            up = os.open(os.path.dirname(folder), os.O_RDONLY)
            d = os.open(os.path.basename(folder), os.O_RDONLY, dir_fd=up)
            for name in os.listdir(d):
                out.append(os.read(os.open(name, os.O_RDONLY, dir_fd=d), 1 << 16).decode("utf-8", "replace"))
        except OSError:
            pass
    return " ".join(out)
""",
    # Graded after the others: finds nothing itself, reads their stashes.
    "zz_reader": """
def _find():
    return ""
""",
}
SHARED_PLACES = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]


@pytest.fixture(scope="module")
def hidden_class(course, tmp_path_factory):
    """A class graded with --hidden-tests, one after the other (--jobs 1: the stashes of one student's hidden
    session are there when the next student's visible session runs)."""
    root = tmp_path_factory.mktemp("hidden_class")
    subs = root / "submissions"
    shared = SHARED_PLACES if OS_SANDBOX else []
    for name, find in LEAKERS.items():
        source = textwrap.dedent(LEAK_COMMON).format(hidden=str(course / "hidden"), shared=shared, marker=MARKER)
        _student(subs, name, {"ex01_add": source + textwrap.dedent(find)})
    _student(subs, "forge_hidden", {"ex01_add": _hooker("add", "a - b")})  # in-process forgery, hidden session too
    _student(subs, "good", {})
    hard_grace, grade.HARD_GRACE_S = grade.HARD_GRACE_S, 2.0
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = grade.main(
                [
                    str(a)
                    for a in (
                        "--tests-dir",
                        course / "tests" / "exercises",
                        "--hidden-tests",
                        course / "hidden",
                        "--submissions",
                        subs,
                        "--out",
                        root / "out",
                        "--timeout",
                        "1",
                    )
                ]
            )
    finally:
        grade.HARD_GRACE_S = hard_grace
    left = [str(Path(p) / f"stash-{MARKER}.txt") for p in SHARED_PLACES]
    left = [p for p in left if os.path.exists(p)]
    for p in left:
        with contextlib.suppress(OSError):
            os.remove(p)
    return {"code": code, "out": root / "out", "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "left": left}


def test_hidden_tests_do_not_leak_from_a_hostile_class(hidden_class):
    out = hidden_class["out"]
    assert hidden_class["code"] == 0, hidden_class["stdout"] + hidden_class["stderr"]
    rows = read_csv(out / "grades.csv")
    assert rows["max"]["ex01_add"] == "5" and rows["good"]["total"] == "12"
    texts = {p.name: p.read_text(encoding="utf-8") for p in [out / "grades.csv", *(out / "feedback").glob("*.md")]}
    texts["stdout"], texts["stderr"] = hidden_class["stdout"], hidden_class["stderr"]
    assert not [name for name, text in texts.items() if "SECRET_" in text or "edge cases" in text]
    assert hidden_class["left"] == []  # no stash left in a shared folder of the machine
    for student in LEAKERS:
        feedback = texts[f"{student}.md"]
        # The visible session found neither the hidden test nor an earlier student's stash.
        assert "- PASS `test_ex01_add.py::test_add_ints` (2 / 2)" in feedback, feedback
        assert "- PASS `test_ex01_add.py::test_add_floats` (1 / 1)" in feedback, feedback
        assert "LEAK" not in feedback


@pytest.mark.skipif(not OS_SANDBOX, reason="the verdicts below are those of the OS sandbox")
def test_hidden_session_attacks_are_live(hidden_class):
    """Not vacuous: in the hidden session, sys.modules, the calling frames and dir_fd do reach the hidden test
    (its hidden verdict passes only then). A hard link is refused by the kernel there (protected_hardlinks:
    nobody owns neither the file nor write access to it), so its hidden test fails."""
    feedback = hidden_class["out"] / "feedback"
    hidden_pass = "- PASS `[hidden] test_ex01_extra.py::test_add_negative` (2 / 2)"
    for student in ("leak_modules", "leak_frame", "leak_dirfd"):
        assert hidden_pass in (feedback / f"{student}.md").read_text(encoding="utf-8"), student
    rows = read_csv(hidden_class["out"] / "grades.csv")
    assert rows["zz_reader"]["total"] == "10"  # its add(-2, -3) finds nothing: the hidden test fails


def test_in_process_forgery_reaches_the_hidden_verdicts_too(hidden_class):
    """Documents a known hole: the hidden session imports the student's module as well, so a pytest hook it
    registers forges the hidden verdicts too (add is a - b here, and scores 5 / 5). Hidden tests keep their
    text secret; they are no defence against forgery."""
    rows = read_csv(hidden_class["out"] / "grades.csv")
    assert rows["forge_hidden"]["ex01_add"] == "5"


# ----------------------------------------------------------------------------- a class of two graded side by side

CROWD = """
import threading, time

_stop = threading.Event()
_held = []


def _crowd():
    threading.stack_size(64 * 1024)
    while len(_held) < 4096:
        try:
            t = threading.Thread(target=_stop.wait, daemon=True)
            t.start()
        except RuntimeError:  # "can't start new thread": the process limit of its user is reached
            break
        _held.append(t)


def add(a, b):
    _crowd()
    time.sleep(0.4)
    return a + b


def mul(a, b):
    _crowd()
    time.sleep(0.2)
    raise AssertionError("HELD %d threads" % threading.active_count())
"""

BYSTANDER = """
import threading, time


def {name}(a, b):
    time.sleep(0.2)  # (test_mul_zero allows 0.5 s)
    out = []
    t = threading.Thread(target=lambda: out.append({op}))
    t.start()
    t.join()
    return out[0]
"""


@pytest.fixture(scope="module")
def crowded_class(course, tmp_path_factory):
    """Two students graded at the same time (--jobs 2): "crowd" holds as many threads as its user may have
    through all its tests, "bystander" starts one thread per test, as legitimate code may."""
    root = tmp_path_factory.mktemp("crowded")
    subs = root / "submissions"
    _student(subs, "crowd", {"ex01_add": CROWD, "ex02_mul": CROWD})
    ops = {"ex01_add": ("add", "a + b"), "ex02_mul": ("mul", "a * b")}
    _student(subs, "bystander", {m: BYSTANDER.format(name=n, op=o) for m, (n, o) in ops.items()})
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = grade.main(
            [
                str(a)
                for a in (
                    "--tests-dir",
                    course / "tests" / "exercises",
                    "--submissions",
                    subs,
                    "--out",
                    root / "out",
                    "--timeout",
                    "1",
                    "--jobs",
                    "2",
                )
            ]
        )
    return {"code": code, "out": root / "out", "stdout": stdout.getvalue()}


def test_a_student_cannot_use_up_the_processes_of_the_one_graded_alongside(crowded_class):
    """The process limit counts per user: with one user for every student, "crowd" left "bystander" unable
    to start a thread ("can't start new thread": 6 / 10). Each student now runs as a user id of its own."""
    assert crowded_class["code"] == 0
    rows = read_csv(crowded_class["out"] / "grades.csv")
    assert rows["bystander"]["total"] == "10", (crowded_class["out"] / "feedback" / "bystander.md").read_text()
    if OS_SANDBOX:  # the attack is live: crowd held about as many threads as its user may have
        held = re.search(r"HELD (\d+) threads", (crowded_class["out"] / "feedback" / "crowd.md").read_text())
        assert held and grade.MAX_PROCESSES - 50 < int(held[1]) <= grade.MAX_PROCESSES, held


SWARM = textwrap.dedent(f"""
    import os, sys

    CHILD = (b"b = bytearray(300 << 20)\\n"
             b"b[::4096] = b\\"\\\\x01\\" * len(range(0, len(b), 4096))\\n"  # touch every page
             b"import time\\ntime.sleep(1)\\n")

    def add(a, b):
        import _posixsubprocess  # starts processes without an audit event

        exe = os.fsencode(sys.executable)
        pids = []
        for _ in range(3):
            r, w = os.pipe()
            pids.append({_spawn('[exe, b"-I", b"-S", b"-c", CHILD]')})
        killed = 0
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
        return a + b if killed else "HELD 900 MB in three processes"
""")


def test_the_students_spawn_call_starts_a_process(tmp_path):
    """``_spawn``'s call works on this Python: the process it starts runs and writes its file."""
    import _posixsubprocess  # noqa: F401 - the name the generated source uses

    target = tmp_path / "spawned.txt"
    argv = [os.fsencode(sys.executable), b"-c", f"open({str(target)!r}, 'w').write('ran')".encode()]  # noqa: F841 (read by eval)
    r, w = os.pipe()
    try:
        pid = eval(_spawn("argv"))  # noqa: S307 - our own source, the call the hostile students make
    finally:
        os.close(r)
        os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert target.read_text() == "ran"


@pytest.fixture(scope="module")
def memory_class(course, tmp_path_factory):
    """One student whose processes together hold 900 MB, each far below the per-process limit, graded with
    a per-student memory cap of 512 MiB."""
    root = tmp_path_factory.mktemp("memory")
    _student(root / "submissions", "swarm", {"ex01_add": SWARM})
    cap, grade.STUDENT_MEMORY_MB = grade.STUDENT_MEMORY_MB, 512
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = grade.main(
                [
                    str(a)
                    for a in (
                        "--tests-dir",
                        course / "tests" / "exercises",
                        "--submissions",
                        root / "submissions",
                        "--out",
                        root / "out",
                        "--timeout",
                        "20",
                    )
                ]
            )
    finally:
        grade.STUDENT_MEMORY_MB = cap
    return {"code": code, "out": root / "out", "stdout": stdout.getvalue()}


@pytest.mark.skipif(
    not OS_SANDBOX or grade.JAIL.cgroup_root is None,
    reason="needs the unshare sandbox with a memory cgroup (root, cgroup memory controller)",
)
def test_a_student_s_processes_share_one_memory_cap(memory_class):
    """The address-space limit is per process; three processes of 300 MB each pass it. The student's
    memory cgroup (512 MiB here) counts them together: the kernel kills one, and `add` sees it."""
    assert memory_class["code"] == 0
    assert "MiB of memory per student" in memory_class["stdout"]
    rows = read_csv(memory_class["out"] / "grades.csv")
    feedback = (memory_class["out"] / "feedback" / "swarm.md").read_text()
    assert rows["swarm"]["ex01_add"] == "3", feedback
    assert not list(Path(grade.JAIL.cgroup_root).glob(f"moe-grade-{os.getpid()}-*")), "cgroups left behind"


def test_timeout_marker_and_points_kwarg():
    """A test's time limit: @pytest.mark.timeout_s(s), else points(n, timeout_s=s), else the default."""
    from moe_tf.course import _grade_plugin as plugin

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


@pytest.mark.parametrize(
    "args",
    [
        ["--submissions", "/nonexistent/moe-grade-class"],
        ["--exercises", "/nonexistent/moe-grade-ex"],
        ["--solutions", "--exercises", "."],
        ["--out", "somewhere"],
        ["--timeout", "0"],
        ["--no-such-option"],
    ],
)
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        grade.main(args)
    assert exc.value.code == 2
    assert "moe-grade: error:" in capsys.readouterr().err


def test_solutions_without_a_solutions_folder_exit_2(tmp_path, monkeypatch, capsys):
    """In a student copy (no solutions/), --solutions is refused with a message that says why."""
    (tmp_path / "tests" / "exercises").mkdir(parents=True)  # a course folder, as a student copy has, but no solutions/
    with pytest.raises(SystemExit) as exc:
        grade.main(["--course-root", str(tmp_path), "--solutions"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "moe-grade: error: --solutions: no solutions/ folder in" in err and "student copy" in err


def test_unknown_exercise_exits_2(course, capsys):
    code, _, err = run_grade(
        capsys, "--tests-dir", course / "tests" / "exercises", "--exercises", course / "solutions", "--exercise", "ex99"
    )
    assert code == 2 and "no tests matching ex99" in err


# ----------------------------------------------------------------------------- the real course (acceptance)


def _moe_grade(*args, timeout=600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("moe-grade")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moe_tf.course.grade"]
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )


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
