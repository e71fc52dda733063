"""Build the exercise stubs from the reference solutions.

    python tools/build_exercises.py            # write exercises/exNN_*.py from solutions/exNN_*.py
    python tools/build_exercises.py --check    # write nothing; name every stale or missing stub, with a diff

Each `exercises/exNN_name.py` (the stub a learner edits) is generated from
`solutions/exNN_name.py` (its reference solution): never edit a stub by hand, edit the solution
and run this tool. `tests/course/test_build_exercises.py` fails while a stub is stale.

Markers in a solution are whole-line comments (the solution runs exactly as without them):

- a **block**, `# --- solution` ... `# --- end solution` (both indented like the code they
  wrap): the lines in between are left out of the stub. In their place the stub gets the
  block's `# stub: <line>` lines, which come right after `# --- solution`; without any, it gets
  `raise NotImplementedError("<module>.<function>: not implemented yet (see the docstring)")`,
  with the block's indentation and the name of the function around the block
  (`Class.method` for a method);
- `# --- solution only` ... `# --- end solution`: the lines in between are left out of the
  stub, with nothing in their place;
- a **single line**: a `# stub: <line>` line outside a block replaces the line just below it.

In every case the stub line is the marker's indentation followed by the text after
`# stub: ` (more spaces there indent it further; a bare `# stub:` gives an empty line).
For example, this solution

    import numpy as np                      # stays as it is

    # stub: Q1_ANSWER = None  # one of "a", "b", "c", "d"
    Q1_ANSWER = "b"

    def softmax(z):
        \"\"\"The softmax over the last axis.\"\"\"
        # --- solution
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
        # --- end solution

gives the stub `Q1_ANSWER = None  # one of "a", "b", "c", "d"` and a `softmax` whose body is
`raise NotImplementedError("ex01_name.softmax: not implemented yet (see the docstring)")`.

Markers are read from comments only (a `# --- solution` inside a string is text). A malformed
marker (a block never closed, an `# --- end solution` with no block, a `# stub:` line in the
middle of a block or at the end of a code line, a misspelt marker ...) is an error naming the
solution file and line, and so is a stub that would not compile.

Exit status: 0 when the stubs were written, or with `--check` when every stub is fresh; 1 with
`--check` when a stub is stale, missing, or has no solution; 2 on malformed markers or when there
is no `solutions/` folder (a student copy of the course, written by `tools/student_version.py`,
has none: its stubs are final).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = Path("solutions")
EXERCISES = Path("exercises")
PATTERN = "ex[0-9][0-9]_*.py"

OPEN = "# --- solution"
OPEN_ONLY = "# --- solution only"
END = "# --- end solution"
STUB = "# stub:"
DEFAULT_STUB = 'raise NotImplementedError("{module}.{function}: not implemented yet (see the docstring)")'

# Comments that look like a marker but are not one: reported rather than silently kept.
NEAR_BLOCK = re.compile(r"^#\s*-+\s*(end\s*)?solution", re.IGNORECASE)
NEAR_STUB = re.compile(r"^#\s*stub\s*:", re.IGNORECASE)

DIFF_LINES = 40  # at most this many lines of diff per stale stub in --check


class MarkerError(ValueError):
    """A malformed marker; the message starts with `path:line:`."""


# --------------------------------------------------------------------------- markers
def _comment_lines(text: str, where: str) -> dict[int, str]:
    """`{line number: comment}` for every comment of ``text`` that stands alone on its line, and
    the comments that end a code line under the key `-line number` (to report misplaced markers)."""
    found = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                alone = not tok.line[:col].strip()
                found[row if alone else -row] = tok.string.rstrip()
    except (tokenize.TokenError, SyntaxError) as err:
        raise MarkerError(f"{where}: not valid Python, its comments cannot be read: {err}") from None
    return found


def _functions(text: str, where: str) -> list[tuple[int, int, str]]:
    """`(first line, last line, qualified name)` of every function of ``text``."""
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise MarkerError(f"{where}:{err.lineno}: not valid Python: {err.msg}") from None
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((child.lineno, child.end_lineno, prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _stub_text(comment: str, indent: str, where: str) -> str:
    rest = comment[len(STUB) :]
    if rest and not rest.startswith(" "):
        raise MarkerError(f"{where}: write a space after `{STUB}`: {comment!r}")
    return indent + rest[1:] if rest.strip() else ""


def stub_lines(text: str, module: str, where: str = "<solution>") -> list[tuple[str, int]]:
    """The stub of one solution, as `(line, solution line number it comes from)` pairs.

    ``text`` is the solution's source, ``module`` its module name (for the default
    `NotImplementedError` message), ``where`` the path that error messages name. Lines keep their
    line endings. Raises MarkerError on a malformed marker.
    """
    functions = _functions(text, where)  # first: a syntax error is reported with its line
    comments = _comment_lines(text, where)
    lines = text.splitlines(keepends=True)
    out: list[tuple[str, int]] = []
    block = None  # (opening line number, indentation, only?, stub lines, solution lines seen?)
    pending = None  # (line number, stub line) of a single-line `# stub:` waiting for its line

    for number, line in enumerate(lines, start=1):
        at = f"{where}:{number}"
        ending = line[len(line.rstrip("\r\n")) :]
        comment = comments.get(number)
        if comment is None and -number in comments and NEAR_STUB.match(comments[-number]):
            raise MarkerError(
                f"{at}: a `{STUB}` marker stands on a line of its own, above the line it replaces "
                f"(or at the top of a block): {line.strip()!r}"
            )
        kind = None
        if comment is not None:
            if comment in (OPEN, OPEN_ONLY, END):
                kind = comment
            elif comment.startswith(STUB):
                kind = STUB
            elif NEAR_BLOCK.match(comment) or NEAR_STUB.match(comment):
                raise MarkerError(
                    f"{at}: not a marker: {comment!r} (the markers are `{OPEN}`, `{OPEN_ONLY}`, "
                    f"`{END}` and `{STUB} <line>`)"
                )
        indent = _indent(line)

        if pending is not None:
            first, stub = pending
            if kind is not None or not line.strip():
                raise MarkerError(
                    f"{where}:{first}: a `{STUB}` line outside a block replaces the line below it, "
                    f"but line {number} is {'blank' if not line.strip() else 'a marker'} "
                    f"(several stub lines: use a `{OPEN}` block)"
                )
            if indent != _indent(lines[first - 1]):
                raise MarkerError(
                    f"{where}:{first}: a `{STUB}` line is indented like the line below it (line {number})"
                )
            out.append((stub + ending, number))
            pending = None
            continue

        if block is None:
            if kind in (OPEN, OPEN_ONLY):
                block = [number, indent, kind == OPEN_ONLY, [], False]
            elif kind == END:
                raise MarkerError(f"{at}: `{END}` with no `{OPEN}` open")
            elif kind == STUB:
                pending = (number, _stub_text(comment, indent, at))
            else:
                out.append((line, number))
            continue

        first, block_indent, only, stubs, seen = block
        if kind in (OPEN, OPEN_ONLY):
            raise MarkerError(
                f"{at}: `{comment}` inside the block opened at line {first} (blocks do not nest; "
                f"close it with `{END}` first)"
            )
        if kind == STUB:
            if only:
                raise MarkerError(
                    f"{at}: a `{OPEN_ONLY}` block (line {first}) has no stub lines; use `{OPEN}` to give them"
                )
            if seen:
                raise MarkerError(
                    f"{at}: `{STUB}` lines come right after `{OPEN}` (line {first}), before the solution lines"
                )
            if indent != block_indent:
                raise MarkerError(f"{at}: a `{STUB}` line is indented like its block's `{OPEN}` (line {first})")
            stubs.append((_stub_text(comment, indent, at) + ending, number))
        elif kind == END:
            if indent != block_indent:
                raise MarkerError(f"{at}: `{END}` is indented like its `{OPEN}` (line {first})")
            if not seen and not stubs:
                raise MarkerError(f"{where}:{first}: empty block: no solution lines before `{END}` (line {number})")
            if stubs or only:
                out += stubs
            else:
                around = [f for f in functions if f[0] < first <= f[1]]
                if not around:
                    raise MarkerError(
                        f"{where}:{first}: this block is in no function, so it has no default stub: "
                        f"give its stub lines with `{STUB} <line>` (or use `{OPEN_ONLY}`)"
                    )
                name = max(around)[2]
                out.append((block_indent + DEFAULT_STUB.format(module=module, function=name) + ending, first))
            block = None
        else:
            block[4] = True
    if block is not None:
        raise MarkerError(f"{where}:{block[0]}: `{OPEN}` is never closed (no `{END}` below it)")
    if pending is not None:
        raise MarkerError(
            f"{where}:{pending[0]}: a `{STUB}` line outside a block replaces the line below it, but the file ends there"
        )
    return out


def stub_source(text: str, module: str, where: str = "<solution>") -> str:
    """The stub built from one solution's source (see the module docstring); checks that it compiles."""
    pairs = stub_lines(text, module, where)
    source = "".join(line for line, _ in pairs)
    try:
        compile(source, f"<stub of {where}>", "exec", dont_inherit=True)
    except SyntaxError as err:
        origin = pairs[err.lineno - 1][1] if err.lineno and 0 < err.lineno <= len(pairs) else "?"
        raise MarkerError(
            f"{where}:{origin}: the stub built from here does not compile (its line {err.lineno}: {err.msg})"
        ) from None
    return source


