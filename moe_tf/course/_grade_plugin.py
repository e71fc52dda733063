"""pytest plugin that ``moe-grade`` loads into each student's test process.

It is deliberately standalone (standard library + pytest only, no ``moe_tf`` import): the grader copies
this file next to the run's config and loads it with ``-p moe_grade_plugin``, so the student's process
does not pay for importing the package (and TensorFlow) one more time.

What it does, in the student's process:

* a ``sys.addaudithook`` sandbox, installed when the plugin is imported (before any test module or
  student code): deleting, renaming, truncating or opening for writing a path outside the sandbox
  folder raises ``PermissionError``; so does starting a process, forking or sending a signal to
  another process; reading the instructor's hidden tests (after collection) or the original
  submissions folder is refused too. A test during which the student's code tried any of this
  fails, even if the code caught the error;
* a per-test time limit (``SIGALRM``; ``@pytest.mark.timeout_s(s)`` or ``points(n, timeout_s=s)``
  overrides the default); code that swallows the timeout is stopped with ``os._exit`` after a few
  more seconds (the grader's hard limit is the backstop for code that never returns to Python);
* a cap on what a test may print (captured stdout + stderr): more fails the test;
* ``--exercise`` filtering and the grader's restart list (tests already graded are deselected);
* a JSON-lines report, written and flushed record by record: ``collected`` (every test with its
  exercise, points, time limit and whether it is hidden), ``start`` and ``result`` per test, and
  ``done``. A crash keeps what is already written. Hidden tests' failure messages are never written
  to the report, and their tracebacks and captured output are dropped from the terminal output too.

The config comes from the JSON file named by ``MOE_GRADE_CONFIG``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import types

import pytest

_CONFIG_PATH = os.environ.get("MOE_GRADE_CONFIG")
CFG: dict = {}
if _CONFIG_PATH:
    with open(_CONFIG_PATH, encoding="utf-8") as fh:
        CFG = json.load(fh)

EXIT_TIMEOUT = 75  # os._exit status when a test swallowed its timeout
EXIT_RESTART = 76  # os._exit status when pytest's state is unusable after a test
_ORDINARY = (Exception, pytest.fail.Exception, pytest.skip.Exception)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _under(path: str, roots) -> bool:
    for root in roots:
        if path == root or path.startswith(root + os.sep):
            return True
    return False


class _State:
    current: str | None = None  # nodeid of the running test
    violations: list = []  # noqa: RUF012 - replaced per test
    fired = 0  # how many times the alarm fired during the current test
    timeout = 10.0
    output = 0  # characters the current test printed
    collected = False
    in_hook = False
    restart = False


STATE = _State()

# ----------------------------------------------------------------------------- report

_REPORT_FD = None
if isinstance(CFG.get("report_fd"), int):
    _REPORT_FD = CFG["report_fd"]  # opened by the grader (the report's path is not reachable from here)
    os.set_inheritable(_REPORT_FD, False)
elif CFG.get("report"):
    _REPORT_FD = os.open(CFG["report"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _emit(record: dict) -> None:
    if _REPORT_FD is None:
        return
    data = (json.dumps(record) + "\n").encode("utf-8")
    STATE.in_hook = True
    try:
        os.write(_REPORT_FD, data)
    finally:
        STATE.in_hook = False


# ----------------------------------------------------------------------------- sandbox

_WRITE_ROOTS = [_real(p) for p in CFG.get("allow_write", [])]
_WRITE_EXTRA = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"}
_WRITE_EXTRA_ROOTS = ["/dev/shm", "/dev/fd", "/proc/self"]
_DENY_READ = [_real(p) for p in CFG.get("deny_read", [])]
_DENY_READ_AFTER_COLLECT = [_real(p) for p in CFG.get("deny_read_after_collect", [])]
# The grading folders of the other students graded at the same time (moe-grade --jobs N).
_RUNS_PARENT, _OWN_RUN = (CFG.get("deny_read_other_runs") or [None, None])[:2]


def _other_run(path: str) -> bool:
    if not _RUNS_PARENT:
        return False
    return path.startswith(os.path.join(_RUNS_PARENT, "moe-grade-")) and not _under(path, [_OWN_RUN])


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _resolve(path, dir_fd=-1) -> str | None:
    if isinstance(path, int):
        return None
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    if not os.path.isabs(path) and isinstance(dir_fd, int) and dir_fd >= 0:
        try:
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            base = os.getcwd()
        path = os.path.join(base, path)
    return _real(path)


def _may_write(path: str) -> bool:
    return _under(path, _WRITE_ROOTS) or path in _WRITE_EXTRA or _under(path, _WRITE_EXTRA_ROOTS)


def _from_student() -> bool:
    """Whether the student's code is on the current call stack."""
    student = CFG.get("student_dir")
    if not student:
        return True
    root = _real(student)
    frame = sys._getframe(1)
    while frame is not None:
        if _under(_real(frame.f_code.co_filename), [root]):
            return True
        frame = frame.f_back
    return False


