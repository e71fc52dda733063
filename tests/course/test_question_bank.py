"""The interview question bank (`exercises/question_bank.yaml` + `solutions/question_bank_answers.yaml`).

What is proved here:
- every question has an answer, every answer a question, and every link (notebook section,
  exercise, evidence) resolves to a file, a heading anchor or a Python name in this repository;
- every question of the five seed texts (not distributed with the course; `$MOE_TF_SEEDS_DIR`, else
  `shared/seeds` beside the repository) is answered by some entry (skipped, with the reason, where
  they are missing);
- the topics issue 7 lists each have their entry;
- the two Markdown pages are what `tools/question_bank.py render` writes from the YAML;
- the checker itself catches broken links, missing answers, unknown seed sources and uncovered
  seed questions (on a small bank written in tmp_path), and the seed parser reads each seed
  layout (on fixture files written in tmp_path).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import question_bank as qb

HAS_SOLUTIONS = (ROOT / qb.ANSWERS).is_file()

# The topics issue 7 names, and the entry that answers each.
ISSUE_TOPICS = {
    "history and the 1991 losses": ["moe-history", "jacobs-1991-losses"],
    "dense vs sparse": ["dense-vs-sparse-moe"],
    "total vs active parameters": ["total-vs-active-parameters"],
    "compute vs memory": ["compute-vs-memory"],
    "softmax -> top-k -> renormalise": ["softmax-topk-renormalise"],
    "top-1 vs top-2": ["top1-vs-top2"],
    "noisy top-k": ["noisy-topk"],
    "GShard random routing": ["gshard-random-routing"],
    "importance/load CV2": ["importance-load-cv2"],
    "the Switch loss and why it is multiplied by E": ["switch-loss-times-e"],
    "loss weight choice": ["balance-loss-weight"],
    "sequence vs batch balance": ["sequence-vs-batch-balance"],
    "aux-loss-free bias": ["aux-loss-free-bias"],
    "capacity, token dropping, batch-dependent outputs": [
        "capacity-factor",
        "token-dropping",
        "batch-dependent-outputs",
    ],
    "expert choice and decoders": ["expert-choice-and-decoders"],
    "Soft MoE": ["soft-moe"],
    "z-loss and float32 routers": ["z-loss-and-float32-router"],
    "expert collapse and how to diagnose it": ["expert-collapse"],
    "the shrinking-batch problem": ["shrinking-batch-problem"],
    "expert parallelism and all-to-all": ["expert-parallelism-all-to-all"],
    "hierarchical MoE": ["hierarchical-moe"],
    "DeepSeekMoE fine-grained + shared experts": ["deepseekmoe-fine-grained-shared"],
    "fine-tuning MoE": ["fine-tuning-moe"],
    "what experts specialise in": ["what-experts-specialise-in"],
    "padding": ["padding-tokens"],
    "gradient flow through top-k": ["gradient-through-topk"],
}

# The misconceptions issue 7 names, each a myths entry of the bank.
ISSUE_MYTHS = [
    "myth-fewer-parameters",
    "myth-trained-independently",
    "myth-attention-or-transformer-extension",
    "myth-parameter-server",
    "myth-vanishing-gradients",
    "myth-mixed-precision-integers",
    "myth-invented-papers",
    "myth-bert-xlnet-glm",
]


def _seeds_or_skip():
    try:
        return qb.seed_items()
    except FileNotFoundError as e:
        pytest.skip(f"the seed texts are not beside the repository ({e}); set MOE_TF_SEEDS_DIR to check coverage")


# ------------------------------------------------------------------ the real bank
def test_every_question_has_an_answer_and_every_link_resolves():
    found = qb.problems(ROOT)
    assert found == [], "\n".join(found)
    if not HAS_SOLUTIONS:
        pytest.skip("student version: no solutions/, so the answers were not checked")


def test_every_seed_question_is_answered():
    seeds = _seeds_or_skip()
    assert len(seeds) == 81, f"the five seed texts hold 81 questions; the parser found {len(seeds)}"
    found = qb.problems(ROOT, seeds, qb.seed_sections())
    assert found == [], "\n".join(found)


def test_myth_entries_name_their_seed_sources():
    """Each myth quotes a seed's claim (docs/myths.md): its entry says which, as the other seeded entries do."""
    _, questions, _ = qb.load(ROOT, answers=False)
    missing = [q["id"] for q in questions if q["topic"] == "myths" and not q.get("seeds")]
    assert not missing, f"myth entries without `seeds:`: {missing}"


