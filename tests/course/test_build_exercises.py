"""`tools/build_exercises.py`: the exercise stubs are built from the reference solutions.

What is proved here:
- the committed `exercises/exNN_*.py` are exactly what `solutions/exNN_*.py` build (`--check` exits 0),
  so a solution edited without rebuilding its stub fails here;
- every stub compiles, holds no marker, and every solution function with a plain `# --- solution`
  block raises the default `NotImplementedError` (named after its module and function) in the stub;
- `--check` catches a stale stub, a missing stub and a stub without a solution, and the default
  command rewrites them (on copies in tmp_path; the real files are never written);
- the marker scheme on small sources: blocks, `# stub:` lines, `# --- solution only`, the single-line
  form, and an error naming the file and line for every malformed marker.

The tests that read the real `solutions/` skip in a student copy of the course
(`tools/student_version.py` leaves `solutions/` out: there the stubs are final).
"""

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import build_exercises as be

HAS_SOLUTIONS = (ROOT / "solutions").is_dir()
needs_solutions = pytest.mark.skipif(
    not HAS_SOLUTIONS,
    reason="no solutions/: a student copy of the course (tools/student_version.py) leaves the reference solutions "
    "out, so there is nothing to build the stubs from (its exercises/ stubs are final)",
)


def _stub(source, module="ex99_demo", where="ex99_demo.py"):
    return be.stub_source(textwrap.dedent(source), module, where)


def _blocks(source):
    """`(line of `# --- solution`, has `# stub:` lines?)` for every plain block of a solution's source."""
    lines = source.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() == be.OPEN:
            out.append((i + 1, lines[i + 1].strip().startswith(be.STUB)))
    return out


def _function_at(tree, line):
    """Qualified name of the innermost function of ``tree`` around ``line``."""
    best = None

    def visit(node, prefix):
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if isinstance(child, ast.FunctionDef) and child.lineno < line <= child.end_lineno:
                    best = name
                visit(child, name + ".")

    visit(tree, "")
    return best


def _functions(tree):
    """`{qualified name: FunctionDef}` of a module's functions and methods."""
    out = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[prefix + child.name] = child
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def _raised_message(function):
    """The message of the `raise NotImplementedError("...")` that ends ``function``, else None."""
    last = function.body[-1]
    if (
        isinstance(last, ast.Raise)
        and isinstance(last.exc, ast.Call)
        and isinstance(last.exc.func, ast.Name)
        and last.exc.func.id == "NotImplementedError"
        and last.exc.args
        and isinstance(last.exc.args[0], ast.Constant)
    ):
        return last.exc.args[0].value
    return None


# ------------------------------------------------------------------ the real course
@needs_solutions
def test_committed_stubs_are_fresh():
    found = be.problems(ROOT)
    assert found == [], "stale exercises/ stubs: run `python tools/build_exercises.py`\n" + "\n".join(
        f"{rel}: {what}\n{diff}" for rel, what, diff in found
    )


@needs_solutions
def test_check_command_exits_zero():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_exercises.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "16 stubs fresh" in result.stdout


@needs_solutions
def test_every_solution_has_a_stub_and_every_stub_a_solution():
    solutions = {p.name for p in be.solution_files(ROOT)}
    stubs = {p.name for p in (ROOT / "exercises").glob(be.PATTERN)}
    assert solutions == stubs and len(solutions) == 16


@needs_solutions
@pytest.mark.parametrize("solution", be.solution_files(ROOT) if HAS_SOLUTIONS else [], ids=lambda p: p.stem)
def test_stub_compiles_and_blocks_become_not_implemented(solution):
    source = solution.read_text(encoding="utf-8")
    stub = be.stub_source(source, solution.stem, f"solutions/{solution.name}")
    compile(stub, f"exercises/{solution.name}", "exec", dont_inherit=True)
    assert be.OPEN not in stub and be.END not in stub and be.STUB not in stub, "a marker leaked into the stub"
    assert stub != source, "the stub is the solution: no markers?"
    solution_tree, stub_functions = ast.parse(source), _functions(ast.parse(stub))
    blocks = _blocks(source)
    for line, explicit in blocks:
        name = _function_at(solution_tree, line)
        if name is None:
            assert explicit, f"{solution.name}:{line}: a block outside a function needs its stub lines"
            continue
        message = _raised_message(stub_functions[name])
        if not explicit:
            assert message == f"{solution.stem}.{name}: not implemented yet (see the docstring)", (
                f"{solution.name}:{line}: {name} should raise the default NotImplementedError in the stub"
            )
        elif "NotImplementedError" in source.splitlines()[line]:
            assert message, f"{solution.name}:{line}: {name} should end with its NotImplementedError in the stub"
    if solution.stem not in ("ex15_bug_museum", "ex16_quiz"):  # fix-the-bug and fill-in-the-answer exercises
        assert blocks and all(
            _raised_message(stub_functions[_function_at(solution_tree, line)])
            for line, _ in blocks
            if _function_at(solution_tree, line)
        ), solution.name