def _deny(what: str):
    # Refused whoever asks; it costs the test only when the student's code asked (a library writing
    # to its cache outside the sandbox fails on its own terms).
    if _from_student():
        STATE.violations.append(what)
    raise PermissionError(f"moe-grade sandbox: {what} is not allowed")


def _check_write(event: str, path, dir_fd=-1, must_exist=False):
    real = _resolve(path, dir_fd)
    if real is None or _may_write(real):
        return
    if must_exist and not os.path.lexists(real):
        return  # deleting what is not there: harmless, the call fails by itself
    if event == "creating a folder" and os.path.lexists(real):
        return  # os.makedirs(..., exist_ok=True) on an existing folder
    _deny(f"{event} on {real} (outside the grading folder)")


def _on_open(args):
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    writing = False
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        writing = True
    if isinstance(flags, int) and flags & _WRITE_FLAGS:
        writing = True
    if writing:
        _check_write("writing", path)
        return
    if _DENY_READ or _RUNS_PARENT or (STATE.collected and _DENY_READ_AFTER_COLLECT):
        real = _resolve(path)
        if real is None:
            return
        if _under(real, _DENY_READ) or _other_run(real) or (STATE.collected and _under(real, _DENY_READ_AFTER_COLLECT)):
            _deny(f"reading {real}")


def _on_path1(event, must_exist=False):
    def check(args):
        dir_fd = args[1] if len(args) > 1 and isinstance(args[1], int) else -1
        _check_write(event, args[0], dir_fd, must_exist)

    return check


def _on_rename(args):
    src, dst = args[0], args[1]
    src_fd = args[2] if len(args) > 2 and isinstance(args[2], int) else -1
    dst_fd = args[3] if len(args) > 3 and isinstance(args[3], int) else -1
    _check_write("renaming", src, src_fd, must_exist=True)
    _check_write("renaming", dst, dst_fd)


def _on_link(args):
    _check_write("linking", args[1], args[3] if len(args) > 3 and isinstance(args[3], int) else -1)


def _no(event):
    def refuse(args):
        _deny(event)

    return refuse


def _on_kill(args):
    pid = args[0] if args else None
    if pid != os.getpid():
        _deny(f"sending a signal to process {pid}")


_HANDLERS = {
    "open": _on_open,
    "os.remove": _on_path1("deleting", must_exist=True),
    "os.rmdir": _on_path1("removing a folder", must_exist=True),
    "os.mkdir": _on_path1("creating a folder"),
    "os.truncate": _on_path1("truncating", must_exist=True),
    "os.chmod": _on_path1("changing the mode of", must_exist=True),
    "os.chown": _on_path1("changing the owner of", must_exist=True),
    "os.utime": _on_path1("touching", must_exist=True),
    "shutil.rmtree": _on_path1("deleting a tree", must_exist=True),
    "os.rename": _on_rename,
    "os.link": _on_link,
    "os.symlink": _on_link,
    "os.kill": _on_kill,
    "os.killpg": _no("sending a signal to a process group"),
    "os.system": _no("starting a shell command"),
    "os.exec": _no("replacing the process (os.exec*)"),
    "os.posix_spawn": _no("starting a process"),
    "os.spawn": _no("starting a process"),
    "subprocess.Popen": _no("starting a process"),
    "os.fork": _no("forking"),
    "os.forkpty": _no("forking"),
}


def _audit(event, args):
    handler = _HANDLERS.get(event)
    if handler is None or STATE.in_hook:
        return
    STATE.in_hook = True
    try:
        handler(args)
    finally:
        STATE.in_hook = False


if CFG.get("allow_write"):
    sys.addaudithook(_audit)

