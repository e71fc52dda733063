"""Grading harness for the exercises.

Every test module here grades one exercise module. It names the exercise with a
module-level ``EXERCISE = "ex03_topk_gating"`` and receives it through the ``ex``
fixture; every test carries ``@pytest.mark.points(n)``.

Which folder the exercise modules come from:

* ``pytest tests/exercises``                 → ``exercises/`` (your work);
* ``pytest tests/exercises --solutions``     → ``solutions/`` (the references; every test is skipped, with
  the reason, in a student copy, which has no ``solutions/``);
* ``MOE_TF_EXERCISES_DIR=DIR pytest ...``    → ``DIR`` (used by ``moe-grade``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_CACHE: dict[str, object] = {}


def exercises_dir(config: pytest.Config) -> Path:
    """The folder whose modules are graded (see the module docstring)."""
    if os.environ.get("MOE_TF_EXERCISES_DIR"):
        return Path(os.environ["MOE_TF_EXERCISES_DIR"]).resolve()
    if config.getoption("--solutions", default=False):
        return REPO / "solutions"
    return REPO / "exercises"


def load_exercise(config: pytest.Config, name: str):
    """Import ``<exercises dir>/<name>.py`` under a private module name, once per session."""
    path = exercises_dir(config) / f"{name}.py"
    key = str(path)
    if key not in _CACHE:
        if not path.is_file():
            pytest.fail(
                f"{path} is missing: copy it back from the course repository's exercises/ folder.", pytrace=False
            )
        spec = importlib.util.spec_from_file_location(f"_graded_{name}", path)
        module = importlib.util.module_from_spec(spec)
        # The exercise folder goes on sys.path so an exercise may import a sibling module.
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            spec.loader.exec_module(module)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - a syntax error, a crash or sys.exit() at import time
            _CACHE[key] = err  # fails every test of the exercise (and leaves pytest's fixtures intact)
        else:
            _CACHE[key] = module
    module = _CACHE[key]
    if isinstance(module, Exception):
        pytest.fail(f"importing {path.name} failed: {type(module).__name__}: {module}", pytrace=False)
    return module


@pytest.fixture
def ex(request):
    """The exercise module named by the test module's ``EXERCISE``."""
    name = getattr(request.module, "EXERCISE", None)
    if name is None:
        raise RuntimeError(f"{request.module.__name__} must define EXERCISE = '<exercise module name>'")
    return load_exercise(request.config, name)


def pytest_configure(config):
    config.addinivalue_line("markers", "points(n): how many points the test is worth when it passes")
    config.addinivalue_line(
        "markers",
        "timeout_s(s): the test's time limit under moe-grade, in seconds (default 10; "
        "points(n, timeout_s=s) works too)",
    )


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents and item.get_closest_marker("points") is None:
            raise pytest.UsageError(f"{item.nodeid} has no @pytest.mark.points(n)")
    folder = exercises_dir(config)
    if folder == REPO / "solutions" and not folder.is_dir():
        # A student copy (tools/student_version.py) has no solutions/: nothing to grade them against.
        skip = pytest.mark.skip(
            reason=f"--solutions: no solutions/ folder in {REPO} (a student copy of the course "
            "leaves the reference solutions out); grade your exercises/ without --solutions"
        )
        for item in items:
            if here in Path(item.fspath).parents:
                item.add_marker(skip)
