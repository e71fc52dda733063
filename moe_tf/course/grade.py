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
``moe_tf/course/_grade_plugin.py``), in a fresh temporary copy: cwd, ``HOME`` and ``TMPDIR`` inside it. The
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

Where the course is: the tests, ``exercises/`` and ``solutions/`` live in the course's folder, which
need not be where the ``moe_tf`` package is installed (``pip install`` puts the package in
site-packages; the learner's copy of the course is a clone or a student copy). ``--course-root DIR``
names it; without it, the grader uses the checkout the package was installed from in editable mode,
else the current folder or the nearest of its parents that has ``tests/exercises/``.

Exit status: 0 when grading ran, whatever the score; 2 for bad arguments (including ``--solutions``
in a student copy, which has no ``solutions/``, and no course folder found); 1 when no test could be
collected at all.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the installed moe_tf package (site-packages, or a checkout)
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
    copied: dict[str, list[str]] = field(default_factory=dict)  # exercise: why it is a copy
    review: list[str] = field(default_factory=list)  # what in its code to read by hand (review_findings)


class Catalogue:
    """Every graded test, in collection order (the union of what the students' runs collected)."""

    def __init__(self):
        self.tests: dict[str, TestInfo] = {}
        self.collect_errors: dict[str, str | None] = {}
        self.frozen = False  # True once trusted_catalogue collected it: students' runs add nothing

    def add(self, records: list[dict]) -> None:
        if self.frozen:
            return
        for r in records:
            if r["id"] not in self.tests:
                self.tests[r["id"]] = TestInfo(r["id"], r["exercise"], r["points"], r["timeout"], r["hidden"])

    def exercises(self) -> list[str]:
        return sorted({t.exercise for t in self.tests.values()})

    def of(self, exercise: str) -> list[TestInfo]:
        return sorted((t for t in self.tests.values() if t.exercise == exercise), key=lambda t: t.hidden)


def is_course(folder: Path) -> bool:
    """Whether `folder` is a copy of the course: it has the graded tests, ``tests/exercises/``."""
    return (folder / "tests" / "exercises").is_dir()


def find_course(start: Path | None = None) -> Path | None:
    """The course folder: the checkout the package runs from, else `start` (the cwd) or its nearest parent that is one.

    Returns None when there is none (a package installed from a wheel, run outside any copy of the course).
    """
    if is_course(PACKAGE.parent):  # an editable install or a checkout on sys.path
        return PACKAGE.parent
    start = Path.cwd() if start is None else start
    for folder in (start.resolve(), *start.resolve().parents):
        if is_course(folder):
            return folder
    return None


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
    course: Path = field(default_factory=lambda: find_course() or Path.cwd())  # tests/, exercises/, pyproject.toml
    keep: bool = False
    verbose: bool = False


# ----------------------------------------------------------------------------- copied answers

# Library parts an exercise module may import, per exercise prefix ("ex14": ("moe_tf.rng",)): the exercises
# ask the learner to write what moe_tf already has, so by default an exercise imports nothing from moe_tf.
COPY_ALLOW: dict[str, tuple[str, ...]] = {}
_SOLUTIONS_PATH = re.compile(r"(?:^|[/\\])solutions(?:[/\\]|$)")
_EXERCISE_FILE = re.compile(r"^ex\d\d_\w+\.py$")


def _allowed(exercise: str, dotted: str) -> bool:
    allow = COPY_ALLOW.get(exercise.split("_", 1)[0], ()) + COPY_ALLOW.get(exercise, ())
    return any(dotted == a or dotted.startswith(a + ".") for a in allow)


def _is_course(dotted: str) -> bool:
    return dotted.split(".", 1)[0] in ("moe_tf", "solutions")


def _scan_module(source: str) -> tuple[list[str], set[str]]:
    """``(findings, imported names)`` of one module, from its syntax tree (nothing is run)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return [], set()
    findings: list[tuple[str, str]] = []  # (dotted name, what)
    imported: set[str] = set()
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported.add(alias.name.split(".")[0])
                if _is_course(alias.name):
                    findings.append((alias.name, f"imports {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
            if _is_course(node.module):
                for alias in node.names:
                    dotted = f"{node.module}.{alias.name}"
                    findings.append((dotted, f"imports {dotted}"))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if fname in ("__import__", "import_module") and _is_course(node.args[0].value):
                findings.append((node.args[0].value, f"imports {node.args[0].value}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if _SOLUTIONS_PATH.search(node.value):
                findings.append(("solutions", f"refers to a solutions/ folder ({node.value[:80]!r})"))
    return findings, imported


def copy_findings(folder: Path) -> dict[str, list[str]]:
    """``{exercise: [reason, ...]}`` for the exercise modules in ``folder`` that use the course's answers.

    An exercise module (or a sibling module it imports) that imports ``moe_tf`` (the course's library:
    it holds what the exercises ask the learner to write) beyond ``COPY_ALLOW``, imports ``solutions``
    or names a ``solutions/`` folder in a string is a copy. The check reads the source only; the test
    process checks the loaded module as well (``_grade_plugin``).
    """
    modules: dict[str, tuple[list, set]] = {}
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        try:
            modules[path.stem] = _scan_module(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    out: dict[str, list[str]] = {}
    for stem in modules:
        if not _EXERCISE_FILE.match(stem + ".py"):
            continue
        reasons, seen, todo = [], {stem}, [stem]
        while todo:
            name = todo.pop()
            found, imported = modules[name]
            where = f"{name}.py"
            reasons += [f"{where} {what}" for dotted, what in found if not _allowed(stem, dotted)]
            for dep in sorted(imported & set(modules) - seen):
                seen.add(dep)
                todo.append(dep)
        if reasons:
            out[stem] = list(dict.fromkeys(reasons))
    return out


# ----------------------------------------------------------------------------- code to read by hand

# What an exercise module has no use for (neither the stubs nor the references use any of it): the test
# process's internals (pytest, its hooks, the grader's plugin, frames, the garbage collector), C calls, new
# processes and descriptors relative to a folder. In-process forgery, which the grader cannot contain, and most
# attempts at the sandbox go through it; moe-grade lists the submissions that use it, to be read by hand.
REVIEW_MODULES = (
    "pytest",
    "_pytest",
    "pluggy",
    "gc",
    "ctypes",
    "_ctypes",
    "cffi",
    "_posixsubprocess",
    "subprocess",
    "multiprocessing",
    "inspect",
    "importlib",
    "builtins",
    "signal",
    "socket",
)
REVIEW_ATTRIBUTES = (
    "_getframe",
    "f_back",
    "f_globals",
    "f_locals",
    "f_code",
    "__subclasses__",
    "__globals__",
    "__builtins__",
    "fork_exec",
)
REVIEW_CALLS = ("__import__", "exec", "eval", "compile")
REVIEW_STRINGS = ("moe_grade_plugin", "/proc/")


def _review_module(source: str) -> list[str]:
    """What in one module's source an exercise has no use for (nothing is run)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"imports {a.name}" for a in node.names if a.name.split(".")[0] in REVIEW_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in REVIEW_MODULES:
            found.append(f"imports {node.module}")
        elif isinstance(node, ast.Attribute):
            if node.attr in REVIEW_ATTRIBUTES:
                found.append(f"uses .{node.attr}")
            elif node.attr == "modules" and isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append("uses sys.modules")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in REVIEW_CALLS:
            found.append(f"calls {node.func.id}()")
        elif isinstance(node, ast.keyword) and node.arg == "dir_fd":
            found.append("opens relative to a folder descriptor (dir_fd)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"names {s!r}" for s in REVIEW_STRINGS if s in node.value]
    return list(dict.fromkeys(found))


def review_findings(folder: Path) -> list[str]:
    """``["ex03_topk_gating.py imports gc", ...]``: what in a submission's modules to read by hand."""
    out = []
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        try:
            found = _review_module(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if found:
            out.append(f"{path.name} " + ", ".join(found))
    return out


def copy_message(reasons: list[str]) -> str:
    return (
        "copied: " + "; ".join(reasons) + ". An exercise must be your own code: it may not use the course's "
        "library (moe_tf) or the reference solutions, so this exercise scores 0."
    )


# ----------------------------------------------------------------------------- sandbox


def _num(x: float):
    return int(x) if float(x).is_integer() else round(float(x), 2)


def student_exercises_dir(folder: Path) -> Path:
    """A student's folder holds the exercise modules directly or in an ``exercises/`` sub-folder."""
    inner = folder / "exercises"
    return inner if inner.is_dir() and not inner.is_symlink() else folder


def _copy_files(src: Path, dst: Path, limit: int) -> None:
    """Copy the regular top-level files of ``src`` (no links, no sub-folders, none over ``limit`` bytes)."""
    dst.mkdir(parents=True, exist_ok=True)
    if not src.is_dir() or src.is_symlink():
        return
    for entry in sorted(src.iterdir()):
        try:
            if entry.is_symlink() or not entry.is_file() or entry.name.startswith("."):
                continue
            st = entry.stat()
            if st.st_size > limit:
                continue
            # O_NOFOLLOW: a file swapped for a link after the check is not followed.
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fin, open(dst / entry.name, "wb") as fout:
                fout.write(fin.read(limit + 1)[:limit])
        except OSError:
            continue


def _copy_tree(src: Path, dst: Path) -> None:
    # mutants/: the mutation check's wrong solutions quote lines of the references; no student sees them.
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".*", "mutants"), dirs_exist_ok=True)


def course_test_helpers(folder: Path) -> list[Path]:
    """The modules the exercise tests need from their parent folder: its ``conftest.py`` and ``_*.py`` helpers."""
    return [entry for entry in sorted(folder.glob("*.py")) if entry.name == "conftest.py" or entry.name.startswith("_")]


def _pytest_ini(course: Path) -> str:
    """The course's pytest settings that matter for grading (warning filters), as a standalone ini."""
    lines = ["[pytest]", "addopts =", "filterwarnings ="]
    try:
        import tomllib

        conf = tomllib.loads((course / "pyproject.toml").read_text(encoding="utf-8"))
        filters = conf["tool"]["pytest"]["ini_options"].get("filterwarnings", [])
    except Exception:  # noqa: BLE001 - no pyproject, no filters
        filters = ["ignore::DeprecationWarning"]
    lines += [f"    {f}" for f in filters]
    return "\n".join(lines) + "\n"


def build_sandbox(run: Path, student_dir: Path | None, opts: Options, part: str = "all") -> Path:
    """Lay out ``run/box`` afresh: the student's modules, the tests, a working folder, a home, a temp folder.

    ``student_dir`` is the run's private copy of the submission. ``part``: ``all`` (visible and hidden
    tests), ``visible`` or ``hidden`` (only the hidden tests, with the harness). Rebuilt before every
    attempt, so what a crashed attempt planted (an edited conftest.py, a pytest.py) is gone.
    """
    box = run / "box"
    if box.exists():
        shutil.rmtree(box)
    box.mkdir(parents=True)
    if student_dir is not None:
        _copy_files(student_dir, box / "exercises", MAX_STUDENT_FILE_BYTES)
    else:
        (box / "exercises").mkdir(parents=True)
    tests = box / "tests" / "exercises"
    if part == "hidden":
        tests.mkdir(parents=True)
        shutil.copyfile(opts.tests_dir / "conftest.py", tests / "conftest.py")
    else:
        _copy_tree(opts.tests_dir, tests)
    # The course's tests/conftest.py (options, hypothesis profile) and helpers next to it.
    for entry in course_test_helpers(opts.tests_dir.parent):
        shutil.copyfile(entry, box / "tests" / entry.name)
    if opts.hidden_dir is not None and part != "visible":
        hidden = tests / "_hidden"
        _copy_tree(opts.hidden_dir, hidden)
        (hidden / "__init__.py").touch()
    for sub in ("home", "tmp", "work"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    (box / "pytest.ini").write_text(_pytest_ini(opts.course), encoding="utf-8")
    uid = JAIL.uid_for(run)
    if uid is not None:  # the student runs as a user of its own: only work/, home/ and tmp/ are theirs
        for sub in ("home", "tmp", "work"):
            os.chown(box / sub, uid, uid)
            os.chmod(box / sub, 0o700)
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


# ----------------------------------------------------------------------------- the OS sandbox

JAIL_SCRIPT = Path(__file__).with_name("_grade_jail.py")
MEMORY_LIMIT_MB = 6144  # address space of a student's test process (TensorFlow reserves about 1 GB)
MAX_PROCESSES = 1024  # processes and threads of a student's user (TensorFlow starts many threads)
# A student's process runs as a user id of its own, no account's: UID_BASE + a slot per grader process (its
# pid), + the student's slot among those graded at the same time. The process limit counts per user, so
# one student holding all its processes and threads leaves none fewer for the student graded alongside.
UID_BASE = 2_000_000_000
UID_SLOTS = 64
# All the processes of one student together (a memory cgroup of its own, where the kernel offers one to root):
# the address-space limit above is per process, and a student may start many.
STUDENT_MEMORY_MB = 6144
CGROUP_MOUNTS = {"memory": "/sys/fs/cgroup/memory", "": "/sys/fs/cgroup"}  # cgroup v1's memory controller; v2


def _cgroup_roots() -> list[str]:
    """Where to make the students' memory cgroups: inside the grader's own (so a container's limit still
    holds), cgroup v1's memory controller first, then cgroup v2."""
    roots = []
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return roots
    for controller, mount in CGROUP_MOUNTS.items():
        for line in lines:
            _, names, path = line.split(":", 2)
            if controller in names.split(","):  # "" only in cgroup v2's line, "0::/path"
                roots.append(os.path.normpath(mount + path))
                break
    return roots


def _probe(cmd: list[str]) -> bool:
    try:
        return (
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=20,
                check=False,
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def _cgroup_limit_file(folder: str) -> str | None:
    """The memory-limit file of a cgroup folder: ``memory.limit_in_bytes`` (v1) or ``memory.max`` (v2)."""
    for name in ("memory.limit_in_bytes", "memory.max"):
        if os.path.exists(os.path.join(folder, name)):
            return name
    return None


def _make_cgroup(folder: str) -> bool:
    """Makes a memory cgroup capped at ``STUDENT_MEMORY_MB``; False (and nothing left) where that fails."""
    try:
        os.mkdir(folder)
    except OSError:
        return False
    limit = _cgroup_limit_file(folder)  # None: not a cgroup, or cgroup v2 without the memory controller for it
    try:
        if limit is not None:
            with open(os.path.join(folder, limit), "w") as fh:
                fh.write(str(STUDENT_MEMORY_MB * 1024 * 1024))
            return True
    except OSError:
        pass
    _rmdir_cgroup(folder)
    return False


def _rmdir_cgroup(folder: str) -> None:
    """Removes an emptied cgroup; its processes may take a moment to leave it after the kill."""
    for _ in range(40):
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


class Jail:
    """How a student's test process is contained: ``bwrap``, ``unshare`` (as root) or ``none`` (audit hook only)."""

    def __init__(self):
        self.kind: str | None = None
        self.uid: int | None = None  # the first user id of this grader's range (unshare), else None
        self.why = ""
        self.cgroup_root: str | None = None  # where per-student memory cgroups are made (unshare, as root)
        self.cgroup_why = ""
        self._slots: dict[str, int] = {}  # grading folder: slot, while its student is graded
        self._cgroups: dict[str, str] = {}  # grading folder: its current cgroup
        self._attempts = itertools.count()
        self._lock = threading.Lock()

    def _detect_cgroup(self) -> None:
        """A memory cgroup per student, if root may make one here: probed by making (and removing) one."""
        for root in _cgroup_roots():
            probe = os.path.join(root, f"moe-grade-probe-{os.getpid()}")
            if os.path.isdir(root) and os.access(root, os.W_OK) and _make_cgroup(probe):
                _rmdir_cgroup(probe)
                self.cgroup_root = root
                self.cgroup_why = f"{STUDENT_MEMORY_MB} MiB of memory per student, all its processes together"
                return
        self.cgroup_why = (
            f"memory limited per process only ({MEMORY_LIMIT_MB} MiB of address space each): no memory "
            "cgroup could be made here"
        )

    def cgroup_for(self, run: Path) -> str | None:
        """A fresh memory cgroup for the next attempt of the student graded in ``run``; its ``cgroup.procs``."""
        if self.cgroup_root is None:
            return None
        self.release_cgroup(run)
        folder = os.path.join(self.cgroup_root, f"moe-grade-{os.getpid()}-{next(self._attempts)}")
        if not _make_cgroup(folder):
            return None
        with self._lock:
            self._cgroups[str(run)] = folder
        return os.path.join(folder, "cgroup.procs")

    def release_cgroup(self, run: Path) -> None:
        with self._lock:
            folder = self._cgroups.pop(str(run), None)
        if folder is not None:
            _rmdir_cgroup(folder)

    def uid_for(self, run: Path) -> int | None:
        """The user id the student graded in ``run`` runs as: free among the students graded now."""
        if self.uid is None:
            return None
        with self._lock:
            if str(run) not in self._slots:
                used = set(self._slots.values())
                self._slots[str(run)] = next(i for i in itertools.count() if i not in used)
            return self.uid + self._slots[str(run)]

    def release(self, run: Path) -> None:
        self.release_cgroup(run)
        with self._lock:
            self._slots.pop(str(run), None)

    def detect(self) -> str:
        if self.kind is not None:
            return self.kind
        forced = os.environ.get("MOE_GRADE_SANDBOX", "")
        bwrap, unshare = shutil.which("bwrap"), shutil.which("unshare")
        # As root, unshare first: only it gives each student a user (and a process limit) of its own.
        if (
            forced in ("", "unshare")
            and unshare
            and hasattr(os, "geteuid")
            and os.geteuid() == 0
            and _probe(
                [
                    unshare,
                    "--mount",
                    "--net",
                    "--pid",
                    "--ipc",
                    "--uts",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                    "true",
                ]
            )
        ):
            self.kind, self.uid = "unshare", UID_BASE + (os.getpid() % 1_000_000) * UID_SLOTS
            self._detect_cgroup()
            self.why = (
                f"unshare namespaces ({unshare}): a user id of its own per student (no account), no "
                "network, the filesystem read-only but for its box, private /tmp and /dev/shm, its own pid "
                f"namespace; {self.cgroup_why}"
            )
        elif (
            forced in ("", "bwrap")
            and bwrap
            and _probe([bwrap, "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"])
        ):
            self.kind, self.why = "bwrap", f"bubblewrap ({bwrap})"
        else:
            self.kind = "none"
            self.why = (
                "NO OS SANDBOX: neither bubblewrap (bwrap) nor unshare as root is usable here, so students "
                "are contained only by an audit hook in their own process (no network, filesystem or "
                "memory isolation beyond it); grade untrusted code in a container or a throw-away VM"
            )
        return self.kind

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": MEMORY_LIMIT_MB * 1024 * 1024,
            "RLIMIT_CORE": 0,
            "RLIMIT_NOFILE": 4096,
            "RLIMIT_FSIZE": MAX_FILE_BYTES,
            **({"RLIMIT_NPROC": MAX_PROCESSES} if self.uid is not None else {}),
        }

    def preexec(self):
        limits = self.rlimits()

        def apply():
            import resource

            for name, value in limits.items():
                try:
                    resource.setrlimit(getattr(resource, name), (value, value))
                except (ValueError, OSError):
                    pass

        return apply

    def wrap(self, cmd: list[str], run: Path, box: Path, hide: list[Path], course: Path) -> list[str]:
        kind = self.detect()
        cwd = str(box / "work")
        if kind == "unshare":
            plan = {
                "argv": cmd,
                "cwd": cwd,
                "rlimits": self.rlimits(),
                "uid": self.uid_for(run),
                "overlays": _overlays(run, hide, course),
                "writable": [str(box / d) for d in ("work", "home", "tmp")],
                "cgroup_procs": self.cgroup_for(run),
            }
            path = run / "jail.json"
            path.write_text(json.dumps(plan), encoding="utf-8")
            os.chmod(path, 0o600)
            return [
                shutil.which("unshare"),
                "--mount",
                "--net",
                "--pid",
                "--ipc",
                "--uts",
                "--fork",
                "--kill-child",
                "--mount-proc",
                sys.executable,
                "-I",
                "-S",
                str(JAIL_SCRIPT),
                str(path),
            ]
        if kind == "bwrap":
            args = [
                shutil.which("bwrap"),
                "--die-with-parent",
                "--unshare-all",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/var/tmp",
                "--tmpfs",
                "/dev/shm",
            ]
            for p in hide:
                if p.is_dir():
                    args += ["--tmpfs", str(p)]
            args += ["--ro-bind", str(run), str(run)]
            for sub in ("work", "home", "tmp"):
                args += ["--bind", str(box / sub), str(box / sub)]
            return [*args, "--chdir", cwd, *cmd]
        return cmd


JAIL = Jail()


def _needed_paths(course: Path) -> list[str]:
    """What the test process must read: Python, the virtual environment, the package, the course, the datasets."""
    paths = {sys.base_prefix, sys.prefix, str(PACKAGE), str(course), os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    for var in ("MOE_TF_DATA_DIR", "MOE_TF_CACHE_DIR"):
        if os.environ.get(var):
            paths.add(os.environ[var])
    keras_cache = Path.home() / ".keras" / "datasets" / "moe_tf"
    if keras_cache.is_dir():
        paths.add(str(keras_cache))
    return sorted({os.path.realpath(p) for p in paths})


def _overlays(run: Path, hide: list[Path], course: Path) -> list:
    """``[target, keep, writable]`` mounts of the unshare plan (see ``_grade_jail``)."""
    run = os.path.realpath(run)
    needed = [*_needed_paths(course), run]
    out: dict[str, list] = {}
    for t in ("/tmp", "/var/tmp", "/dev/shm"):
        out[t] = [t, [], True]
    # A folder others may not enter (/root holding pyenv's Python): an empty tmpfs over it, the paths needed bound back.
    for p in needed:
        parts = p.split("/")
        for i in range(2, len(parts)):
            anc = "/".join(parts[:i])
            try:
                if not os.stat(anc).st_mode & 0o001:
                    out.setdefault(anc, [anc, [], False])
                    break
            except OSError:
                break
    for p in hide:
        real = os.path.realpath(p)
        if os.path.isdir(real):
            out.setdefault(real, [real, [], False])
    for target, keep, _ in out.values():
        for p in needed:
            if p.startswith(target + "/") and not any(p.startswith(k + "/") for k in keep):
                keep.append(p)
    return list(out.values())


# ----------------------------------------------------------------------------- one student


class _Report:
    """Reads the JSON-lines report incrementally (a torn last line waits for the next read)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.buffer = path, 0, b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(64 * 1024 * 1024)
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        records = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
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


def grade_student(
    name: str, student_dir: Path | None, opts: Options, catalogue: Catalogue, collect_only: bool = False
) -> StudentResult:
    """Run one student's tests in a sandboxed subprocess (restarted after crashes); never raises.

    With a frozen ``catalogue`` (``trusted_catalogue``) the student's run can only report verdicts of the
    catalogue's tests, with the catalogue's points and time limits; otherwise (a learner grading their
    own work, the mutation check) the catalogue learns the tests from this run.
    """
    result = StudentResult(name)
    run = Path(tempfile.mkdtemp(prefix="moe-grade-"))
    try:
        if opts.hidden_dir is not None and not collect_only and not catalogue.frozen:
            trusted_catalogue(opts, catalogue)
        _grade_in(run, result, student_dir, opts, catalogue, collect_only)
    except Exception as err:  # noqa: BLE001 - the grader goes on with the other students
        result.notes.append(f"grading failed: {type(err).__name__}: {err}")
    finally:
        JAIL.release(run)
        if opts.keep:
            result.notes.append(f"sandbox kept in {run}")
        else:
            shutil.rmtree(run, ignore_errors=True)
    return result


def trusted_catalogue(opts: Options, catalogue: Catalogue) -> StudentResult:
    """Collect the tests once, with no student code in the box, and freeze the catalogue."""
    result = grade_student("(collect)", None, opts, catalogue, collect_only=True)
    catalogue.frozen = True
    return result


_OUTCOMES = ("passed", "failed", "skipped")


def _grade_in(
    run: Path, result: StudentResult, student_dir: Path | None, opts: Options, catalogue: Catalogue, collect_only: bool
) -> None:
    JAIL.detect()
    os.chmod(run, 0o711)
    (run / "plugin").mkdir()
    shutil.copyfile(PLUGIN_SOURCE, run / "plugin" / f"{PLUGIN_MODULE}.py")
    private = None
    if student_dir is not None:  # the run's private copy: what the student's folder holds now
        private = run / "submission"
        _copy_files(student_dir, private, MAX_STUDENT_FILE_BYTES)
        os.chmod(private, 0o700)
    deadline = time.monotonic() + opts.student_timeout
    collected: dict[str, dict] = {}
    if collect_only or not opts.hidden_dir:
        parts = ["all"]
    else:
        parts = ["visible", "hidden"]
    for part in parts:
        _grade_part(run, result, private, opts, catalogue, collect_only, part, collected, deadline)
        if any("could not be collected" in n for n in result.notes):
            break
    copied = copy_findings(private) if private is not None else {}
    for ex, reasons in result.copied.items():  # what the test process saw in the loaded module
        if private is not None and (private / f"{ex}.py").is_file():
            copied.setdefault(ex, []).extend(r for r in reasons if r not in copied.get(ex, []))
    result.copied = copied
    for ex, reasons in sorted(copied.items()):
        msg = copy_message(reasons)
        hit = False
        for tid, t in collected.items():
            if t["exercise"] == ex and result.results.get(tid, Outcome("not run")).outcome != "skipped":
                result.results[tid] = Outcome("failed", msg)
                hit = True
        if hit:
            result.notes.append(f"{ex}: {msg}")
    if not catalogue.frozen:
        catalogue.add(list(collected.values()))
    if opts.verbose and result.log_tail:
        print(f"--- {result.name}: end of the test process output ---\n{result.log_tail}", file=sys.stderr)


def _valid_test(t) -> bool:
    return (
        isinstance(t, dict)
        and isinstance(t.get("id"), str)
        and isinstance(t.get("exercise"), str)
        and isinstance(t.get("points"), (int, float))
        and not isinstance(t.get("points"), bool)
        and isinstance(t.get("timeout"), (int, float))
        and isinstance(t.get("hidden"), bool)
        and 0 <= t["points"] < 1e6
        and 0 < t["timeout"] < 1e6
    )


def _grade_part(
    run: Path,
    result: StudentResult,
    private: Path | None,
    opts: Options,
    catalogue: Catalogue,
    collect_only: bool,
    part: str,
    collected: dict[str, dict],
    deadline: float,
) -> None:
    frozen = catalogue.frozen
    hidden_part = part == "hidden"
    known: dict[str, dict] = {}
    if frozen:
        known = {
            t.id: {"id": t.id, "exercise": t.exercise, "points": t.points, "timeout": t.timeout, "hidden": t.hidden}
            for t in catalogue.tests.values()
            if part == "all" or t.hidden == hidden_part
        }
        collected.update(known)
    crashes: dict[str, int] = {}
    part_ids = set(known)
    box = run / "box"
    target = box / "tests" / "exercises" / ("_hidden" if hidden_part else "")
    hide = [p for p in [*opts.deny_read, opts.course / "solutions", Path(tempfile.gettempdir())] if p is not None]
    cmd = [
        sys.executable,
        "-P",
        "-B",
        "-m",
        "pytest",
        str(target).rstrip("/"),
        "-p",
        PLUGIN_MODULE,
        "-p",
        "no:cacheprovider",
        "-c",
        str(box / "pytest.ini"),
        "--rootdir",
        str(box),
        "-q",
        "--tb=short",
        "--show-capture=no",
        "--continue-on-collection-errors",
        "--color=no",
    ]
    if collect_only:
        cmd.append("--collect-only")
    for attempt in range(opts.max_restarts + 1):
        box = build_sandbox(run, private, opts, part)
        env = _env(run, box)
        report_path = run / f"report-{part}{attempt}.jsonl"
        log_path = run / f"output-{part}{attempt}.log"
        report_fd = os.open(report_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        os.set_inheritable(report_fd, True)
        config = {
            "report_fd": report_fd,
            "allow_write": [str(box)],
            "deny_read": [str(p) for p in opts.deny_read] + [str(opts.course / "solutions")],
            "deny_read_other_runs": [os.path.dirname(os.path.realpath(run)), os.path.realpath(run)],
            "deny_read_after_collect": [str(box / "tests" / "exercises" / "_hidden")] if opts.hidden_dir else [],
            "hidden_nodeid_prefix": "tests/exercises/_hidden/" if opts.hidden_dir else None,
            "exercises": opts.exercises,
            "skip": sorted(result.results),
            "timeout": opts.timeout,
            "max_output": opts.max_output,
            "max_file_size": MAX_FILE_BYTES,
            "student_dir": str(box / "exercises"),
            "msg_limit": MSG_LIMIT,
            "copy_roots": [str(PACKAGE), str(opts.course / "solutions")],
            "copy_allow": {k: list(v) for k, v in COPY_ALLOW.items()},
        }
        (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
        os.chmod(run / "config.json", 0o644)
        report = _Report(report_path)
        state = {"current": None, "since": 0.0, "in_call": False, "done_at": None, "seen": False, "progress": 0}
        killed: str | None = None
        started = time.monotonic()

        def consume(records):
            for rec in records:
                try:
                    _consume_one(rec)
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue  # a malformed record: ignored

        def _consume_one(rec):
            ev = rec.get("ev")
            if ev == "collected":
                state["seen"] = True
                if not frozen:
                    for t in rec["tests"]:
                        if _valid_test(t):
                            collected.setdefault(t["id"], t)
                            part_ids.add(t["id"])
            elif ev == "collect_error":
                path = rec.get("path")
                if isinstance(path, str) and not hidden_part and not frozen:
                    msg = rec.get("msg")
                    catalogue.collect_errors.setdefault(path, msg if isinstance(msg, str) else None)
            elif ev == "start":
                if rec["id"] in part_ids:
                    state.update(current=rec["id"], since=time.monotonic(), in_call=False)
            elif ev == "call" and rec.get("id") == state["current"]:
                state["in_call"] = True
            elif ev == "result":
                tid = rec.get("id")
                if tid in part_ids and rec.get("outcome") in _OUTCOMES:
                    msg = rec.get("msg")
                    msg = msg[: MSG_LIMIT * 2] if isinstance(msg, str) and not hidden_part else None
                    if tid not in result.results:
                        state["progress"] += 1
                    result.results[tid] = Outcome(rec["outcome"], msg)
                if tid is not None and tid == state["current"]:
                    state["current"] = None
            elif ev == "copied" and not hidden_part:
                ex, what = rec.get("exercise"), rec.get("what")
                if isinstance(ex, str) and isinstance(what, list) and ex in {t["exercise"] for t in collected.values()}:
                    reasons = result.copied.setdefault(ex, [])
                    reasons += [f"the loaded module holds {w[:200]}" for w in what[:10] if isinstance(w, str)]
            elif ev == "done":
                state["done_at"] = time.monotonic()

        jail_cmd = JAIL.wrap(cmd, run, box, hide, opts.course)
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    jail_cmd,
                    cwd=box / "work",
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(report_fd,),
                    preexec_fn=JAIL.preexec() if JAIL.kind != "unshare" else None,
                )
        finally:
            os.close(report_fd)
        try:
            while True:
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    pass
                consume(report.read())
                now = time.monotonic()
                current = state["current"]
                limit = collected.get(current, {}).get("timeout", opts.timeout) if current else None
                if current and now - state["since"] > limit + HARD_GRACE_S:
                    killed = f"timed out: the test took longer than its {limit:g} s time limit (process killed)"
                elif now > deadline:
                    killed = f"not run: the student's {opts.student_timeout:g} s time limit was reached"
                elif state["done_at"] is not None and now - state["done_at"] > EXIT_GRACE_S:
                    killed = "exit"
                elif not state["seen"] and now - started > STARTUP_LIMIT_S:
                    killed = "startup"
                if killed:
                    break
        finally:
            _kill(proc)  # every attempt: the whole process group, whatever the student started
        consume(report.read())
        rc = proc.returncode
        current, in_call = state["current"], state["in_call"]
        if not state["seen"]:
            if not hidden_part:
                result.log_tail = _tail(log_path)
            why = "it took too long" if killed == "startup" else _describe_exit(rc)
            result.notes.append(f"the {'hidden ' if hidden_part else ''}tests could not be collected ({why})")
            for tid in part_ids:
                result.results.setdefault(tid, Outcome("not run", "not run: the tests could not be collected"))
            break
        if current is not None:  # the process ended in the middle of a test
            if killed and killed != "exit":
                msg = killed
            else:
                msg = f"the test process ended during this test ({_describe_exit(rc)})"
            result.results[current] = Outcome("failed", msg)
            state["progress"] += 1
            ex = collected.get(current, {}).get("exercise", "?")
            crashes[ex] = crashes.get(ex, 0) + 1
            # Dying in a test's setup is dying while importing the exercise: its other tests would too.
            if crashes[ex] >= 2 or not in_call:
                why = (
                    "this exercise stopped the test process twice"
                    if in_call
                    else "importing this exercise stopped the test process"
                )
                for tid in part_ids:
                    if collected[tid]["exercise"] == ex and tid not in result.results:
                        result.results[tid] = Outcome("not run", f"not run: {why}")
        remaining = [tid for tid in collected if tid in part_ids and tid not in result.results]
        if collect_only or not remaining or state["progress"] == 0 or time.monotonic() > deadline:
            if remaining and killed and killed.startswith("not run"):
                for tid in remaining:
                    result.results[tid] = Outcome("not run", killed)
            break
        if attempt == opts.max_restarts:
            for tid in remaining:
                result.results[tid] = Outcome("not run", "not run: the test process stopped too many times")


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
        rows.append(
            (
                ex,
                f"{_num(score(result, catalogue, ex))} / {_num(possible(result, catalogue, ex))}",
                _counts(result, catalogue.of(ex)),
            )
        )
    rows.append(
        (
            "total",
            f"{_num(score(result, catalogue))} / {_num(possible(result, catalogue))}",
            _counts(result, list(catalogue.tests.values())),
        )
    )
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
    out = [
        f"# Feedback: {result.name}",
        "",
        f"**Total: {_num(score(result, catalogue))} / {_num(possible(result, catalogue))}**",
    ]
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


def class_skips(results: list[StudentResult], catalogue: Catalogue) -> None:
    """A test that skipped itself for at least half of the graded class counts for no one.

    Such a skip is the machine's doing (the test's data is missing here), not the student's: a student's own
    ``pytest.skip`` fails the test. A run that passed it while most of the class skipped it forged the verdict
    (code in the test process can), and would raise the ``max`` row for everyone: it is recorded as skipped.
    """
    graded = [r for r in results if r.results]
    for t in catalogue.tests.values():
        skipped = [r for r in graded if _outcome(r, t).outcome == "skipped"]
        if not skipped or 2 * len(skipped) < len(graded):
            continue
        why = "the test skipped itself for most of the class, so it counts for no one"
        msg = skipped[0].results[t.id].msg
        for r in graded:
            if _outcome(r, t).outcome != "skipped":
                r.results[t.id] = Outcome("skipped", f"{why}: {msg}" if msg and not t.hidden else why)


def write_csv(path: Path, results: list[StudentResult], catalogue: Catalogue) -> None:
    exercises = catalogue.exercises()
    fh = io.StringIO()
    writer = csv.writer(fh)
    writer.writerow(["student", *(csv_cell(e) for e in exercises), "total"])
    # A test the tests skipped for every student (missing data on this machine) is not counted.
    graded = [r for r in results if r.results] or results  # a refused submission ran no test
    counted = [
        t for t in catalogue.tests.values() if not graded or any(_outcome(r, t).outcome != "skipped" for r in graded)
    ]
    maxima = {e: sum(t.points for t in counted if t.exercise == e) for e in exercises}
    writer.writerow(["max", *(_num(maxima[e]) for e in exercises), _num(sum(maxima.values()))])
    for r in results:
        writer.writerow(
            [csv_cell(r.name), *(_num(score(r, catalogue, e)) for e in exercises), _num(score(r, catalogue))]
        )
    write_atomic(path, fh.getvalue())


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
        epilog="Exit status: 0 when grading ran (whatever the score), 2 for bad arguments.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--exercises",
        metavar="DIR",
        type=Path,
        help="folder of exercise modules to grade (default: the course's exercises/)",
    )
    src.add_argument("--solutions", action="store_true", help="grade the reference solutions/")
    src.add_argument(
        "--submissions",
        metavar="DIR",
        type=Path,
        help="a class: each sub-folder of DIR is one student's copy of exercises/ "
        "(DIR/<student>/exNN_*.py or DIR/<student>/exercises/exNN_*.py)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="with --submissions: where grades.csv and feedback/ go (default: the submissions DIR)",
    )
    p.add_argument(
        "--hidden-tests",
        metavar="DIR",
        type=Path,
        help="extra test modules (EXERCISE + points, like tests/exercises) whose source and "
        "messages are never shown: feedback lists only their names, points and pass/fail",
    )
    p.add_argument(
        "--exercise", metavar="EX", nargs="+", help="grade only these exercises (prefix match: ex03, ex1, 3)"
    )
    p.add_argument(
        "--course-root",
        metavar="DIR",
        type=Path,
        help="the course folder, with tests/exercises/ and exercises/ (default: the checkout moe_tf runs "
        "from, else the current folder or its nearest parent that has tests/exercises/)",
    )
    p.add_argument(
        "--tests-dir", metavar="DIR", type=Path, help="the visible test modules (default: the course's tests/exercises)"
    )
    p.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=10.0,
        help="default per-test time limit in seconds (default 10; tests may set their own with "
        "@pytest.mark.timeout_s(S))",
    )
    p.add_argument(
        "--student-timeout",
        metavar="S",
        type=float,
        default=600.0,
        help="time limit for all of one student's tests (default 600)",
    )
    p.add_argument(
        "--max-output",
        metavar="CHARS",
        type=int,
        default=1_000_000,
        help="a test that prints more than this fails (default 1000000)",
    )
    p.add_argument(
        "--max-restarts",
        metavar="N",
        type=int,
        default=5,
        help="restarts of a student's test process after a crash or a hard timeout (default 5)",
    )
    p.add_argument("-j", "--jobs", metavar="N", type=int, default=1, help="students graded in parallel (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temporary grading folders (debugging)")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list failed tests with their messages; show the test process output when it could not start",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.course_root is not None:
        if not is_course(args.course_root):
            parser.error(
                f"--course-root {args.course_root}: not a copy of the course (it has no tests/exercises/ folder)"
            )
        course = args.course_root.resolve()
    else:
        course = find_course()
    if course is None:
        parser.error(
            f"cannot find the course: no tests/exercises/ folder in {Path.cwd()} or its parents, and moe_tf "
            f"is installed from a package ({PACKAGE}), not from a copy of the course. Run moe-grade inside "
            "your copy of the course (the folder with exercises/ and tests/), or pass --course-root DIR."
        )
    if args.solutions and not (course / "solutions").is_dir():
        parser.error(
            f"--solutions: no solutions/ folder in {course}: this is a student copy of the course "
            "(tools/student_version.py leaves the reference solutions out). Grade your own work with "
            "plain moe-grade; the references are with your instructor."
        )

    def need_dir(path: Path | None, option: str) -> Path | None:
        if path is None:
            return None
        if not path.is_dir():
            parser.error(f"{option} {path}: no such directory")
        return path.resolve()

    tests_dir = need_dir(args.tests_dir or course / "tests" / "exercises", "--tests-dir")
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
        folder = exercises or (course / ("solutions" if args.solutions else "exercises"))
        if not folder.is_dir():
            parser.error(f"{folder}: no such directory")
    deny = [p for p in (hidden, submissions) if p is not None]
    opts = Options(
        tests_dir=tests_dir,
        hidden_dir=hidden,
        exercises=_prefixes(args.exercise),
        timeout=args.timeout,
        student_timeout=args.student_timeout,
        max_output=args.max_output,
        max_restarts=args.max_restarts,
        deny_read=deny,
        course=course,
        keep=args.keep,
        verbose=args.verbose,
    )
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
    for folder in (out, out / "feedback"):
        if folder.is_symlink():
            parser.error(f"--out: {folder} is a symbolic link: refused (the grader writes only into real folders)")
    entries = sorted(
        d
        for d in submissions.iterdir()
        if (d.is_dir() or d.is_symlink())
        and not d.name.startswith((".", "_"))
        and d.resolve() != out / "feedback"
        and d.resolve() != out
    )
    if not entries:
        parser.error(f"--submissions {submissions}: no student sub-folders")
    print(f"Grading {len(entries)} students in {submissions}", flush=True)
    JAIL.detect()
    print(f"sandbox: {JAIL.why}", flush=True)
    if JAIL.kind == "none":
        print(f"warning: {JAIL.why}", file=sys.stderr, flush=True)

    # Private copies of every submission, made before any student's code runs.
    class_dir = Path(tempfile.mkdtemp(prefix="moe-grade-class-"))
    students: list[tuple[str, Path | None, str | None]] = []  # (name, private copy, why refused)
    taken: set[str] = set()
    reviews: dict[str, list[str]] = {}
    for d in entries:
        name, why = student_name(d.name, taken)
        if name is None:
            print(f"warning: refused student folder {d.name[:80]!r}: {why}; rename it", file=sys.stderr)
            continue
        taken.add(name.lower())
        if d.is_symlink() or (d / "exercises").is_symlink():
            students.append(
                (
                    name,
                    None,
                    "refused: the submission is a symbolic link, not a folder of files "
                    "(hand in copies of your modules)",
                )
            )
            continue
        private = class_dir / "subs" / name
        _copy_files(student_exercises_dir(d), private, MAX_STUDENT_FILE_BYTES)
        reviews[name] = review_findings(private)  # before any student's code runs
        students.append((name, private, None))
    os.chmod(class_dir, 0o700)
    opts.deny_read = [*opts.deny_read, class_dir / "subs"]
    try:
        collect = trusted_catalogue(opts, catalogue)
        if not catalogue.tests:
            return _nothing_collected(opts, collect)

        def one(student) -> StudentResult:
            name, private, refused = student
            t = time.monotonic()
            if refused:
                r = StudentResult(name, notes=[refused])
            else:
                r = grade_student(name, private, opts, catalogue)
                r.review = reviews.get(name, [])
            print(f"  graded {name} ({time.monotonic() - t:.1f} s)", flush=True)
            return r

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, students))
    finally:
        shutil.rmtree(class_dir, ignore_errors=True)
    if not results:
        parser.error(f"--submissions {submissions}: no student folder could be graded")
    class_skips(results, catalogue)
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    write_csv(out / "grades.csv", results, catalogue)
    for r in results:
        write_atomic(out / "feedback" / f"{r.name}.md", feedback_text(r, catalogue))
    width = max(len(r.name) for r in results)
    print(f"\n{'student':<{width}}  points")
    for r in results:
        extra = f"  ({'; '.join(n for n in r.notes if not n.startswith('sandbox kept'))})" if r.notes else ""
        print(f"{r.name:<{width}}  {_num(score(r, catalogue))} / {_num(possible(r, catalogue))}{extra[:2000]}")
    flagged = [r for r in results if r.review]
    if flagged:
        print(
            "\nRead by hand: code an exercise has no use for (a submission using it can forge its own verdicts, "
            "which the grader cannot prevent; see solutions/README.md):"
        )
        for r in flagged:
            print(f"  {r.name}: {'; '.join(r.review)[:1000]}")
    _warn_collect_errors(catalogue)
    print(f"\nwrote {out / 'grades.csv'} and {len(results)} feedback files in {out / 'feedback'}")
    return 0


RESERVED_NAMES = {"max", "student", "total", "feedback", "grades", "con", "prn", "aux", "nul"}
NAME_LIMIT = 64


def student_name(folder: str, taken: set[str]) -> tuple[str | None, str]:
    """``(name, "")``: a safe name for the student's row and feedback file, or ``(None, why)``.

    Characters other than letters, digits, ``.``, ``-`` and ``_`` become ``_``; a name longer than
    64 characters is cut and given a short hash; reserved names (``max``, the CSV's header words) and
    names already taken (case-insensitively) are refused.
    """
    name = re.sub(r"[^\w.-]", "_", folder, flags=re.UNICODE).strip(".") or "_"
    if len(name) > NAME_LIMIT:
        import hashlib

        name = name[: NAME_LIMIT - 9] + "-" + hashlib.sha1(folder.encode("utf-8", "replace")).hexdigest()[:8]
    if name.lower() in RESERVED_NAMES:
        return None, f"{name!r} is a reserved name (a row or column of grades.csv)"
    if name.lower() in taken:
        return None, f"its safe name {name!r} is already another student's"
    return name, ""


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: a symbolic link there is replaced, never followed."""
    parent = path.parent
    if parent.is_symlink():
        raise OSError(f"{parent} is a symbolic link: refused")
    if path.is_symlink():
        print(f"warning: {path} was a symbolic link: replaced by the file (its target is untouched)", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def csv_cell(value) -> str:
    """A cell a spreadsheet shows as text: one starting with = + - @ (a formula) gets a leading apostrophe."""
    text = str(value)
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


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