# Bound the size of any file the process writes (a runaway print into pytest's capture file, a
# huge temp file): past it a write fails with OSError (Python ignores SIGXFSZ).
if CFG.get("max_file_size"):
    try:
        import resource

        limit = int(CFG["max_file_size"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass

# ----------------------------------------------------------------------------- time limit


class TestTimeout(BaseException):
    """Raised in the test by the per-test alarm (a BaseException so ``except Exception`` does not swallow it)."""


def _on_alarm(signum, frame):
    STATE.fired += 1
    if STATE.fired > int(CFG.get("grace_alarms", 3)):
        # The code swallowed the timeout again and again: record the verdict and stop the process;
        # the grader restarts it for the tests that have not run yet.
        _emit(
            {
                "ev": "result",
                "id": STATE.current,
                "outcome": "failed",
                "msg": f"timed out: still running {STATE.timeout:g} s after the limit (stopped)",
            }
        )
        os._exit(EXIT_TIMEOUT)
    raise TestTimeout(f"the test took longer than its {STATE.timeout:g} s time limit")


def _timeout_for(item) -> float:
    mark = item.get_closest_marker("timeout_s")
    if mark is not None and mark.args:
        return float(mark.args[0])
    points = item.get_closest_marker("points")
    if points is not None and "timeout_s" in points.kwargs:
        return float(points.kwargs["timeout_s"])
    return float(CFG.get("timeout", 10.0))


def _points_for(item) -> float:
    mark = item.get_closest_marker("points")
    if mark is None:
        return 0
    if mark.args:
        return mark.args[0]
    return mark.kwargs.get("n", 0)


def _is_hidden_id(nodeid: str) -> bool:
    prefix = CFG.get("hidden_nodeid_prefix")
    return bool(prefix) and nodeid.startswith(prefix)


def _is_hidden(item) -> bool:
    return _is_hidden_id(item.nodeid)


def _exercise_for(item) -> str:
    module = getattr(item, "module", None)
    name = getattr(module, "EXERCISE", None)
    return (
        str(name)
        if name
        else os.path.splitext(os.path.basename(str(getattr(item, "path", "") or item.nodeid.split("::")[0])))[0]
    )


# ----------------------------------------------------------------------------- hooks


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(s): per-test time limit under moe-grade (default 10 s)")
    config.addinivalue_line("markers", "points(n): how many points the test is worth when it passes")


def _matches(exercise: str, prefixes) -> bool:
    return any(exercise.startswith(p) for p in prefixes)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    prefixes = CFG.get("exercises")
    keep, drop = [], []
    for item in items:
        (keep if not prefixes or _matches(_exercise_for(item), prefixes) else drop).append(item)
    _emit(
        {
            "ev": "collected",
            "tests": [
                {
                    "id": it.nodeid,
                    "exercise": _exercise_for(it),
                    "points": _points_for(it),
                    "timeout": _timeout_for(it),
                    "hidden": _is_hidden(it),
                }
                for it in keep
            ],
        }
    )
    skip = set(CFG.get("skip", []))
    if skip:
        drop += [it for it in keep if it.nodeid in skip]
        keep = [it for it in keep if it.nodeid not in skip]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collectreport(report):
    if report.failed:
        hidden = _is_hidden_id(report.nodeid)
        msg = None if hidden else _truncate(str(report.longrepr))
        if hidden:
            report.longrepr = "a hidden test module failed to import"
        _emit({"ev": "collect_error", "path": report.nodeid, "hidden": hidden, "msg": msg})


def pytest_collection_finish(session):
    STATE.collected = True


def _truncate(text: str) -> str:
    limit = int(CFG.get("msg_limit", 800))
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 15] + " … [truncated]"


_RESULTS: dict = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    STATE.current = item.nodeid
    STATE.violations = []
    STATE.fired = 0
    STATE.output = 0
    STATE.timeout = _timeout_for(item)
    _RESULTS[item.nodeid] = {"outcome": "passed", "msg": None, "hidden": _is_hidden(item)}
    _emit({"ev": "start", "id": item.nodeid})
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, STATE.timeout, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        STATE.current = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _emit({"ev": "call", "id": item.nodeid})  # setup is over (the exercise module imported)
    module = getattr(item, "funcargs", {}).get("ex")
    if isinstance(module, types.ModuleType) and id(module) not in _SCANNED:
        _SCANNED.add(id(module))
        exercise = _exercise_for(item)
        found = _copied(module, exercise)
        if found:
            _emit({"ev": "copied", "exercise": exercise, "what": found})
    yield


_SCANNED: set = set()


def _course_name(name) -> bool:
    return isinstance(name, str) and name.split(".", 1)[0] in ("moe_tf", "solutions")


def _copied(module, exercise: str) -> list:
    """The objects of a graded module that come from the course's library or its reference solutions."""
    roots = [_real(p) for p in CFG.get("copy_roots", [])]
    allow = list(CFG.get("copy_allow", {}).get(exercise.split("_", 1)[0], [])) + list(
        CFG.get("copy_allow", {}).get(exercise, [])
    )
    own = [_real(CFG["student_dir"])] if CFG.get("student_dir") else []
    found = []
    STATE.in_hook = True
    try:
        for name, value in list(vars(module).items()):
            if name.startswith("__"):
                continue
            try:
                if isinstance(value, types.ModuleType):
                    source, origin = value.__name__, getattr(value, "__file__", None)
                else:
                    source = (
                        type.__getattribute__(value, "__module__")
                        if isinstance(value, type)
                        else getattr(value, "__module__", None)
                    )
                    code = getattr(value, "__code__", None) or getattr(
                        getattr(value, "__func__", None), "__code__", None
                    )
                    origin = code.co_filename if isinstance(code, types.CodeType) else None
                where = source if _course_name(source) else None
                if isinstance(origin, str) and origin:
                    real = _real(origin)
                    if not _under(real, own) and (_under(real, roots) or "solutions" in real.split(os.sep)):
                        where = where or real
                dotted = f"{source}.{name}" if isinstance(source, str) else str(name)
                if where and not any(dotted == a or dotted.startswith(a + ".") or source == a for a in allow):
                    found.append(f"{name} from {where}")
            except Exception:  # noqa: BLE001, S112 - an object that will not say where it comes from
                continue
    finally:
        STATE.in_hook = False
    return found[:10]


def _message(report) -> str:
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, line, reason)
        return str(longrepr[2])
    return str(longrepr)