# --------------------------------------------------------------------------- the course
def solution_files(root: Path = ROOT) -> list[Path]:
    """`solutions/exNN_*.py` of ``root``, sorted."""
    return sorted((Path(root) / SOLUTIONS).glob(PATTERN))


def build(root: Path = ROOT) -> dict[Path, str]:
    """`{exercises/exNN_name.py (relative to root): the stub's text}` for every solution of ``root``.

    Raises FileNotFoundError when ``root`` has no `solutions/` folder, MarkerError on a malformed marker.
    """
    root = Path(root)
    if not (root / SOLUTIONS).is_dir():
        raise FileNotFoundError(
            f"no {SOLUTIONS}/ folder in {root}: a student copy of the course has no solutions, "
            "and its exercises/ stubs are final"
        )
    stubs = {}
    for path in solution_files(root):
        rel = path.relative_to(root)
        text = path.read_bytes().decode("utf-8")
        stubs[EXERCISES / path.name] = stub_source(text, path.stem, rel.as_posix())
    return stubs


def _diff(old: str, new: str, rel: Path) -> str:
    lines = list(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            f"{rel.as_posix()} (committed)",
            f"{rel.as_posix()} (built)",
            n=1,
        )
    )
    lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    if len(lines) > DIFF_LINES:
        lines = lines[:DIFF_LINES] + [f"... ({len(lines) - DIFF_LINES} more diff lines)\n"]
    return "".join(lines)


