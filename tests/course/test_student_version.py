"""`tools/student_version.py`: the student copy of the course, and the test suite inside it.

The copy is built from `git ls-files` of this checkout (skipped when this is not a git checkout,
for example inside a student copy). In the copy, run in subprocesses: the notebook format and
answer checks pass or skip cleanly (the answers live in `solutions/`, which the copy lacks), and
`moe-grade --solutions` exits 2 with a message that says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import student_version

pytestmark = [
    pytest.mark.skipif(
        not student_version.is_git_checkout(REPO),
        reason="not a git checkout (a student copy has no .git): nothing to copy from",
    ),
    pytest.mark.xdist_group("student_version"),  # one worker under pytest-xdist: the module fixture is expensive
]


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("student") / "course"
    written, left_out, missing = student_version.write_student_version(dest, REPO)
    return dest, written, left_out, missing


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_copy_has_the_course_without_solutions(copy):
    dest, written, left_out, missing = copy
    files = _files(dest)
    assert files == set(written)
    assert not [f for f in files if f == "solutions" or f.startswith("solutions/")]
    assert not (dest / "solutions").exists()
    assert left_out and all(f.startswith(("solutions/", "tests/exercises/mutants/")) for f in left_out)
    assert not [f for f in files if f.startswith("tests/exercises/mutants/")], "mutants quote the references"
    assert any(f.startswith("tests/exercises/mutants/") for f in left_out)
    assert "solutions/README.md" in left_out and any(f.startswith("solutions/notebooks/") for f in left_out)
    tracked = set(student_version.tracked_files(REPO))
    assert files == (tracked - set(left_out) - set(missing)) | {"STUDENT_VERSION.md"}
    for folder in ("exercises", "notebooks", "tests/exercises"):
        assert (REPO / folder).is_dir()
        wanted = {p.relative_to(REPO).as_posix() for p in (REPO / folder).iterdir() if p.is_file()} & tracked
        assert wanted and wanted <= files, f"{folder}/ not copied: {sorted(wanted - files)[:5]}"
    assert {f"exercises/ex{n:02d}" for n in range(1, 17)} <= {f[: len("exercises/exNN")] for f in files}
    assert len([f for f in files if f.startswith("notebooks/") and f.endswith(".ipynb")]) >= 10
    assert not [f for f in files if "/.venv/" in f"/{f}" or "__pycache__" in f]
    note = (dest / "STUDENT_VERSION.md").read_text(encoding="utf-8")
    assert "student copy" in note and "moe-grade" in note


def test_a_destination_that_is_not_empty_is_refused(tmp_path, capsys):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine", encoding="utf-8")
    assert student_version.main([str(dest)]) == 2
    err = capsys.readouterr().err
    assert str(dest) in err and "not empty" in err
    assert _files(dest) == {"notes.txt"}

    a_file = tmp_path / "a_file"
    a_file.write_text("x", encoding="utf-8")
    assert student_version.main([str(a_file)]) == 2
    assert str(a_file) in capsys.readouterr().err


def _run_in(dest: Path, *args: str) -> subprocess.CompletedProcess:
    # The copy's own moe_tf (cwd first on sys.path), not this checkout's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_")) and k != "PYTHONPATH"}
    env.update(PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, *args], cwd=dest, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _untracked_hint() -> str:
    pending = student_version.untracked_files(REPO)
    return f"\n(untracked files the copy lacks: {pending})" if pending else ""


def test_the_notebook_checks_pass_or_skip_in_the_copy(copy):
    dest = copy[0]
    proc = _run_in(
        dest,
        "-m",
        "pytest",
        "-q",
        "tests/course/test_notebooks.py",
        "-k",
        "format or answer",
        "-p",
        "no:cacheprovider",
        "-rs",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out + _untracked_hint()
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "error" not in summary and "failed" not in summary, out
    assert "skipped" in out and "student copy" in out, out


def test_the_question_bank_checks_pass_or_skip_in_the_copy(copy):
    """Questions without answers: every link of the questions resolves, the answer checks skip."""
    dest = copy[0]
    proc = _run_in(dest, "-m", "pytest", "-q", "tests/course/test_question_bank.py", "-p", "no:cacheprovider", "-rs")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out + _untracked_hint()
    assert "failed" not in proc.stdout.strip().splitlines()[-1], out
    assert "student version: no solutions/" in out, out
    quiz = subprocess.run(
        [sys.executable, "tools/question_bank.py", "quiz", "--topic", "myths"],
        cwd=dest,
        input="\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert quiz.returncode == 0, quiz.stdout + quiz.stderr
    assert "the answers are not in the student version" in quiz.stdout, quiz.stdout


def test_moe_grade_solutions_exits_2_in_the_copy(copy):
    dest = copy[0]
    proc = _run_in(dest, "-m", "moe_tf.course.grade", "--solutions")
    assert proc.returncode == 2, proc.stdout + proc.stderr + _untracked_hint()
    assert f"--solutions: no solutions/ folder in {dest}" in proc.stderr, proc.stderr
    assert "student copy" in proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with moe-tf installed from a wheel of this checkout (not editable).

    Its dependencies (TensorFlow, Keras, pytest) come from this interpreter's site-packages, added
    as a plain path (its `.pth` files, the editable install among them, are not processed), so
    `import moe_tf` there finds the wheel's copy in site-packages, as after `pip install moe-tf`.
    """
    import shutil
    import site
    import sysconfig
    import venv

    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # what the build reads, copied: building writes build/ and *.egg-info next to it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(REPO / name, source / name)
    shutil.copytree(REPO / "moe_tf", source / "moe_tf", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((root / "dist").glob("moe_tf-*.whl"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if os.path.isdir(p)]
    Path(purelib, "zz_course_deps.pth").write_text("\n".join(here) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


def _moe_grade(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_")) and k != "PYTHONPATH"}
    env.update(PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [str(env_dir / "bin" / "moe-grade"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_moe_grade_from_an_installed_wheel_grades_the_student_copy(copy, installed, tmp_path):
    """`pip install moe-tf` puts the package in site-packages: the grader finds the course from the cwd."""
    dest = copy[0]
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import moe_tf; print(moe_tf.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert str(installed) in where.stdout, f"the venv must import the wheel's moe_tf: {where.stdout}{where.stderr}"

    inside = _moe_grade(installed, dest / "exercises", "--exercise", "ex01")  # cwd: a folder inside the course
    out = inside.stdout + inside.stderr
    assert inside.returncode == 0, out + _untracked_hint()
    assert f"Grading {dest / 'exercises'}" in inside.stdout, out
    total = next(line for line in inside.stdout.splitlines() if line.startswith("total"))
    assert "passed" in total and total.split()[2] == "/" and total.split()[1] != total.split()[3], (
        f"the untouched stubs must not score full marks: {total}"
    )

    outside = _moe_grade(installed, tmp_path)  # no course here, and the package is not in one
    assert outside.returncode == 2, outside.stdout + outside.stderr
    assert "cannot find the course" in outside.stderr and "--course-root" in outside.stderr, outside.stderr

    # --course-root from outside: the copy is found (it has no solutions/, which ends this run before any test).
    named = _moe_grade(installed, tmp_path, "--course-root", str(dest), "--solutions")
    assert named.returncode == 2, named.stdout + named.stderr
    assert f"--solutions: no solutions/ folder in {dest}" in named.stderr, named.stderr

    wrong = _moe_grade(installed, tmp_path, "--course-root", str(tmp_path))
    assert wrong.returncode == 2 and "not a copy of the course" in wrong.stderr, wrong.stderr