def test_the_topics_of_the_issue_are_covered():
    _, questions, _ = qb.load(ROOT, answers=False)
    ids = {q["id"] for q in questions}
    missing = {topic: [i for i in entries if i not in ids] for topic, entries in ISSUE_TOPICS.items()}
    missing = {t: m for t, m in missing.items() if m}
    assert not missing, f"topics without their entry: {missing}"
    myths = [q["id"] for q in questions if q["topic"] == "myths"]
    assert set(ISSUE_MYTHS) <= set(myths), sorted(set(ISSUE_MYTHS) - set(myths))


def test_myth_entries_point_to_the_myths_page():
    if not HAS_SOLUTIONS:
        pytest.skip("student version: no solutions/")
    _, questions, answers = qb.load(ROOT)
    for q in questions:
        if q["topic"] == "myths":
            assert any(e.startswith("docs/myths.md#") for e in answers[q["id"]]["evidence"]), q["id"]


def test_seed_questions_keep_the_seed_wording():
    """A question taken from a seed quotes the seed's own Chinese words: its first seed source's
    heading, or a passage of that seed file (e.g. the full statement of a coding task)."""
    import re

    seeds = _seeds_or_skip()
    texts = {p.name[:3]: p.read_text(encoding="utf-8") for p in qb.seeds_dir().glob("00?_*.txt")}
    _, questions, _ = qb.load(ROOT, answers=False)
    for q in questions:
        if q.get("seeds") and q["topic"] != "myths":
            first = q["seeds"][0]
            if seeds[first].rstrip("？?。.") in q["zh"]:
                continue
            pieces = [p.strip().rstrip("？?。.") for p in re.split(r"[：:]", q["zh"]) if p.strip()]
            missing = [p for p in pieces if p not in texts[first[:3]]]
            assert not missing, f"{q['id']}: zh {q['zh']!r} is not the wording of {first} {seeds[first]!r}"


def test_rendered_pages_are_up_to_date():
    assert (ROOT / qb.QUESTIONS_MD).read_text(encoding="utf-8") == qb.render(ROOT, with_answers=False), (
        "exercises/question_bank.md is stale: run `python tools/question_bank.py render`"
    )
    if not HAS_SOLUTIONS:
        pytest.skip("student version: no solutions/question_bank.md")
    assert (ROOT / qb.ANSWERS_MD).read_text(encoding="utf-8") == qb.render(ROOT, with_answers=True), (
        "solutions/question_bank.md is stale: run `python tools/question_bank.py render`"
    )


def test_questions_page_holds_no_answers():
    if not HAS_SOLUTIONS:
        pytest.skip("student version: no answers to leak")
    _, _, answers = qb.load(ROOT)
    page = (ROOT / qb.QUESTIONS_MD).read_text(encoding="utf-8")
    assert "**Answer.**" not in page
    for qid, a in answers.items():
        first_line = a["answer"].strip().splitlines()[0]
        assert first_line not in page, f"the answer to {qid} appears on the questions page"


def test_the_rendered_links_resolve_from_the_page():
    """The relative links of both pages point at files that exist (GitHub resolves them the same way)."""
    import re

    for page in (qb.QUESTIONS_MD, qb.ANSWERS_MD):
        if not (ROOT / page).is_file():
            continue
        text = (ROOT / page).read_text(encoding="utf-8")
        targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
        assert targets, page
        for target in targets:
            resolved = (ROOT / page).parent.joinpath(target).resolve()
            if not HAS_SOLUTIONS and (ROOT / "solutions") in resolved.parents:
                continue  # the student version has no solutions/
            assert resolved.exists(), f"{page}: broken link {target}"


def test_check_command_exits_zero():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "question_bank.py"), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problems" in result.stdout


# ------------------------------------------------------------------ the checker on a small bank
def _mini_bank(tmp_path):
    for folder in ("exercises", "solutions", "notebooks"):
        (tmp_path / folder).mkdir()
    (tmp_path / "exercises" / "ex01.py").write_text("def gate(x):\n    return x\n\nANSWER = None\n")
    (tmp_path / "notebooks" / "lesson.md").write_text("# 01 · A lesson\n\n## 2. Top-k gates, renormalised\n")
    questions = {
        "topics": [{"id": "gating", "title": "Gating"}],
        "questions": [
            {
                "id": "top-k",
                "topic": "gating",
                "en": "What is top-k?",
                "zh": "什么是top-k？",
                "seeds": ["000#1"],
                "notebook": "notebooks/lesson.md#2-top-k-gates-renormalised",
                "exercise": "exercises/ex01.py::gate",
            },
        ],
    }
    answers = {
        "answers": {
            "top-k": {
                "answer": "Keep the k largest gates.",
                "wrong": "Keep k random experts.",
                "evidence": ["exercises/ex01.py::ANSWER"],
            }
        }
    }
    (tmp_path / "exercises" / "question_bank.yaml").write_text(yaml.safe_dump(questions, allow_unicode=True))
    (tmp_path / "solutions" / "question_bank_answers.yaml").write_text(yaml.safe_dump(answers, allow_unicode=True))
    return questions, answers


