"""Write a student copy of the course: everything git tracks, without the answers.

    python tools/student_version.py DEST

DEST receives every file that git tracks in this repository, as it is in the working tree
(`git ls-files`; untracked files, build outputs and the virtual environment are never copied),
except the folders that hold answers:

- `solutions/`: the reference solutions of the exercises, the answers to the notebooks'
  interview questions (`solutions/notebooks/`) and to the question bank
  (`solutions/question_bank_answers.yaml`, `solutions/question_bank.md`);
- `tests/exercises/mutants/`: the mutation check's wrong solutions (`tests/course/test_mutants.py`), which
  quote lines of the reference solutions.

It adds `STUDENT_VERSION.md` at DEST's root (what this copy is, how to grade). DEST must not
exist or be an empty folder; the tool refuses anything else. In the copy, the tests that need
`solutions/` skip with the reason, and `moe-grade --solutions` exits 2 with a message.

Exit status: 0 when the copy was written, 2 when DEST is refused or this is not a git checkout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tracked paths that hold answers: left out of the student copy (folders end with '/').
LEFT_OUT = {
    "solutions/": "reference solutions, notebook interview answers, question-bank answers",
    "tests/exercises/mutants/": "the mutation check's wrong solutions, which quote lines of the references",
}

NOTE = """\
# Student version

This is a **student copy** of the moe-tf course, written by `tools/student_version.py`. It holds
the notebooks, the exercises (stubs to fill in), their tests, the library and the tools: everything
of the course except `solutions/` (the reference solutions, the answers to the notebooks'
interview questions and to the question bank) and the mutation check's wrong solutions
(`tests/exercises/mutants/`, which quote the references). Links to `solutions/` in the other pages do not
resolve here; that is expected.

Set up once, then grade your exercises (see [`exercises/README.md`](exercises/README.md)):

```bash
make install                                  # .venv with moe-tf, the test tools and Jupyter
make lab                                      # the lessons (notebooks/) in JupyterLab
.venv/bin/moe-grade                           # every exercise: points per exercise and a total
.venv/bin/moe-grade --exercise ex03 -v        # one exercise, with the failing tests' messages
.venv/bin/python -m pytest tests/exercises/test_ex03_topk_gating.py   # plain pytest, full tracebacks
```

`moe-grade --solutions` is refused here (exit status 2): there are no solutions to grade. Hand in
your `exercises/` folder the way your instructor asks; the instructor grades the whole class with
`moe-grade --submissions`.
"""


class Refused(Exception):
    """DEST or the repository cannot be used; the message says why."""


def tracked_files(root: Path = ROOT) -> list[str]:
    """Every path git tracks in ``root``, relative, '/'-separated, sorted."""
    if not is_git_checkout(root):
        raise Refused(f"{root} is not the top of a git checkout: build the student copy from a clone of the course")
    proc = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise Refused(f"git ls-files failed in {root}: {proc.stderr.strip()}")
    return sorted(p for p in proc.stdout.split("\0") if p)


def is_git_checkout(root: Path = ROOT) -> bool:
    """Whether ``root`` is the top folder of a git working tree (not a plain copy, nor a folder inside one)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return False
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == Path(root).resolve()


def untracked_files(root: Path = ROOT) -> list[str]:
    """Files git does not track and does not ignore: work not committed yet, which the copy lacks."""
    proc = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(p for p in proc.stdout.split("\0") if p) if proc.returncode == 0 else []


def is_left_out(path: str) -> bool:
    return any(path == prefix.rstrip("/") or path.startswith(prefix) for prefix in LEFT_OUT)


def check_destination(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise Refused(f"{dest} exists and is not a folder: choose a new folder for the student copy")
    if dest.is_dir() and any(dest.iterdir()):
        raise Refused(f"{dest} exists and is not empty: choose a new or an empty folder for the student copy")


def write_student_version(dest: Path, root: Path = ROOT) -> tuple[list[str], list[str], list[str]]:
    """Copy the tracked files of ``root`` into ``dest``, without the answers.

    Returns ``(written, left_out, missing)``: the paths copied (STUDENT_VERSION.md included), the
    tracked paths left out because they hold answers, and the tracked paths absent from the working
    tree (deleted but not committed), which are not copied either.
    """
    dest = Path(dest).absolute()
    check_destination(dest)
    files = tracked_files(root)
    root = Path(root).resolve()
    written, left_out, missing = [], [], []
    dest.mkdir(parents=True, exist_ok=True)
    for rel in files:
        if is_left_out(rel):
            left_out.append(rel)
            continue
        src = root / rel
        if not src.is_symlink() and not src.is_file():
            missing.append(rel)
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
        written.append(rel)
    (dest / "STUDENT_VERSION.md").write_text(NOTE, encoding="utf-8")
    written.append("STUDENT_VERSION.md")
    return written, left_out, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="DEST must not exist or be empty. Exit status: 0 written, 2 refused.",
    )
    parser.add_argument("dest", metavar="DEST", type=Path, help="the folder to write the student copy into")
    args = parser.parse_args(argv)
    try:
        written, left_out, missing = write_student_version(args.dest)
    except Refused as err:
        print(f"student_version: refused: {err}", file=sys.stderr)
        return 2
    dest = args.dest.absolute()
    print(f"wrote {len(written)} files to {dest} (every file git tracks, plus STUDENT_VERSION.md)")
    print("left out:")
    for prefix, why in LEFT_OUT.items():
        n = sum(1 for p in left_out if p == prefix.rstrip("/") or p.startswith(prefix))
        print(f"  {prefix:<12} {n} files: {why}")
    print("  untracked files (build outputs, .venv, work in progress): never copied")
    pending = untracked_files()
    if pending:
        print(
            f"warning: {len(pending)} files here are neither tracked nor ignored, so the copy lacks them "
            "(commit them first if the course needs them): "
            + ", ".join(pending[:8])
            + (" ..." if len(pending) > 8 else "")
        )
    if missing:
        print(
            f"  {len(missing)} tracked files missing from the working tree: "
            + ", ".join(missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
