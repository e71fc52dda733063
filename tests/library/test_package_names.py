"""The package's hygiene: module names, what importing it does, what its command lines print.

- No module may take the name of a standard-library module. Running one of
  the package's files as a script (`python moe_tf/course/grade.py`) puts its
  folder first on `sys.path`, so a `moe_tf/inspect.py` shadowed the standard
  `inspect` and crashed that command with "partially initialized module
  'inspect'" (it was renamed `moe_tf/analysis.py`).
- `import moe_tf` loads neither TensorFlow nor Keras and changes no
  environment variable; importing any of its modules changes none either
  (no `os.environ` or `matplotlib.use` at import time).
- The library is apart from the course: importing the layers, routing,
  dispatch and losses imports nothing of `moe_tf.course` (the grader, the
  training CLI, plots, notebook helpers), nor pytest, matplotlib or
  tensorflow_datasets.
- The command lines silence TensorFlow's start-up lines before importing it.
"""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import moe_tf

PACKAGE = Path(moe_tf.__file__).parent


def _python(*args, env_drop=("TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND"), cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in env_drop and not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def _module_names():
    for info in pkgutil.walk_packages([str(PACKAGE)]):
        yield info.name.split(".")[-1]
    for child in PACKAGE.rglob("*.py"):
        yield child.stem


def test_no_module_shadows_the_standard_library():
    clashes = sorted({name for name in _module_names() if name in sys.stdlib_module_names})
    assert not clashes, f"these modules of moe_tf shadow the standard library when a file is run as a script: {clashes}"


def test_the_check_sees_a_clash(tmp_path):
    (tmp_path / "inspect.py").write_text("")
    names = {info.name for info in pkgutil.walk_packages([str(tmp_path)])}
    assert names & set(sys.stdlib_module_names) == {"inspect"}


def test_a_package_file_runs_as_a_script():
    done = _python(str(PACKAGE / "course" / "grade.py"), "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--submissions" in done.stdout


def test_import_moe_tf_loads_no_tensorflow_and_sets_nothing():
    code = (
        "import os, sys; before = dict(os.environ); import moe_tf; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules)); "
        "print(dict(os.environ) == before); "
        "from moe_tf import MixtureOfExperts; print('tensorflow' in sys.modules, MixtureOfExperts.__name__); "
        "print(moe_tf.cost.model_cost.__name__, moe_tf.layers.Experts.__name__); "
        "print(hasattr(moe_tf, 'no_such_thing'))"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "[]", f"`import moe_tf` imported {lines[0]}"
    assert lines[1] == "True", "`import moe_tf` changed the environment"
    assert lines[2] == "True MixtureOfExperts", "the first use of a layer loads it"
    assert lines[3] == "model_cost Experts", "every submodule is an attribute of the package on first access"
    assert lines[4] == "False"


def test_no_module_changes_the_environment_or_the_plot_backend_at_import():
    folders = ((PACKAGE, "moe_tf."), (PACKAGE / "course", "moe_tf.course."))
    modules = sorted(
        f"{prefix}{info.name}"
        for folder, prefix in folders
        for info in pkgutil.iter_modules([str(folder)])
        if info.name not in ("__main__", "_grade_plugin", "_grade_jail")
    )
    assert "moe_tf.course.plots" in modules and "moe_tf.course.train" in modules, modules
    code = (
        "import os, sys, importlib\n"
        "import tensorflow, keras, matplotlib\n"  # what these set on import is theirs, not ours
        "before = dict(os.environ); backend = matplotlib.rcParams._get_backend_or_none()\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(changed); print(matplotlib.rcParams._get_backend_or_none() == backend)\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    changed, same_backend = done.stdout.splitlines()[-2:]
    assert changed == "[]", f"importing moe_tf's modules changed these environment variables: {changed}"
    assert same_backend == "True", "importing moe_tf's modules chose a matplotlib backend"


def test_command_lines_print_no_tensorflow_start_up_lines():
    """`python -m moe_tf train` imports TensorFlow (its models) before parsing; main() silences it first."""
    noise = ("cpu_feature_guard", "This TensorFlow binary")
    control = _python("-c", "import moe_tf.course.train")  # the same import, without the command line's main()
    assert any(n in control.stderr for n in noise), "this TensorFlow prints no start-up lines: the check is void"
    train = _python("-m", "moe_tf", "train", "--help")
    assert train.returncode == 0 and "--task" in train.stdout, train.stderr[-2000:]
    assert not any(n in train.stderr for n in noise), train.stderr[-2000:]
    data = _python("-m", "moe_tf.data", "--help")
    assert data.returncode == 0 and not any(n in data.stderr for n in noise), data.stderr[-2000:]
    grader = _python("-c", "import sys, moe_tf.course.grade; print('tensorflow' in sys.modules)")
    assert grader.stdout.strip() == "False", "moe-grade's own process needs no TensorFlow"


def test_the_library_imports_nothing_of_the_course():
    """Building a MoE model loads neither `moe_tf.course` nor what only the course needs.

    Keras itself imports matplotlib when it is installed (`keras.src.visualization`), so the check is on
    the modules the library loads beyond those Keras and TensorFlow load on their own.
    """
    code = (
        "import sys\n"
        "import keras, tensorflow\n"
        "theirs = set(sys.modules)\n"
        "import moe_tf.layers, moe_tf.routing, moe_tf.dispatch, moe_tf.losses\n"
        "new = sorted(set(sys.modules) - theirs)\n"
        "print([m for m in new if m.startswith(('moe_tf.course', 'pytest', 'matplotlib', 'tensorflow_datasets'))])\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]", f"importing the library loaded {done.stdout.splitlines()[-1]}"


def test_the_library_works_without_the_course_extras(tmp_path):
    """matplotlib and tensorflow_datasets come with `moe-tf[course]`: the library imports and runs without them."""
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = sys.modules['tensorflow_datasets'] = None  # as if not installed\n"
        "import numpy as np\n"
        "import moe_tf.callbacks, moe_tf.data, moe_tf.dispatch, moe_tf.losses, moe_tf.metrics, moe_tf.routing\n"
        "from moe_tf import MixtureOfExperts\n"
        "print(MixtureOfExperts(4, 8, k=2)(np.ones((6, 3), 'float32')).shape)\n"
        "try:\n    import moe_tf.course.plots\nexcept ImportError as err:\n    print('plots:', err)\n"
        "from moe_tf.data import _sources\n"
        f"try:\n    _sources.fetch_imdb({str(tmp_path)!r})\nexcept Exception as err:\n"
        "    print('imdb:', type(err).__name__, err)\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "(6, 3)" in out, out
    assert "plots: moe_tf.course.plots needs matplotlib: pip install 'moe-tf[course]'" in out, out
    assert "imdb: DataUnavailableError" in out and "moe-tf[course]" in out and "MOE_TF_DATA_DIR" in out, out


def test_the_course_extra_holds_what_only_the_course_needs():
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = lambda reqs: {r.split(";")[0].split(">")[0].split("[")[0].strip() for r in reqs}  # noqa: E731
    core, course = names(project["dependencies"]), names(project["optional-dependencies"]["course"])
    assert {"matplotlib", "tensorflow-datasets", "tensorboard"} <= course and not course & core, (core, course)