def _write(tmp_path, questions=None, answers=None):
    if questions is not None:
        (tmp_path / "exercises" / "question_bank.yaml").write_text(yaml.safe_dump(questions, allow_unicode=True))
    if answers is not None:
        (tmp_path / "solutions" / "question_bank_answers.yaml").write_text(yaml.safe_dump(answers, allow_unicode=True))


def test_a_sound_bank_has_no_problems(tmp_path):
    _mini_bank(tmp_path)
    assert qb.problems(tmp_path, {"000#1": "q"}) == []


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("notebook", "notebooks/lesson.md#3-no-such-section", "no heading with anchor '3-no-such-section'"),
        ("notebook", "notebooks/missing.ipynb", "no file notebooks/missing.ipynb"),
        ("exercise", "exercises/ex01.py::no_such_function", "does not define 'no_such_function'"),
        ("exercise", "https://example.com/ex01", "not to the web"),
        ("exercise", "../outside.py", "use a path from the repository root"),
        ("topic", "routing", "topic 'routing' is not one of ['gating']"),
        ("zh", "What is top-k?", "'zh' has no Chinese text"),
        ("seeds", ["0#1"], "is not like '000#3'"),
        ("seeds", ["001§x"], "or '001§3.3' (a section)"),
        ("id", "Top K", "use lower-case words joined by '-'"),
        ("extra", "x", "unknown fields ['extra']"),
    ],
)
def test_the_checker_catches_a_bad_question(tmp_path, field, value, expected):
    questions, answers = _mini_bank(tmp_path)
    questions["questions"][0][field] = value
    if field == "id":
        answers["answers"][value] = answers["answers"].pop("top-k")
    _write(tmp_path, questions, answers)
    found = qb.problems(tmp_path)
    assert any(expected in p for p in found), found


def test_the_checker_catches_missing_and_orphan_answers(tmp_path):
    _, answers = _mini_bank(tmp_path)
    answers["answers"]["other"] = answers["answers"].pop("top-k")
    _write(tmp_path, answers=answers)
    found = qb.problems(tmp_path)
    assert "top-k: no answer in solutions/question_bank_answers.yaml" in found
    assert "answer 'other' has no question" in found


def test_the_checker_catches_bad_evidence(tmp_path):
    _, answers = _mini_bank(tmp_path)
    answers["answers"]["top-k"]["evidence"] = ["notebooks/lesson.md#nowhere"]
    _write(tmp_path, answers=answers)
    assert any("evidence" in p and "nowhere" in p for p in qb.problems(tmp_path))
    answers["answers"]["top-k"]["evidence"] = []
    _write(tmp_path, answers=answers)
    assert "top-k: answer points to no runnable evidence" in qb.problems(tmp_path)


def test_the_checker_catches_uncovered_and_unknown_seed_questions(tmp_path):
    _mini_bank(tmp_path)
    found = qb.problems(tmp_path, {"000#2": "另一个问题？"})
    assert "top-k: seed source 000#1 is not a question of the seed texts" in found
    assert "seed question 000#2 (另一个问题？) is answered by no entry" in found


def test_the_checker_checks_cited_article_sections(tmp_path):
    questions, answers = _mini_bank(tmp_path)
    questions["questions"][0]["seeds"] = ["000#1", "001§3.3", "001§9.9"]
    _write(tmp_path, questions, answers)
    assert qb.problems(tmp_path, {"000#1": "q"}) == []  # sections not checked when not given
    found = qb.problems(tmp_path, {"000#1": "q"}, {"001§3.3": "算法优缺点"})
    assert found == ["top-k: seed source 001§9.9 is not a section of the seed texts"]


def test_the_student_version_has_questions_without_answers(tmp_path):
    _mini_bank(tmp_path)
    shutil.rmtree(tmp_path / "solutions")
    assert qb.problems(tmp_path) == []
    page = qb.render(tmp_path, with_answers=False)
    assert "What is top-k?" in page and "什么是top-k？" in page and "Keep the k largest" not in page


