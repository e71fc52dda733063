"""`make lab`: Jupyter is part of `make install` (the `lab` extra), and the target opens the lessons with
`MOE_TF_DATA_DIR` passed on, a relative folder taken from the repository root.

The target runs with `LAB_ARGS=--version`, so JupyterLab prints its version and exits: no server starts.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"


def test_make_install_includes_the_lab_extra():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^lab = \["jupyter', pyproject, flags=re.MULTILINE), "pyproject.toml: no `lab` extra with Jupyter"
    install = re.search(r'pip install .*-e "\.\[([a-z,]+)\]"', (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert install and "lab" in install.group(1).split(","), "`make install` should install the `lab` extra"


def _make_lab(*assignments):
    if shutil.which("make") is None:
        pytest.skip("no make")
    if Path(sys.prefix).resolve() != VENV.resolve() or not (VENV / "bin" / "jupyter").exists():
        pytest.skip("runs in the course's .venv with Jupyter installed (make install)")
    if subprocess.run(["make", "-q", ".venv/.installed-stamp"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip(".venv is older than pyproject.toml: `make lab` would reinstall it")
    return subprocess.run(
        ["make", "--no-print-directory", "lab", "LAB_ARGS=--version", *assignments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_lab_passes_the_data_folder(tmp_path):
    relative = Path(os.path.relpath(tmp_path, ROOT))
    for given in (str(tmp_path), str(relative)):
        proc = _make_lab(f"MOE_TF_DATA_DIR={given}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"data: {tmp_path.resolve()} (MOE_TF_DATA_DIR)" in proc.stdout, proc.stdout
        assert "Opening notebooks/ in JupyterLab" in proc.stdout
        assert re.search(r"^\d+\.\d+\.\d+", proc.stdout, flags=re.MULTILINE), "no JupyterLab version printed"


def test_make_lab_refuses_a_missing_data_folder(tmp_path):
    proc = _make_lab(f"MOE_TF_DATA_DIR={tmp_path / 'missing'}")
    assert proc.returncode != 0
    assert "no such folder" in proc.stderr and "moe_tf.data download" in proc.stderr
