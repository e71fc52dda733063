"""``moe-grade``: grade the course's exercises, one learner's or a whole class's.

Usage::

    moe-grade                          # grade your exercises/ (table per exercise + total)
    moe-grade --exercise ex03 ex04     # only these exercises (prefix match: ex03, 3, ex1 ...)
    moe-grade --solutions              # grade the reference solutions/
    moe-grade --exercises DIR          # grade another copy of exercises/
    moe-grade --submissions DIR [--out OUT] [--hidden-tests HIDDEN] [--jobs 2]
                                       # a class: one sub-folder per student; writes OUT/grades.csv
                                       # and OUT/feedback/<student>.md (OUT defaults to DIR)

Each student (or the single learner) is graded by one ``python -m pytest`` subprocess on the course's
``tests/exercises`` (plus ``--hidden-tests``), loaded with the ``moe_grade_plugin`` (see
``moe_tf/_grade_plugin.py``), in a fresh temporary copy: cwd, ``HOME`` and ``TMPDIR`` inside it. The
plugin records every test's outcome and points, line by line, in a JSON-lines report outside the
copy, so whatever the student's code does (raise, loop, ``sys.exit``, ``os._exit``, print
megabytes, delete files) costs only that student the points. When the process dies or is killed
in the middle of a test, that test fails and the process is restarted for the tests not yet run
(at most ``--max-restarts`` times; an exercise that kills the process twice forfeits its remaining
tests).

Time limits: ``--timeout`` seconds per test (default 10; a test may ask for more with
``@pytest.mark.timeout_s(30)`` or ``@pytest.mark.points(5, timeout_s=30)``), enforced by an alarm in
the process and, for code that never gives the interpreter back, by the grader killing the process a
few seconds later; ``--student-timeout`` seconds per student in all (default 600).

Exit status: 0 when grading ran, whatever the score; 2 for bad arguments (including ``--solutions``
in a student copy, which has no ``solutions/``); 1 when no test could be collected at all.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = Path(__file__).with_name("_grade_plugin.py")
PLUGIN_MODULE = "moe_grade_plugin"

HARD_GRACE_S = 8.0  # the grader kills a test this long after its own time limit
STARTUP_LIMIT_S = 240.0  # importing TensorFlow and collecting the tests must take less than this
EXIT_GRACE_S = 10.0  # after the session finished, the process must exit within this
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_STUDENT_FILE_BYTES = 5 * 1024 * 1024
MSG_LIMIT = 800


# ----------------------------------------------------------------------------- data


@dataclass
class TestInfo:
    id: str
    exercise: str
    points: float
    timeout: float
    hidden: bool

    @property
    def name(self) -> str:
        """A short display name: ``test_ex03_topk_gating.py::test_shapes`` (hidden ones are marked)."""
        path, _, rest = self.id.partition("::")
        short = f"{Path(path).name}::{rest}" if rest else Path(path).name
        return f"[hidden] {short}" if self.hidden else short


@dataclass
class Outcome:
    outcome: str  # passed | failed | skipped | not run
    msg: str | None = None


@dataclass
class StudentResult:
    name: str
    results: dict[str, Outcome] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    log_tail: str = ""


class Catalogue:
    """Every graded test, in collection order (the union of what the students' runs collected)."""

    def __init__(self):
        self.tests: dict[str, TestInfo] = {}
        self.collect_errors: dict[str, str | None] = {}

    def add(self, records: list[dict]) -> None:
        for r in records:
            if r["id"] not in self.tests:
                self.tests[r["id"]] = TestInfo(r["id"], r["exercise"], r["points"], r["timeout"], r["hidden"])

    def exercises(self) -> list[str]:
        return sorted({t.exercise for t in self.tests.values()})

    def of(self, exercise: str) -> list[TestInfo]:
        return sorted((t for t in self.tests.values() if t.exercise == exercise), key=lambda t: t.hidden)


@dataclass
class Options:
    tests_dir: Path
    hidden_dir: Path | None
    exercises: list[str] | None
    timeout: float
    student_timeout: float
    max_output: int
    max_restarts: int
    deny_read: list[Path]
    keep: bool = False
    verbose: bool = False


# ----------------------------------------------------------------------------- sandbox


def _num(x: float):
    return int(x) if float(x).is_integer() else round(float(x), 2)


def student_exercises_dir(folder: Path) -> Path:
    """A student's folder holds the exercise modules directly or in an ``exercises/`` sub-folder."""
    inner = folder / "exercises"
    return inner if inner.is_dir() else folder


def _copy_files(src: Path, dst: Path, limit: int) -> None:
    """Copy the regular top-level files of ``src`` (no links, no sub-folders, none over ``limit`` bytes)."""
    dst.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        return
    for entry in sorted(src.iterdir()):
        try:
            if entry.is_symlink() or not entry.is_file() or entry.name.startswith("."):
                continue
            if entry.stat().st_size > limit:
                continue
            shutil.copyfile(entry, dst / entry.name)
        except OSError:
            continue


def _copy_tree(src: Path, dst: Path) -> None:
    # mutants/: the mutation check's wrong solutions quote lines of the references; no student sees them.
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".*", "mutants"), dirs_exist_ok=True)