def test_render_with_answers(tmp_path):
    _mini_bank(tmp_path)
    page = qb.render(tmp_path, with_answers=True)
    assert "**Answer.** Keep the k largest gates." in page
    assert "**Common wrong answer.** Keep k random experts." in page
    assert "**Evidence:** [`ex01.py::ANSWER`](../exercises/ex01.py)" in page
    assert "[lesson.md › 2. Top-k gates, renormalised](../notebooks/lesson.md#2-top-k-gates-renormalised)" in page
    assert "seeds: `000#1`" in page


def test_an_answer_that_opens_with_a_list_gets_its_label_on_a_line_of_its_own(tmp_path):
    _, answers = _mini_bank(tmp_path)
    answers["answers"]["top-k"]["answer"] = "- keep the k largest\n- renormalise"
    _write(tmp_path, answers=answers)
    assert "**Answer.**\n\n- keep the k largest\n- renormalise\n" in qb.render(tmp_path, with_answers=True)


# ------------------------------------------------------------------ anchors and the seed parser
@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("1. Top-k gates on a worked example", "1-top-k-gates-on-a-worked-example"),
        ("01 · Mixture of experts from scratch", "01--mixture-of-experts-from-scratch"),
        ('"MoE reduces the parameter count"', "moe-reduces-the-parameter-count"),
        ('7. The `Dense(1, activation="softmax")` trap', "7-the-dense1-activationsoftmax-trap"),
        ("专家 (expert)", "专家-expert"),
    ],
)
def test_github_anchors(heading, anchor):
    assert qb.slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Recap\n\n```\n# not a heading\n```\n\n## Recap\n")
    assert qb.anchors(page) == ["recap", "recap-1"]


def test_seed_parser_reads_each_layout(tmp_path):
    files = {
        "000_a.txt": "### 1. MoE模型的背景是什么？\n答案\n### 2. 核心思想？\n",
        "001_b.txt": "### 5.1 环境\n### 5.2 源代码详细实现\n**Q1：适用吗？**\n\nA: ...\n**Q2：如何选择？**\n",
        "002_c.txt": "### 1. 概念\n#### 面试题：请介绍MoE。\n#### 算法编程题：实现MoE。\n### 2. LLM\n#### 面试题：价值？\n",
        "003_d.txt": "#### 面试题库\n**1. 原理？**\n#### 编程题库\n**1. 写分类器。**\n#### 结论\n### 1. 概念？\n",
        "004_e.txt": "#### 1. 概念？\n#### 4. 编写MoE。\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    items = qb.seed_items(tmp_path)
    assert items == {
        "000#1": "MoE模型的背景是什么？",
        "000#2": "核心思想？",
        "001#code": "源代码详细实现",
        "001#FAQ1": "适用吗？",
        "001#FAQ2": "如何选择？",
        "002#1": "请介绍MoE。",
        "002#code1": "实现MoE。",
        "002#2": "价值？",
        "003#A1": "原理？",
        "003#code1": "写分类器。",
        "003#1": "概念？",
        "004#1": "概念？",
        "004#4": "编写MoE。",
    }
    sections = qb.seed_sections(tmp_path)
    assert {k: v for k, v in sections.items() if k.startswith("001")} == {
        "001§5.1": "环境",
        "001§5.2": "源代码详细实现",
    }
    assert sections["002§1"] == "概念" and sections["004§4"] == "编写MoE。"
    (tmp_path / "004_e.txt").unlink()
    with pytest.raises(FileNotFoundError, match="004"):
        qb.seed_items(tmp_path)
    with pytest.raises(FileNotFoundError, match="004"):
        qb.seed_sections(tmp_path)


def _cli(*args, stdin=""):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "question_bank.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_quiz_shows_a_question_then_its_answer():
    result = _cli("quiz", "--topic", "capacity", stdin="\n")  # one Enter, then end of input
    assert result.returncode == 0, result.stderr
    _, questions, answers = qb.load(ROOT)
    capacity = [q for q in questions if q["topic"] == "capacity"]
    shown = [q for q in capacity if q["en"].strip() in result.stdout]
    assert len(shown) == 2, result.stdout  # the first question answered, the second asked when input ended
    if answers is not None:
        assert sum(answers[q["id"]]["answer"].strip()[:60] in result.stdout for q in shown) == 1


def test_quiz_rejects_an_unknown_topic():
    result = _cli("quiz", "--topic", "routers")
    assert result.returncode != 0
    assert "--topic 'routers': choose one of basics, params-compute" in result.stderr