# ------------------------------------------------------------------ --check and writing, on copies
def _copy_course(tmp_path):
    for folder in ("solutions", "exercises"):
        (tmp_path / folder).mkdir()
        for path in (ROOT / folder).glob(be.PATTERN):
            shutil.copyfile(path, tmp_path / folder / path.name)
    return tmp_path


@needs_solutions
def test_check_catches_stale_missing_and_orphan_stubs(tmp_path, capsys):
    root = _copy_course(tmp_path)
    assert be.main(["--check", "--root", str(root)]) == 0
    capsys.readouterr()

    stale = root / "exercises" / "ex03_topk_gating.py"
    stale.write_text(stale.read_text(encoding="utf-8").replace("(see the docstring)", "(soon)"), encoding="utf-8")
    solution = root / "solutions" / "ex07_z_loss.py"  # a solution edited, its stub not rebuilt
    solution.write_text(
        solution.read_text(encoding="utf-8").replace('"""Exercise 7', '"""Exercise seven', 1), encoding="utf-8"
    )
    (root / "exercises" / "ex05_cv_losses.py").unlink()
    (root / "exercises" / "ex99_orphan.py").write_text("X = None\n", encoding="utf-8")

    found = {rel.name: what for rel, what, _ in be.problems(root)}
    assert found == {
        "ex03_topk_gating.py": "stale",
        "ex07_z_loss.py": "stale",
        "ex05_cv_losses.py": "missing",
        "ex99_orphan.py": "no solution",
    }
    assert be.main(["--check", "--root", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "exercises/ex03_topk_gating.py: stale: run `python tools/build_exercises.py`" in out
    assert "exercises/ex05_cv_losses.py: missing" in out
    assert "exercises/ex07_z_loss.py: stale" in out and "exercises/ex99_orphan.py: no solution" in out
    assert '-    raise NotImplementedError("ex03_topk_gating.top_k_gates: not implemented yet (soon)")' in out
    assert (
        '+    raise NotImplementedError("ex03_topk_gating.top_k_gates: not implemented yet (see the docstring)")' in out
    )
    assert '+"""Exercise seven' in out
    assert "4 stubs stale or missing" in err

    assert be.main(["--root", str(root)]) == 0  # rebuild: the orphan stays (it is reported, never deleted)
    out, _ = capsys.readouterr()
    assert "wrote exercises/ex03_topk_gating.py" in out and "wrote exercises/ex05_cv_losses.py" in out
    assert "16 stubs built from solutions/, 3 written, 13 already fresh" in out
    assert "warning: exercises/ex99_orphan.py has no solution to build it from (left as it is)" in out
    assert [what for _, what, _ in be.problems(root)] == ["no solution"]
    assert (root / "exercises" / "ex03_topk_gating.py").read_bytes() == (
        ROOT / "exercises" / "ex03_topk_gating.py"
    ).read_bytes()


def test_no_solutions_folder_is_an_error_not_a_stale_stub(tmp_path, capsys):
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "ex01_demo.py").write_text("X = None\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="student copy"):
        be.build(tmp_path)
    assert be.main(["--check", "--root", str(tmp_path)]) == 2
    assert "no solutions/ folder" in capsys.readouterr().err


def test_a_malformed_solution_fails_the_check_naming_file_and_line(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "ex01_demo.py").write_text("def f():\n    # --- solution\n    return 1\n")
    assert be.main(["--check", "--root", str(tmp_path)]) == 2
    assert "solutions/ex01_demo.py:2: `# --- solution` is never closed" in capsys.readouterr().err
    assert be.main(["--root", str(tmp_path)]) == 2
    assert not (tmp_path / "exercises").exists()


# ------------------------------------------------------------------ the marker scheme
def test_a_block_becomes_the_default_raise_with_its_function_and_indentation():
    stub = _stub('''\
        import numpy as np

        def softmax(z):
            """Docstring."""
            # --- solution
            e = np.exp(z - z.max())

            return e / e.sum()
            # --- end solution


        class Layer:
            def call(self, x):
                if x:
                    # --- solution
                    return x
                    # --- end solution
                return None
        ''')
    assert stub == textwrap.dedent('''\
        import numpy as np

        def softmax(z):
            """Docstring."""
            raise NotImplementedError("ex99_demo.softmax: not implemented yet (see the docstring)")


        class Layer:
            def call(self, x):
                if x:
                    raise NotImplementedError("ex99_demo.Layer.call: not implemented yet (see the docstring)")
                return None
        ''')


def test_stub_lines_single_lines_and_solution_only_blocks():
    stub = _stub('''\
        # stub: """Exercise 99."""
        """Exercise 99 (reference solution)."""

        # stub: import numpy as np  # noqa: F401 - for your solution
        import numpy as np

        # stub: ANSWER = None  # one of "a", "b"
        ANSWER = "b"


        def f(x):
            # --- solution
            # stub: raise NotImplementedError("exercise 99: implement f")
            return x
            # --- end solution


        def g(x):
            # --- solution
            # stub: if x:
            # stub:     return x + 1  # the bug
            # stub:
            # FIX: no off-by-one.
            return x
            # --- end solution


        def h(x):
            y = x
            # --- solution only
            y = y + 1
            # --- end solution
            return y
        ''')
    assert stub == textwrap.dedent('''\
        """Exercise 99."""

        import numpy as np  # noqa: F401 - for your solution

        ANSWER = None  # one of "a", "b"


        def f(x):
            raise NotImplementedError("exercise 99: implement f")


        def g(x):
            if x:
                return x + 1  # the bug



        def h(x):
            y = x
            return y
        ''')


def test_markers_inside_strings_are_text():
    source = 'TEXT = """\n# --- solution\n# stub: x\n"""\n'
    assert _stub(source) == source


def test_line_endings_and_a_missing_final_newline_are_kept():
    assert _stub("def f():\r\n    # --- solution\r\n    return 1\r\n    # --- end solution\r\n") == (
        'def f():\r\n    raise NotImplementedError("ex99_demo.f: not implemented yet (see the docstring)")\r\n'
    )
    assert _stub("# stub: X = None\nX = 1") == "X = None"


@pytest.mark.parametrize(
    "source, line, expected",
    [
        ("def f():\n    # --- solution\n    return 1\n", 2, "`# --- solution` is never closed"),
        ("def f():\n    return 1\n    # --- end solution\n", 3, "`# --- end solution` with no `# --- solution` open"),
        (
            "def f():\n    # --- solution\n    x = 1\n    # --- solution\n    return x\n    # --- end solution\n",
            4,
            "blocks do not nest",
        ),
        (
            "def f():\n    # --- solution\n    x = 1\n    # stub: return 0\n    return x\n    # --- end solution\n",
            4,
            "`# stub:` lines come right after `# --- solution`",
        ),
        (
            "def f():\n    # --- solution\n        # stub: return 0\n    return 1\n    # --- end solution\n",
            3,
            "indented like its block's",
        ),
        ("def f():\n    # --- solution\n    return 1\n  # --- end solution\n", 4, "is indented like its"),
        ("def f():\n    pass\n    # --- solution\n    # --- end solution\n", 3, "empty block"),
        (
            "def f():\n    # --- solution only\n    # stub: return 0\n    return 1\n    # --- end solution\n",
            3,
            "has no stub lines",
        ),
        ("# --- solution\nX = 1\n# --- end solution\n", 1, "in no function"),
        ("# stub: X = None\n\nX = 1\n", 1, "but line 2 is blank"),
        ("# stub: X = None\n# stub: Y = None\nX = 1\n", 1, "use a `# --- solution` block"),
        ("# stub: X = None\n# --- solution only\nX = 1\n# --- end solution\n", 1, "is a marker"),
        ("def f():\n    # stub: return 0\n    if True:\n        return 1\n", None, "compile"),
        ("def f():\n  # stub: return 0\n    return 1\n", 2, "indented like the line below it"),
        ("X = 1\n# stub: X = None\n", 2, "the file ends there"),
        ("X = 1  # stub: X = None\n", 1, "stands on a line of its own"),
        ("#stub: X = None\nX = 1\n", 1, "not a marker"),
        ("# stub:X = None\nX = 1\n", 1, "write a space after `# stub:`"),
        ("def f():\n    # --- end solutions\n    return 1\n", 2, "not a marker"),
        ("def f():\n    # ---solution\n    return 1\n", 2, "not a marker"),
        ("def f():\n    # --- solution\n    return 1\n    # --- end solutionx\n", 4, "not a marker"),
        ("def f():\n    # --- Solution:\n    return 1\n", 2, "not a marker"),
        ("def f(:\n    return 1\n", 1, "not valid Python"),
    ],
)
def test_malformed_markers_name_the_file_and_line(source, line, expected):
    with pytest.raises(be.MarkerError) as caught:
        be.stub_source(source, "ex99_demo", "solutions/ex99_demo.py")
    message = str(caught.value)
    prefix = "solutions/ex99_demo.py:" + ("" if line is None else f"{line}:")
    assert message.startswith(prefix), message
    assert expected in message, message


def test_a_stub_that_would_not_compile_names_the_solution_line():
    source = "def f(x):\n    if x:\n        # stub: pass\n        return 1\n    # stub: else\n    return 2\n"
    with pytest.raises(be.MarkerError, match=r"^solutions/ex99_demo.py:6: the stub built from here does not compile"):
        be.stub_source(source, "ex99_demo", "solutions/ex99_demo.py")


def test_rulers_and_ordinary_comments_are_not_markers():
    source = (
        "# ---------------------------------------------------------------------------\n# A  make_selector\n"
        "# stubborn bugs live here\nX = 1  # stub out later\n"
    )
    assert _stub(source) == source


def test_the_example_of_the_tool_s_docstring():
    doc = be.__doc__
    example = doc[doc.index("For example, this solution\n") :].split("\n\n", 1)[1].split("\n\ngives the stub")[0]
    stub = be.stub_source(textwrap.dedent(example) + "\n", "ex01_name", "example")
    assert 'Q1_ANSWER = None  # one of "a", "b", "c", "d"\n' in stub
    assert '    raise NotImplementedError("ex01_name.softmax: not implemented yet (see the docstring)")\n' in stub
    assert "import numpy as np" in stub and "np.exp" not in stub
