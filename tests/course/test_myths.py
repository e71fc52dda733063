"""`docs/myths.md`: every myth has its section, and every snippet prints what the page says it prints.

The page answers claims of the seed texts with the papers and, where a claim is about
computation, with a short `moe_tf` snippet (a ```python block) followed by its exact output
(the ```text block right after it). This test:

- checks the title and that every myth heading is present, in order;
- checks that every ```python block is followed by a ```text block, and that each
  computational myth has at least one snippet;
- runs all snippets in ONE fresh Python process (cwd = the repository root,
  `TF_CPP_MIN_LOG_LEVEL=3`), each in a fresh namespace right after
  `keras.utils.set_random_seed(0)`, captures each snippet's stdout separately (a marker
  line is printed between snippets) and compares it with its ```text block (trailing
  whitespace ignored). A failure names the section.

After editing a snippet, regenerate the expected outputs from a real run (never by hand):

    python tests/course/test_myths.py --update
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# One worker runs this whole module under pytest-xdist (`make test`): its module fixture is expensive.
pytestmark = pytest.mark.xdist_group("myths")

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "myths.md"
TITLE = "# Myths vs facts"

# The myth headings, in the order of the page (the question bank links to their anchors).
HEADINGS = [
    '"MoE reduces the parameter count"',
    '"The experts are trained independently"',
    '"MoE is an attention model, an extension of the Transformer"',
    '"The experts share weights through a parameter server"',
    '"MoE solves the vanishing gradient problem"',
    '"Mixed precision combines floating-point numbers and integers"',
    '"BERT, XLNet and GLM are MoE models"',
    '"The papers the seeds recommend"',
    '"A Dense(1, softmax) layer selects an expert"',
    '"MoE is a model compression technique"',
    '"Each expert needs its own training data"',
]

# Claims about computation: their sections must settle them with a snippet and its output.
COMPUTATIONAL = [
    '"MoE reduces the parameter count"',
    '"The experts are trained independently"',
    '"MoE is an attention model, an extension of the Transformer"',
    '"The experts share weights through a parameter server"',
    '"Mixed precision combines floating-point numbers and integers"',
    '"A Dense(1, softmax) layer selects an expert"',
    '"MoE is a model compression technique"',
    '"Each expert needs its own training data"',
]

MARKER = "@@@ myths.md snippet {} @@@"
TIMEOUT_S = 600

# Runs in the child process: reads the snippets (a JSON list) on stdin, runs each in a fresh
# namespace after seeding, and prints a marker line before each snippet's output.
DRIVER = r"""
import json, sys, traceback
import keras

codes = json.loads(sys.stdin.read())
for i, code in enumerate(codes):
    print(MARKER.format(i), flush=True)
    keras.utils.set_random_seed(0)
    try:
        exec(compile(code, f"<docs/myths.md snippet {i}>", "exec"), {"__name__": "__myths__"})
    except BaseException:
        traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()