def _pytest_ini() -> str:
    """The course's pytest settings that matter for grading (warning filters), as a standalone ini."""
    lines = ["[pytest]", "addopts =", "filterwarnings ="]
    try:
        import tomllib

        conf = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        filters = conf["tool"]["pytest"]["ini_options"].get("filterwarnings", [])
    except Exception:  # noqa: BLE001 - no pyproject, no filters
        filters = ["ignore::DeprecationWarning"]
    lines += [f"    {f}" for f in filters]
    return "\n".join(lines) + "\n"


def build_sandbox(run: Path, student_dir: Path | None, opts: Options) -> Path:
    """Lay out ``run/box``: the student's modules, the tests, a home and a temp folder."""
    box = run / "box"
    if student_dir is not None:
        _copy_files(student_dir, box / "exercises", MAX_STUDENT_FILE_BYTES)
    else:
        (box / "exercises").mkdir(parents=True)
    tests = box / "tests" / "exercises"
    _copy_tree(opts.tests_dir, tests)
    # The course's tests/conftest.py (options, hypothesis profile) and helpers next to it.
    parent = opts.tests_dir.parent
    for entry in parent.glob("*.py"):
        if entry.name == "conftest.py" or entry.name.startswith("_"):
            shutil.copyfile(entry, box / "tests" / entry.name)
    if opts.hidden_dir is not None:
        hidden = tests / "_hidden"
        _copy_tree(opts.hidden_dir, hidden)
        (hidden / "__init__.py").touch()
    for sub in ("home", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    (box / "pytest.ini").write_text(_pytest_ini(), encoding="utf-8")
    return box


def _env(run: Path, box: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_")) and k != "MOE_TF_EXERCISES_DIR"}
    if not env.get("MOE_TF_DATA_DIR") and not env.get("MOE_TF_CACHE_DIR"):
        # HOME and KERAS_HOME move into the sandbox: keep the learner's dataset cache readable.
        keras_home = Path(env.get("KERAS_HOME") or Path.home() / ".keras")
        cache = keras_home / "datasets" / "moe_tf"
        if (cache / "mnist.npz").is_file():  # read-only use: a download would be refused there
            env["MOE_TF_CACHE_DIR"] = str(cache)
    home, tmp = str(box / "home"), str(box / "tmp")
    env.update(
        HOME=home,
        TMPDIR=tmp,
        TMP=tmp,
        TEMP=tmp,
        KERAS_HOME=str(box / "home" / ".keras"),
        MPLCONFIGDIR=str(box / "home" / ".matplotlib"),
        XDG_CACHE_HOME=str(box / "home" / ".cache"),
        XDG_CONFIG_HOME=str(box / "home" / ".config"),
        MOE_TF_EXERCISES_DIR=str(box / "exercises"),
        MOE_GRADE_CONFIG=str(run / "config.json"),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=os.pathsep.join([str(run / "plugin")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    )
    return env


# ----------------------------------------------------------------------------- one student


class _Report:
    """Reads the JSON-lines report incrementally (a torn last line waits for the next read)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.buffer = path, 0, b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    if rc == 75:
        return "stopped after its time limit"
    if rc == 76:
        return "restarted after a fixture was interrupted"
    return f"exit status {rc}"


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def grade_student(name: str, student_dir: Path | None, opts: Options, catalogue: Catalogue,
                  collect_only: bool = False) -> StudentResult:
    """Run one student's tests in a sandboxed subprocess (restarted after crashes); never raises."""
    result = StudentResult(name)
    run = Path(tempfile.mkdtemp(prefix="moe-grade-"))
    try:
        _grade_in(run, result, student_dir, opts, catalogue, collect_only)
    except Exception as err:  # noqa: BLE001 - the grader goes on with the other students
        result.notes.append(f"grading failed: {type(err).__name__}: {err}")
    finally:
        if opts.keep:
            result.notes.append(f"sandbox kept in {run}")
        else:
            shutil.rmtree(run, ignore_errors=True)
    return result


def _grade_in(run: Path, result: StudentResult, student_dir: Path | None, opts: Options,
              catalogue: Catalogue, collect_only: bool) -> None:
    box = build_sandbox(run, student_dir, opts)
    (run / "plugin").mkdir()
    shutil.copyfile(PLUGIN_SOURCE, run / "plugin" / f"{PLUGIN_MODULE}.py")
    env = _env(run, box)
    deadline = time.monotonic() + opts.student_timeout
    collected: dict[str, dict] = {}
    crashes: dict[str, int] = {}
    cmd = [sys.executable, "-B", "-m", "pytest", str(box / "tests" / "exercises"),
           "-p", PLUGIN_MODULE, "-p", "no:cacheprovider", "-c", str(box / "pytest.ini"), "--rootdir", str(box),
           "-q", "--tb=short", "--show-capture=no", "--continue-on-collection-errors", "--color=no"]
    if collect_only:
        cmd.append("--collect-only")

    for attempt in range(opts.max_restarts + 1):
        report_path = run / f"report{attempt}.jsonl"
        log_path = run / f"output{attempt}.log"
        config = {
            "report": str(report_path),
            "allow_write": [str(box)],
            "deny_read": [str(p) for p in opts.deny_read],
            "deny_read_after_collect": [str(box / "tests" / "exercises" / "_hidden")] if opts.hidden_dir else [],
            "hidden_nodeid_prefix": "tests/exercises/_hidden/" if opts.hidden_dir else None,
            "exercises": opts.exercises,
            "skip": sorted(result.results),
            "timeout": opts.timeout,
            "max_output": opts.max_output,
            "max_file_size": MAX_FILE_BYTES,
            "student_dir": str(box / "exercises"),
            "msg_limit": MSG_LIMIT,
        }
        (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
        report = _Report(report_path)
        current: str | None = None
        current_since = 0.0
        in_call = False
        done_at: float | None = None
        killed: str | None = None
        started = time.monotonic()
        seen_collection = False
        progress = 0

        def consume(records):
            nonlocal current, current_since, done_at, seen_collection, progress, in_call
            for rec in records:
                ev = rec.get("ev")
                if ev == "collected":
                    seen_collection = True
                    for t in rec["tests"]:
                        collected.setdefault(t["id"], t)
                elif ev == "collect_error":
                    catalogue.collect_errors.setdefault(rec.get("path", "?"), rec.get("msg"))
                elif ev == "start":
                    current, current_since, in_call = rec["id"], time.monotonic(), False
                elif ev == "call" and rec.get("id") == current:
                    in_call = True
                elif ev == "result":
                    if rec.get("id") is not None:
                        result.results[rec["id"]] = Outcome(rec.get("outcome", "failed"), rec.get("msg"))
                        progress += 1
                    if rec.get("id") == current:
                        current = None
                elif ev == "done":
                    done_at = time.monotonic()

        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=box, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                while True:
                    try:
                        proc.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    consume(report.read())
                    now = time.monotonic()
                    limit = collected.get(current, {}).get("timeout", opts.timeout) if current else None
                    if current and now - current_since > limit + HARD_GRACE_S:
                        killed = f"timed out: the test took longer than its {limit:g} s time limit (process killed)"
                    elif now > deadline:
                        killed = f"not run: the student's {opts.student_timeout:g} s time limit was reached"
                    elif done_at is not None and now - done_at > EXIT_GRACE_S:
                        killed = "exit"
                    elif not seen_collection and now - started > STARTUP_LIMIT_S:
                        killed = "startup"
                    if killed:
                        _kill(proc)
                        break
            finally:
                if proc.poll() is None:
                    _kill(proc)
        consume(report.read())
        rc = proc.returncode
        if not seen_collection:
            result.log_tail = _tail(log_path)
            why = "it took too long" if killed == "startup" else _describe_exit(rc)
            result.notes.append(f"the tests could not be collected ({why})")
            break
        if current is not None:  # the process ended in the middle of a test
            if killed and killed != "exit":
                msg = killed
            else:
                msg = f"the test process ended during this test ({_describe_exit(rc)})"
            result.results[current] = Outcome("failed", msg)
            progress += 1
            ex = collected.get(current, {}).get("exercise", "?")
            crashes[ex] = crashes.get(ex, 0) + 1
            # Dying in a test's setup is dying while importing the exercise: its other tests would too.
            if crashes[ex] >= 2 or not in_call:
                why = "this exercise stopped the test process twice" if in_call else \
                    "importing this exercise stopped the test process"
                for tid, t in collected.items():
                    if t["exercise"] == ex and tid not in result.results:
                        result.results[tid] = Outcome("not run", f"not run: {why}")
        remaining = [tid for tid in collected if tid not in result.results]
        if collect_only or not remaining or progress == 0 or time.monotonic() > deadline:
            if remaining and killed and killed.startswith("not run"):
                for tid in remaining:
                    result.results[tid] = Outcome("not run", killed)
            break
        if attempt == opts.max_restarts:
            for tid in remaining:
                result.results[tid] = Outcome("not run", "not run: the test process stopped too many times")
    catalogue.add(list(collected.values()))
    if opts.verbose and result.log_tail:
        print(f"--- {result.name}: end of the test process output ---\n{result.log_tail}", file=sys.stderr)


# ----------------------------------------------------------------------------- reporting


def _outcome(result: StudentResult, test: TestInfo) -> Outcome:
    return result.results.get(test.id, Outcome("not run", "not run"))


def _tests(catalogue: Catalogue, exercise: str | None) -> list[TestInfo]:
    return list(catalogue.tests.values()) if exercise is None else catalogue.of(exercise)


def score(result: StudentResult, catalogue: Catalogue, exercise: str | None = None) -> float:
    """Points earned: the points of every passed test."""
    return sum(t.points for t in _tests(catalogue, exercise) if _outcome(result, t).outcome == "passed")


def possible(result: StudentResult, catalogue: Catalogue, exercise: str | None = None) -> float:
    """Points possible for this student: every test but those the tests themselves skipped (missing data...)."""
    return sum(t.points for t in _tests(catalogue, exercise) if _outcome(result, t).outcome != "skipped")


def _counts(result: StudentResult, tests: list[TestInfo]) -> str:
    outcomes = [_outcome(result, t).outcome for t in tests]
    passed, skipped = outcomes.count("passed"), outcomes.count("skipped")
    text = f"{passed} passed, {len(outcomes) - passed - skipped} failed"
    return text + (f", {skipped} skipped" if skipped else "")


def format_table(result: StudentResult, catalogue: Catalogue) -> str:
    rows = [("exercise", "points", "tests")]
    for ex in catalogue.exercises():
        rows.append((ex, f"{_num(score(result, catalogue, ex))} / {_num(possible(result, catalogue, ex))}",
                     _counts(result, catalogue.of(ex))))
    rows.append(("total", f"{_num(score(result, catalogue))} / {_num(possible(result, catalogue))}",
                 _counts(result, list(catalogue.tests.values()))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]

    def line(r):
        return f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}"

    rule = "-" * (sum(widths) + 4)
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:-1]), rule, line(rows[-1])])


def format_failures(result: StudentResult, catalogue: Catalogue, limit: int = 240) -> str:
    """One line per test not passed: verdict, name, points and (visible tests only) the message's start."""
    lines = []
    for t in catalogue.tests.values():
        o = _outcome(result, t)
        if o.outcome == "passed":
            continue
        msg = "" if t.hidden or not o.msg else ": " + " ".join(o.msg.split())[:limit]
        lines.append(f"  {o.outcome.upper():7} {t.name} ({_num(t.points)} pt){msg}")
    return "\n".join(lines)


def feedback_text(result: StudentResult, catalogue: Catalogue) -> str:
    """The student's feedback file (Markdown): per exercise, per test: name, points, verdict, message."""
    out = [f"# Feedback: {result.name}", "",
           f"**Total: {_num(score(result, catalogue))} / {_num(possible(result, catalogue))}**"]
    notes = [n for n in result.notes if not n.startswith("sandbox kept")]
    if notes:
        out += [""] + [f"> {n}" for n in notes]
    for ex in catalogue.exercises():
        out += ["", f"## {ex}: {_num(score(result, catalogue, ex))} / {_num(possible(result, catalogue, ex))}", ""]
        for t in catalogue.of(ex):
            o = _outcome(result, t)
            verdict = {"passed": "PASS", "skipped": "SKIP"}.get(o.outcome, "FAIL")
            earned = t.points if o.outcome == "passed" else 0
            worth = "not counted" if o.outcome == "skipped" else f"{_num(earned)} / {_num(t.points)}"
            out.append(f"- {verdict} `{t.name}` ({worth})")
            if o.outcome != "passed" and not t.hidden and o.msg:
                msg = o.msg if len(o.msg) <= MSG_LIMIT else o.msg[:MSG_LIMIT] + " … [truncated]"
                out += ["", "  ```", *("  " + ln for ln in msg.splitlines()), "  ```"]
    return "\n".join(out) + "\n"


def write_csv(path: Path, results: list[StudentResult], catalogue: Catalogue) -> None:
    exercises = catalogue.exercises()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", *exercises, "total"])
        # A test the tests skipped for every student (missing data on this machine) is not counted.
        counted = [t for t in catalogue.tests.values()
                   if not results or any(_outcome(r, t).outcome != "skipped" for r in results)]
        maxima = {e: sum(t.points for t in counted if t.exercise == e) for e in exercises}
        writer.writerow(["max", *(_num(maxima[e]) for e in exercises), _num(sum(maxima.values()))])
        for r in results:
            writer.writerow([r.name, *(_num(score(r, catalogue, e)) for e in exercises), _num(score(r, catalogue))])


# ----------------------------------------------------------------------------- CLI


def _prefixes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        v = v.strip()
        if v.isdigit():
            v = f"ex{int(v):02d}"
        out.append(v)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moe-grade",
        description="Grade the moe-tf exercises: your exercises/ by default, the references with --solutions, "
                    "or a class with --submissions.",
        epilog="Exit status: 0 when grading ran (whatever the score), 2 for bad arguments.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--exercises", metavar="DIR", type=Path,
                     help="folder of exercise modules to grade (default: the course's exercises/)")
    src.add_argument("--solutions", action="store_true", help="grade the reference solutions/")
    src.add_argument("--submissions", metavar="DIR", type=Path,
                     help="a class: each sub-folder of DIR is one student's copy of exercises/ "
                          "(DIR/<student>/exNN_*.py or DIR/<student>/exercises/exNN_*.py)")
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="with --submissions: where grades.csv and feedback/ go (default: the submissions DIR)")
    p.add_argument("--hidden-tests", metavar="DIR", type=Path,
                   help="extra test modules (EXERCISE + points, like tests/exercises) whose source and "
                        "messages are never shown: feedback lists only their names, points and pass/fail")
    p.add_argument("--exercise", metavar="EX", nargs="+",
                   help="grade only these exercises (prefix match: ex03, ex1, 3)")
    p.add_argument("--tests-dir", metavar="DIR", type=Path, default=REPO / "tests" / "exercises",
                   help="the visible test modules (default: the course's tests/exercises)")
    p.add_argument("--timeout", metavar="S", type=float, default=10.0,
                   help="default per-test time limit in seconds (default 10; tests may set their own with "
                        "@pytest.mark.timeout_s(S))")
    p.add_argument("--student-timeout", metavar="S", type=float, default=600.0,
                   help="time limit for all of one student's tests (default 600)")
    p.add_argument("--max-output", metavar="CHARS", type=int, default=1_000_000,
                   help="a test that prints more than this fails (default 1000000)")
    p.add_argument("--max-restarts", metavar="N", type=int, default=5,
                   help="restarts of a student's test process after a crash or a hard timeout (default 5)")
    p.add_argument("-j", "--jobs", metavar="N", type=int, default=1, help="students graded in parallel (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temporary grading folders (debugging)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list failed tests with their messages; show the test process output when it could not start")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.solutions and not (REPO / "solutions").is_dir():
        parser.error(f"--solutions: no solutions/ folder in {REPO}: this is a student copy of the course "
                     "(tools/student_version.py leaves the reference solutions out). Grade your own work with "
                     "plain moe-grade; the references are with your instructor.")

    def need_dir(path: Path | None, option: str) -> Path | None:
        if path is None:
            return None
        if not path.is_dir():
            parser.error(f"{option} {path}: no such directory")
        return path.resolve()

    tests_dir = need_dir(args.tests_dir, "--tests-dir")
    hidden = need_dir(args.hidden_tests, "--hidden-tests")
    submissions = need_dir(args.submissions, "--submissions")
    exercises = need_dir(args.exercises, "--exercises")
    if args.out is not None and submissions is None:
        parser.error("--out goes with --submissions")
    for name in ("timeout", "student_timeout"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.jobs < 1 or args.max_restarts < 0:
        parser.error("--jobs must be at least 1 and --max-restarts at least 0")
    if submissions is None:
        folder = exercises or (REPO / ("solutions" if args.solutions else "exercises"))
        if not folder.is_dir():
            parser.error(f"{folder}: no such directory")
    deny = [p for p in (hidden, submissions) if p is not None]
    opts = Options(tests_dir=tests_dir, hidden_dir=hidden, exercises=_prefixes(args.exercise),
                   timeout=args.timeout, student_timeout=args.student_timeout, max_output=args.max_output,
                   max_restarts=args.max_restarts, deny_read=deny, keep=args.keep, verbose=args.verbose)
    catalogue = Catalogue()

    if submissions is None:
        print(f"Grading {folder}", flush=True)
        t0 = time.monotonic()
        result = grade_student(folder.name, folder, opts, catalogue)
        if not catalogue.tests:
            return _nothing_collected(opts, result)
        print(format_table(result, catalogue))
        for note in result.notes:
            print(f"note: {note}")
        failures = format_failures(result, catalogue)
        if failures and (args.verbose or opts.exercises):
            print("\nFailed tests:\n" + failures)
        _warn_collect_errors(catalogue)
        print(f"\n({time.monotonic() - t0:.1f} s)")
        return 0

    out = (args.out or submissions).resolve()
    students = sorted(d for d in submissions.iterdir()
                      if d.is_dir() and not d.name.startswith((".", "_")) and d.resolve() != out / "feedback"
                      and d.resolve() != out)
    if not students:
        parser.error(f"--submissions {submissions}: no student sub-folders")
    print(f"Grading {len(students)} students in {submissions}", flush=True)

    def one(d: Path) -> StudentResult:
        t = time.monotonic()
        r = grade_student(d.name, student_exercises_dir(d), opts, catalogue)
        print(f"  graded {d.name} ({time.monotonic() - t:.1f} s)", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, students))
    if not catalogue.tests:
        grade_student("(collect)", None, opts, catalogue, collect_only=True)
    if not catalogue.tests:
        return _nothing_collected(opts, results[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    write_csv(out / "grades.csv", results, catalogue)
    for r in results:
        (out / "feedback" / f"{r.name}.md").write_text(feedback_text(r, catalogue), encoding="utf-8")
    width = max(len(r.name) for r in results)
    print(f"\n{'student':<{width}}  points")
    for r in results:
        extra = f"  ({'; '.join(n for n in r.notes if not n.startswith('sandbox kept'))})" if r.notes else ""
        print(f"{r.name:<{width}}  {_num(score(r, catalogue))} / {_num(possible(r, catalogue))}{extra}")
    _warn_collect_errors(catalogue)
    print(f"\nwrote {out / 'grades.csv'} and {len(results)} feedback files in {out / 'feedback'}")
    return 0


def _warn_collect_errors(catalogue: Catalogue) -> None:
    for path, msg in catalogue.collect_errors.items():
        print(f"warning: could not collect {path}" + (f": {msg.splitlines()[-1]}" if msg else ""), file=sys.stderr)


def _nothing_collected(opts: Options, result: StudentResult) -> int:
    wanted = f" matching {' '.join(opts.exercises)}" if opts.exercises else ""
    print(f"moe-grade: no tests{wanted} were collected from {opts.tests_dir}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.log_tail and opts.hidden_dir is None:
        print(result.log_tail, file=sys.stderr)
    return 2 if opts.exercises and not result.notes else 1


if __name__ == "__main__":
    sys.exit(main())