def _raised_by_student(tb) -> bool:
    """Whether a traceback passes through the student's modules (a ``pytest.skip`` of their own)."""
    student = CFG.get("student_dir")
    if not student:
        return False
    root = _real(student)
    while tb is not None:
        if _under(_real(tb.tb_frame.f_code.co_filename), [root]):
            return True
        tb = tb.tb_next
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    error = call.excinfo.value if call.excinfo is not None else None
    if call.when != "call" and error is not None and not isinstance(error, _ORDINARY):
        # SystemExit, a timeout ... in a fixture leaves pytest's fixture state broken for the tests
        # that follow: record this test and let the grader restart a fresh process for the rest.
        STATE.restart = True
    if report.skipped and call.when == "call" and error is not None and _raised_by_student(call.excinfo.tb):
        report.outcome = "failed"
        report.longrepr = "the exercise's code skipped the test: that does not count as passing"
    STATE.output += len(report.capstdout or "") + len(report.capstderr or "")
    forced = None
    if STATE.violations:
        forced = "sandbox violation: " + "; ".join(dict.fromkeys(STATE.violations))
    elif STATE.fired:
        forced = f"timed out: the test took longer than its {STATE.timeout:g} s time limit"
    elif STATE.output > int(CFG.get("max_output", 1_000_000)):
        forced = (
            f"printed too much: {STATE.output} characters of output "
            f"(the limit is {int(CFG.get('max_output', 1_000_000))})"
        )
    already_failed = _RESULTS.get(item.nodeid, {}).get("outcome") == "failed"
    if forced and (report.when == "call" or report.failed or (report.when == "teardown" and not already_failed)):
        report.outcome = "failed"
        report.longrepr = forced
    if _is_hidden(item):
        if report.failed:
            report.longrepr = "hidden test failed"
        report.sections = []


def pytest_runtest_logreport(report):
    result = _RESULTS.get(report.nodeid)
    if result is None:
        return
    if report.failed and result["outcome"] != "failed":
        result["outcome"] = "failed"
        if not result["hidden"]:
            result["msg"] = _truncate(_message(report))
    elif report.skipped and result["outcome"] == "passed":
        result["outcome"] = "skipped"
        if not result["hidden"]:
            result["msg"] = _truncate(_message(report))


def pytest_runtest_logfinish(nodeid, location):
    result = _RESULTS.get(nodeid)
    if result is not None:
        _emit({"ev": "result", "id": nodeid, "outcome": result["outcome"], "msg": result["msg"]})
    if STATE.restart:
        os._exit(EXIT_RESTART)


def pytest_sessionfinish(session, exitstatus):
    _emit({"ev": "done", "status": int(exitstatus)})