"""


def _fence(line):
    """The info string of a fence line (``` or ```lang), else None."""
    m = re.match(r"^```\s*(\S*)\s*$", line)
    return m.group(1) if m else None


def parse(text):
    """`(headings, snippets)` of the page.

    `headings`: the text of every `## ` heading outside code blocks, in order.
    `snippets`: one dict per ```python block: `heading` (its section), `line` (1-based line of
    the opening fence), `code`, `expected` (the ```text block that follows it, blank lines
    allowed in between, else None), and `text_span` (0-based `(first, last)` line indices of
    that text block's content, for `--update`; None when missing).
    """
    lines = text.splitlines()
    headings, snippets, heading = [], [], None
    i = 0
    while i < len(lines):
        lang = _fence(lines[i])
        if lang is None:
            m = re.match(r"^## (.+?)\s*$", lines[i])
            if m:
                heading = m.group(1)
                headings.append(heading)
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and _fence(lines[j]) != "":
            j += 1
        body = lines[start + 1 : j]
        i = j + 1
        if lang != "python":
            continue
        snippet = {
            "heading": heading,
            "line": start + 1,
            "code": "\n".join(body) + "\n",
            "expected": None,
            "text_span": None,
        }
        k = i
        while k < len(lines) and not lines[k].strip():
            k += 1
        if k < len(lines) and _fence(lines[k]) == "text":
            end = k + 1
            while end < len(lines) and _fence(lines[end]) != "":
                end += 1
            snippet["expected"] = "\n".join(lines[k + 1 : end])
            snippet["text_span"] = (k + 1, end)
            i = end + 1
        snippets.append(snippet)
    return headings, snippets


def normalise(output):
    """Trailing whitespace of every line and trailing blank lines removed."""
    return "\n".join(line.rstrip() for line in output.rstrip().splitlines())


def run_snippets(codes):
    """Run the snippets in one fresh Python process; returns `(outputs, stderr)`.

    `outputs[i]` is snippet i's stdout (None when the process died before reaching it).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    driver = DRIVER.replace("MARKER", repr(MARKER))
    proc = subprocess.run(
        [sys.executable, "-c", driver],
        check=False,
        input=json.dumps(codes),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=TIMEOUT_S,
    )
    outputs = [None] * len(codes)
    marker = re.escape(MARKER).replace(re.escape("{}"), r"(\d+)")
    parts = re.split(rf"^{marker}$\n?", proc.stdout, flags=re.MULTILINE)
    for index, out in zip(parts[1::2], parts[2::2]):
        outputs[int(index)] = out
    return outputs, proc.stderr


def _page():
    return PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""


HEADINGS_FOUND, SNIPPETS = parse(_page())
SNIPPET_IDS = [
    f"{n}-{re.sub(r'[^a-z0-9]+', '-', (s['heading'] or 'top').lower()).strip('-')}" for n, s in enumerate(SNIPPETS)
]


@pytest.fixture(scope="module")
def outputs():
    """Every snippet's stdout, from one run of all of them."""
    out, stderr = run_snippets([s["code"] for s in SNIPPETS])
    return out, stderr


def test_page_title_and_headings():
    assert PAGE.is_file(), f"{PAGE.relative_to(ROOT)} is missing"
    assert _page().splitlines()[0] == TITLE, f"the first line of docs/myths.md must be {TITLE!r}"
    missing = [h for h in HEADINGS if h not in HEADINGS_FOUND]
    assert not missing, f"docs/myths.md lacks the sections: {missing}"
    order = [h for h in HEADINGS_FOUND if h in HEADINGS]
    assert order == HEADINGS, f"the myth sections are out of order: {order}"


def test_every_snippet_is_followed_by_its_output():
    assert SNIPPETS, "docs/myths.md has no ```python snippet"
    orphans = [f"{s['heading']} (line {s['line']})" for s in SNIPPETS if s["expected"] is None]
    assert not orphans, f"these ```python blocks are not followed by a ```text block: {orphans}"


def test_computational_myths_have_a_snippet():
    with_code = {s["heading"] for s in SNIPPETS}
    missing = [h for h in COMPUTATIONAL if h not in with_code]
    assert not missing, f"these computational myths have no ```python snippet: {missing}"


@pytest.mark.parametrize("index", range(len(SNIPPETS)), ids=SNIPPET_IDS)
def test_snippet_prints_its_documented_output(outputs, index):
    got, stderr = outputs
    snippet = SNIPPETS[index]
    where = f"section ## {snippet['heading']} (docs/myths.md line {snippet['line']})"
    assert got[index] is not None, f"{where}: the snippet process died before this snippet ran:\n{stderr[-3000:]}"
    assert snippet["expected"] is not None, f"{where}: no ```text block after the snippet"
    expected, actual = normalise(snippet["expected"]), normalise(got[index])
    assert actual == expected, (
        f"{where}: the snippet's output differs from the page.\n--- page (```text)\n{expected}\n"
        f"--- printed\n{actual}\n(regenerate with `python tests/course/test_myths.py --update` if the change is intended)"
    )


def _update():
    """Rewrite every ```text block of the page with its snippet's real output."""
    text = _page()
    _, snippets = parse(text)
    outputs, stderr = run_snippets([s["code"] for s in snippets])
    lines = text.splitlines()
    # Replace from the end so that earlier line indices stay valid.
    for snippet, out in reversed(list(zip(snippets, outputs))):
        if out is None:
            raise SystemExit(f"the snippet process died at ## {snippet['heading']}:\n{stderr[-3000:]}")
        new = normalise(out).splitlines()
        if snippet["text_span"] is None:
            end = snippet["line"]  # 1-based fence line -> find the closing fence of the python block
            while _fence(lines[end]) != "":
                end += 1
            lines[end + 1 : end + 1] = ["```text", *new, "```"]
        else:
            first, last = snippet["text_span"]
            lines[first:last] = new
    PAGE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"updated {len(snippets)} output blocks in {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        _update()
    else:
        raise SystemExit("usage: python tests/course/test_myths.py --update   (or run it with pytest)")
