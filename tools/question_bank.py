"""The interview question bank: load, check, render, practise.

    python tools/question_bank.py check              # every question answered, every link resolves
    python tools/question_bank.py render             # rewrite the two Markdown pages from the YAML
    python tools/question_bank.py seeds [DIR]        # every seed question and the bank entry that answers it
    python tools/question_bank.py quiz [--topic T]   # practise: a question, Enter, its answer

The bank is two structured files:

- `exercises/question_bank.yaml`: the questions (id, topic, English, 中文, seed sources,
  the notebook section and the exercise that cover it);
- `solutions/question_bank_answers.yaml`: an answer per question id (the answer, the common
  wrong answer, the runnable evidence).

and two pages rendered from them, never edited by hand: `exercises/question_bank.md` (questions
only, for the student version) and `solutions/question_bank.md` (questions and answers).

Links are paths from the repository root, in one of three forms:

- `path`: the file exists;
- `path#anchor`: a heading of that Markdown file or notebook has this GitHub anchor;
- `path::name`: that Python file defines `name` (a function, a class or a module-level name).

Seed sources name an item of the five source texts (seeds `000` to `004`, listed by title in the
README's "Sources"; they are not distributed with the course) as `NNN#item`: `000#3` is
question 3 of `000_*.txt`; `001#FAQ2` is Q2 of the FAQ in `001`, `001#code` its code sample;
`002#1` is the interview question of section 1 of `002`, `002#code1` that section's coding task;
`003#A2` is question 2 of the first list in `003` (面试题库), `003#code1` its first coding task,
`003#7` question 7 of its long list; `004#4` is item 4 of `004`. A claim that sits in a section
of an article and in no question is cited by the section's number: `001§3.3` is section 3.3 of
`001` (the myths quote several).
"""

import argparse
import os
import random
import re
import sys
import unicodedata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = Path("exercises/question_bank.yaml")
ANSWERS = Path("solutions/question_bank_answers.yaml")
QUESTIONS_MD = Path("exercises/question_bank.md")
ANSWERS_MD = Path("solutions/question_bank.md")

QUESTION_KEYS = {"id", "topic", "en", "zh", "seeds", "notebook", "exercise"}
REQUIRED_QUESTION_KEYS = {"id", "topic", "en", "zh"}
ANSWER_KEYS = {"answer", "wrong", "evidence"}
ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SEED = re.compile(r"^(\d{3})#([A-Za-z]*\d*)$")
SECTION = re.compile(r"^(\d{3})§(\d+(?:\.\d+)*)$")


