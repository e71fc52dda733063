"""No module of the package may take the name of a standard-library module.

Running one of the package's files as a script (`python moe_tf/grade.py`)
puts `moe_tf/` first on `sys.path`, so a `moe_tf/inspect.py` shadowed the
standard `inspect` and crashed that command with "partially initialized
module 'inspect'" (it was renamed `moe_tf/analysis.py`).
"""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import moe_tf

PACKAGE = Path(moe_tf.__file__).parent


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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(PACKAGE / "grade.py"), "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--submissions" in done.stdout