def problems(root: Path = ROOT) -> list[tuple[Path, str, str]]:
    """Every stub of ``root`` that `--check` rejects: `(exercises/... path, what, diff)`, where `what` is
    "stale", "missing" or "no solution", and `diff` a short unified diff (committed -> built) of a stale stub."""
    root = Path(root)
    stubs = build(root)
    found = []
    for rel, text in stubs.items():
        path = root / rel
        if not path.is_file():
            found.append((rel, "missing", ""))
            continue
        old = path.read_bytes().decode("utf-8", errors="replace")
        if old != text:
            found.append((rel, "stale", _diff(old, text, rel)))
    for path in sorted((root / EXERCISES).glob(PATTERN)):
        rel = path.relative_to(root)
        if rel not in stubs:
            found.append((rel, "no solution", ""))
    return found


def write(root: Path = ROOT) -> tuple[list[Path], int]:
    """Write every stub of ``root`` that differs from what is built; returns (paths written, stubs in all)."""
    root = Path(root)
    stubs = build(root)
    written = []
    for rel, text in stubs.items():
        path = root / rel
        if path.is_file() and path.read_bytes() == text.encode("utf-8"):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        written.append(rel)
    return written, len(stubs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 written (or, with --check, all fresh), 1 a stale or missing stub (--check), "
        "2 malformed markers or no solutions/ folder.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming every stale or missing stub, with a short diff",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="the course folder holding solutions/ and exercises/ (default: this repository)",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            found = problems(args.root)
        else:
            written, total = write(args.root)
    except (MarkerError, FileNotFoundError) as err:
        print(f"build_exercises: error: {err}", file=sys.stderr)
        return 2
    if not args.check:
        for rel in written:
            print(f"wrote {rel.as_posix()}")
        print(f"{total} stubs built from {SOLUTIONS}/, {len(written)} written, {total - len(written)} already fresh")
        built = {p.name for p in solution_files(args.root)}
        for path in sorted((args.root / EXERCISES).glob(PATTERN)):
            if path.name not in built:
                print(f"warning: {EXERCISES.as_posix()}/{path.name} has no solution to build it from (left as it is)")
        return 0
    if not found:
        print(f"{len(solution_files(args.root))} stubs fresh: exercises/ is what solutions/ builds")
        return 0
    for rel, what, diff in found:
        if what == "no solution":
            print(f"{rel.as_posix()}: no solution: there is no {SOLUTIONS.as_posix()}/{rel.name} to build it from")
        else:
            print(f"{rel.as_posix()}: {what}: run `python tools/build_exercises.py`")
        if diff:
            print(diff, end="")
    print(f"{len(found)} stubs stale or missing", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