# --------------------------------------------------------------------------- seeds
def seeds_dir():
    """The folder of the five seed texts, for the maintainers who have them: `$MOE_TF_SEEDS_DIR`, else
    `shared/seeds` beside the repository's folder."""
    env = os.environ.get("MOE_TF_SEEDS_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "seeds"


# How each seed file marks its questions: (pattern, item id) rules, tried on every line. A rule
# whose id is a dict sets the parsing state instead (the section or part a question belongs to).
# Otherwise the pattern's second group is the question's wording, and the id is formatted with
# the pattern's groups ("{1}") and the state ("{part}"); a rule that needs a state not set yet
# does not fire.
SEED_RULES = {
    "000": [(r"^### (\d+)\. (.+)$", "{1}")],
    "001": [(r"^\*\*Q(\d+)：(.+?)\*\*$", "FAQ{1}"), (r"^### 5\.2 ()(.+)$", "code")],
    "002": [
        (r"^### (\d+)\. ", {"section": "{1}"}),
        (r"^#### 面试题：()(.+)$", "{section}"),
        (r"^#### 算法编程题：()(.+)$", "code{section}"),
    ],
    "003": [
        (r"^#### 面试题库", {"part": "A"}),
        (r"^#### 编程题库", {"part": "code"}),
        (r"^#### 结论", {"part": None}),
        (r"^\*\*(\d+)\. (.+?)\*\*$", "{part}{1}"),
        (r"^### (\d+)\. (.+)$", "{1}"),
    ],
    "004": [(r"^#### (\d+)\. (.+)$", "{1}")],
}


def seed_items(directory=None):
    """Every question of the seed texts: `{"000#3": "the question's own wording", ...}` in file order.

    Raises FileNotFoundError when the folder or one of the five files is missing.
    """
    directory = Path(directory) if directory else seeds_dir()
    items = {}
    for number, rules in SEED_RULES.items():
        found = sorted(directory.glob(f"{number}_*.txt"))
        if not found:
            raise FileNotFoundError(f"no seed file {number}_*.txt in {directory}")
        state = {}
        for line in found[0].read_text(encoding="utf-8").splitlines():
            for pattern, item in rules:
                m = re.match(pattern, line)
                if not m:
                    continue
                groups = [m.group(0), *m.groups()]
                if isinstance(item, dict):
                    state.update({k: v and v.format(*groups) for k, v in item.items()})
                    continue
                try:
                    key = item.format(*groups, **{k: v for k, v in state.items() if v is not None})
                except KeyError:
                    continue  # e.g. a bold numbered line outside 003's two question lists
                items[f"{number}#{key}"] = m.group(2).strip()
    return items


def seed_sections(directory=None):
    """Every numbered section heading of the seed texts: `{"001§3.3": "算法优缺点", ...}`.

    Raises FileNotFoundError when the folder or one of the five files is missing.
    """
    directory = Path(directory) if directory else seeds_dir()
    sections = {}
    for number in SEED_RULES:
        found = sorted(directory.glob(f"{number}_*.txt"))
        if not found:
            raise FileNotFoundError(f"no seed file {number}_*.txt in {directory}")
        for line in found[0].read_text(encoding="utf-8").splitlines():
            m = re.match(r"^#{1,4} (\d+(?:\.\d+)*)\.? +(.+)$", line)
            if m:
                sections.setdefault(f"{number}§{m.group(1)}", m.group(2).strip())
    return sections


# --------------------------------------------------------------------------- links
def slug(heading):
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def _markdown_sources(path):
    if path.suffix == ".ipynb":
        import json

        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    return [path.read_text(encoding="utf-8")]


def headings(path):
    """`{anchor: heading text}` of every heading in a Markdown file or a notebook's Markdown cells,
    with GitHub's anchors (a repeated heading gets `-1`, `-2`, ...)."""
    seen, out = {}, {}
    for source in _markdown_sources(Path(path)):
        fence = False
        for line in source.splitlines():
            if line.startswith("```"):
                fence = not fence
            m = None if fence else re.match(r"^#{1,6} (.+?)#*\s*$", line)
            if m:
                text = re.sub(r"<[^>]+>", "", m.group(1)).strip()
                base = slug(text)
                n = seen.get(base, 0)
                seen[base] = n + 1
                out[base if n == 0 else f"{base}-{n}"] = text
    return out


def anchors(path):
    """The GitHub anchors of every heading in a Markdown file or a notebook's Markdown cells."""
    return list(headings(path))


def defines(path, name):
    """Whether the Python file at `path` defines `name` at any level (def, class, or NAME =)."""
    text = Path(path).read_text(encoding="utf-8")
    pattern = rf"^\s*(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return re.search(pattern, text, flags=re.MULTILINE) is not None


def check_link(link, root=ROOT):
    """None when `link` resolves inside the repository, else a sentence saying why not."""
    if not isinstance(link, str) or not link.strip():
        return f"empty or non-text link {link!r}"
    if "://" in link:
        return f"{link}: links point into the repository (a path from its root), not to the web"
    path, sep, name = link.partition("::")
    path, hash_, anchor = path.partition("#")
    file = Path(root) / path
    if path.startswith("/") or ".." in Path(path).parts:
        return f"{link}: use a path from the repository root"
    if not file.is_file():
        return f"{link}: no file {path}"
    if hash_:
        if file.suffix not in (".md", ".ipynb"):
            return f"{link}: '#anchor' only for .md and .ipynb files"
        if anchor not in anchors(file):
            return f"{link}: {path} has no heading with anchor '{anchor}'"
    if sep:
        if file.suffix != ".py":
            return f"{link}: '::name' only for .py files"
        if not defines(file, name):
            return f"{link}: {path} does not define '{name}'"
    return None


# --------------------------------------------------------------------------- the bank
def _read_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load(root=ROOT, answers=True):
    """`(topics, questions, answers)`; `answers` is None when asked not to read them or when the
    student version has no `solutions/`."""
    root = Path(root)
    data = _read_yaml(root / QUESTIONS)
    found = None
    if answers and (root / ANSWERS).is_file():
        found = _read_yaml(root / ANSWERS)["answers"]
    return data["topics"], data["questions"], found


def problems(root=ROOT, seeds=None, sections=None):
    """Everything wrong with the bank, as sentences (an empty list when it is sound).

    Checks the fields of every question and answer, that every question has an answer and every
    answer a question, that every link resolves, and, when `seeds` (a `seed_items` dict) is
    given, that every seed question is answered by some entry and every seed source exists; when
    `sections` (a `seed_sections` dict) is given, that every cited section exists.
    """
    topics, questions, answers = load(root)
    out = []
    topic_ids = [t["id"] for t in topics]
    ids = []
    for q in questions:
        qid = q.get("id", "?")
        ids.append(qid)
        if not ID.match(str(qid)):
            out.append(f"question id {qid!r}: use lower-case words joined by '-'")
        missing = REQUIRED_QUESTION_KEYS - q.keys()
        if missing:
            out.append(f"{qid}: missing {sorted(missing)}")
        unknown = q.keys() - QUESTION_KEYS
        if unknown:
            out.append(f"{qid}: unknown fields {sorted(unknown)} (allowed: {sorted(QUESTION_KEYS)})")
        for key in ("en", "zh"):
            if key in q and not str(q[key]).strip():
                out.append(f"{qid}: empty '{key}'")
        if "zh" in q and not re.search(r"[\u4e00-\u9fff]", str(q["zh"])):
            out.append(f"{qid}: 'zh' has no Chinese text")
        if q.get("topic") not in topic_ids:
            out.append(f"{qid}: topic {q.get('topic')!r} is not one of {topic_ids}")
        for s in q.get("seeds", []) or []:
            if SECTION.match(str(s)):
                if sections is not None and s not in sections:
                    out.append(f"{qid}: seed source {s} is not a section of the seed texts")
            elif not SEED.match(str(s)):
                out.append(f"{qid}: seed source {s!r} is not like '000#3' (a question) or '001§3.3' (a section)")
            elif seeds is not None and s not in seeds:
                out.append(f"{qid}: seed source {s} is not a question of the seed texts")
        for key in ("notebook", "exercise"):
            if key in q:
                why = check_link(q[key], root)
                if why:
                    out.append(f"{qid} {key}: {why}")
        if "notebook" not in q and "exercise" not in q:
            out.append(f"{qid}: links to neither a notebook section nor an exercise")
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        out.append(f"duplicate question ids: {sorted(duplicates)}")
    if answers is not None:
        for qid in ids:
            a = answers.get(qid)
            if a is None:
                out.append(f"{qid}: no answer in {ANSWERS}")
                continue
            unknown = a.keys() - ANSWER_KEYS
            if unknown:
                out.append(f"{qid} answer: unknown fields {sorted(unknown)} (allowed: {sorted(ANSWER_KEYS)})")
            if not str(a.get("answer", "")).strip():
                out.append(f"{qid}: empty answer")
            if not a.get("evidence"):
                out.append(f"{qid}: answer points to no runnable evidence")
            for link in a.get("evidence", []) or []:
                why = check_link(link, root)
                if why:
                    out.append(f"{qid} evidence: {why}")
        for qid in answers:
            if qid not in ids:
                out.append(f"answer {qid!r} has no question")
    if seeds is not None:
        covered = {s for q in questions for s in q.get("seeds", []) or []}
        for s in seeds:
            if s not in covered:
                out.append(f"seed question {s} ({seeds[s]}) is answered by no entry")
    return out


# --------------------------------------------------------------------------- rendering
def _rel(link, page, root=ROOT):
    """A Markdown link from `page` (a path from the root) to `link` (path[#anchor] or path::name),
    labelled for reading: "notebook 04 › 2. Top-k gates", "myths.md › ...", "`ex01.py::gate`"."""
    path, sep, name = link.partition("::")
    path, _, anchor = path.partition("#")
    href = os.path.relpath(path, Path(page).parent) + (f"#{anchor}" if anchor else "")
    file = Path(path)
    if sep:
        label = f"`{file.name}::{name}`"
    elif anchor:
        heading = headings(Path(root) / path).get(anchor, anchor)
        where = f"notebook {file.name[:2]}" if file.suffix == ".ipynb" and file.name[:2].isdigit() else file.name
        label = f"{where} › {heading}"
    else:
        label = f"`{path}`"
    return f"[{label}]({href})"


def _seed_label(source):
    return f"`{source}`"


def _question_block(q, page, number, root):
    lines = [f"### {number}. {q['en'].strip()}", "", f"{q['zh'].strip()}", ""]
    meta = [f"id `{q['id']}`"]
    if q.get("seeds"):
        meta.append("seeds: " + ", ".join(_seed_label(s) for s in q["seeds"]))
    if q.get("notebook"):
        meta.append("notebook: " + _rel(q["notebook"], page, root))
    if q.get("exercise"):
        meta.append("exercise: " + _rel(q["exercise"], page, root))
    lines += ["<sub>" + " · ".join(meta) + "</sub>", ""]
    return lines


def _labelled(label, text):
    """`**label** text`, or the label on its own line when the text opens with a list or a block."""
    text = text.strip()
    if re.match(r"^([-*] |\d+\. |```|\|)", text):
        return [f"**{label}**", "", text, ""]
    return [f"**{label}** {text}", ""]


def render(root=ROOT, with_answers=False):
    """The Markdown page: questions only, or questions with their answers."""
    topics, questions, answers = load(root, answers=with_answers)
    page = ANSWERS_MD if with_answers else QUESTIONS_MD
    title = "Interview question bank: answers" if with_answers else "Interview question bank"
    lines = [
        f"# {title}",
        "",
        "<!-- Generated by tools/question_bank.py render from exercises/question_bank.yaml"
        + (" and solutions/question_bank_answers.yaml" if with_answers else "")
        + ". Edit the YAML, not this page. -->",
        "",
    ]
    if with_answers:
        intro = (
            f"{len(questions)} questions, each with a concise answer, the common wrong answer where "
            "the seed texts or the web give one, and the runnable evidence. The questions alone, to "
            f"practise on, are in [`{QUESTIONS_MD}`]({os.path.relpath(QUESTIONS_MD, page.parent)})."
        )
    else:
        intro = (
            f"{len(questions)} questions that MoE interviews ask, in English with the Chinese wording "
            "of the five source texts (seed `NNN`, item `Q`, or `NNN§S` for section S of an article; "
            f"the texts are listed by title in the README's [Sources]({os.path.relpath('README.md', page.parent)}#sources)). "
            "Answer them yourself first; the answers, "
            "each with runnable evidence, are in "
            f"[`{ANSWERS_MD}`]({os.path.relpath(ANSWERS_MD, page.parent)}). "
            "Practise one at a time with `python tools/question_bank.py quiz`."
        )
    lines += [intro, "", "## Topics", ""]
    for t in topics:
        count = sum(q["topic"] == t["id"] for q in questions)
        if count:
            lines.append(f"- [{t['title']}](#{slug(t['title'])}) ({count})")
    lines.append("")
    number = 0
    for t in topics:
        chosen = [q for q in questions if q["topic"] == t["id"]]
        if not chosen:
            continue
        lines += [f"## {t['title']}", ""]
        for q in chosen:
            number += 1
            lines += _question_block(q, page, number, root)
            if with_answers:
                a = answers[q["id"]]
                lines += _labelled("Answer.", a["answer"])
                if a.get("wrong"):
                    lines += _labelled("Common wrong answer.", a["wrong"])
                lines += ["**Evidence:** " + " · ".join(_rel(e, page, root) for e in a["evidence"]), ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- command line
def _quiz(root, topic):
    topics, questions, answers = load(root)
    if topic:
        known = [t["id"] for t in topics]
        if topic not in known:
            raise SystemExit(f"--topic {topic!r}: choose one of {', '.join(known)}")
        questions = [q for q in questions if q["topic"] == topic]
    random.shuffle(questions)
    for q in questions:
        print(f"\n[{q['topic']}] {q['en'].strip()}\n{q['zh'].strip()}")
        try:
            input("  (Enter for the answer, Ctrl-D to stop) ")
        except EOFError:
            print()
            return
        if answers is None:
            print("  no solutions/ folder here: the answers are not in the student version")
            continue
        a = answers[q["id"]]
        print("\n" + a["answer"].strip())
        if a.get("wrong"):
            print("\nCommon wrong answer: " + a["wrong"].strip())
        print("\nEvidence: " + ", ".join(a["evidence"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="every question answered, every link resolves, every seed question covered")
    sub.add_parser("render", help="rewrite exercises/question_bank.md and solutions/question_bank.md")
    s = sub.add_parser("seeds", help="list the seed questions and the entries that answer them")
    s.add_argument("dir", nargs="?", help="the seed texts' folder (default: $MOE_TF_SEEDS_DIR, else ../shared/seeds)")
    q = sub.add_parser("quiz", help="practise: one question at a time")
    q.add_argument("--topic", help="only this topic")
    args = parser.parse_args(argv)

    if args.command == "render":
        (ROOT / QUESTIONS_MD).write_text(render(ROOT, with_answers=False), encoding="utf-8")
        if (ROOT / ANSWERS).is_file():
            (ROOT / ANSWERS_MD).write_text(render(ROOT, with_answers=True), encoding="utf-8")
        print(f"wrote {QUESTIONS_MD} and {ANSWERS_MD}")
    elif args.command == "check":
        try:
            seeds, sections = seed_items(), seed_sections()
        except FileNotFoundError as e:
            print(f"seed coverage not checked: {e}")
            seeds = sections = None
        found = problems(ROOT, seeds, sections)
        for p in found:
            print(p)
        _, questions, _ = load(ROOT)
        print(f"{len(questions)} questions, {len(found)} problems")
        return 1 if found else 0
    elif args.command == "seeds":
        items = seed_items(args.dir)
        _, questions, _ = load(ROOT, answers=False)
        by_seed = {}
        for q in questions:
            for s in q.get("seeds", []) or []:
                by_seed.setdefault(s, []).append(q["id"])
        for s, text in items.items():
            print(f"{s:10} {', '.join(by_seed.get(s, ['-- not answered --'])):40} {text}")
    elif args.command == "quiz":
        _quiz(ROOT, args.topic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
