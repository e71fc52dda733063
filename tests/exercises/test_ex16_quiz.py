"""Grades exercise 16: the MoE interview quiz (one point per question).

Numeric answers are compared with a tolerance. Multiple-choice answers are
compared through a salted hash, `sha256("moe-tf:" + question name + ":" + letter)`,
so that the expected letters are not written in this file: that keeps the
answers out of sight while you work, nothing more. It is not security (there
are only four letters to try), and reading the answers off a hash teaches
nothing: the point is to be able to justify each answer from the papers.
"""

import hashlib
import math
import numbers

import pytest

EXERCISE = "ex16_quiz"

CHOICE_HASHES = {
    "Q1_MOE_REDUCES_PARAMETERS": "2e27488efcddc27e41d082fdcd8b1a8fcde52a72721acc898916886dfe350771",
    "Q2_HOW_EXPERTS_ARE_TRAINED": "7e24b3b645d5e24bac1813f7cb2abea9843126423dc18263a375c4e93a8a16ee",
    "Q6_CAPACITY_FACTOR": "a678a848d2ba0994a2bd60994745a280c329ac98f11006488dc878262c369a5c",
    "Q7_ROUTER_IN_FLOAT32": "0202b3be32a98b7ad7d8ab7ae63ec46c562c0654a46d00ec2d450a8f58ad9fb5",
    "Q8_EXPERT_CHOICE_DECODING": "54edfe072c5e736b697a51726fdffb43673373cbeaf60365e534f971526ae47b",
    "Q15_MIXED_PRECISION": "5fbc4b4293b8a1d050324103bd251f78ef06144863a276950ec01163c238fbfb",
}

# name: (expected value, absolute tolerance, relative tolerance)
NUMERIC = {
    "Q3_MIXTRAL_TOTAL_PARAMS_BILLION": (46.7, 0.5, 0.0),
    "Q4_MIXTRAL_ACTIVE_PARAMS_BILLION": (12.9, 0.3, 0.0),
    "Q5_SWITCH_ALPHA": (1e-2, 0.0, 1e-9),
    "Q9_SWITCH_LOSS_VALUE": (0.0125, 1e-6, 0.0),
    "Q10_EXPERT_CAPACITY": (320, 0.0, 0.0),
    "Q11_FINE_GRAINED_COMBINATIONS": (4426165368, 0.0, 0.0),
    "Q12_Z_LOSS_COEFFICIENT": (1e-3, 0.0, 1e-9),
    "Q13_SHAZEER_2017_MAX_PARAMS_BILLION": (137, 1.0, 0.0),
    "Q14_MOE_FFN_TOTAL_PARAMS": (16801800, 0.0, 0.0),
}


def _answer(ex, name):
    if not hasattr(ex, name):
        pytest.fail(f"{name} is missing from the quiz module (do not rename the answers)", pytrace=False)
    value = getattr(ex, name)
    if value is None:
        pytest.fail(f"{name} is not answered yet (still None)", pytrace=False)
    return value


@pytest.mark.points(1)
@pytest.mark.parametrize("name", sorted(CHOICE_HASHES, key=lambda n: int(n[1:].split("_")[0])))
def test_multiple_choice(ex, name):
    """One multiple-choice question: a single letter a-d."""
    value = _answer(ex, name)
    letter = str(value).strip().lower()
    assert letter in ("a", "b", "c", "d"), f"{name} must be one of 'a', 'b', 'c', 'd'; got {value!r}"
    digest = hashlib.sha256(f"moe-tf:{name}:{letter}".encode()).hexdigest()
    assert digest == CHOICE_HASHES[name], (
        f"{name} = {letter!r} is not the right answer: reread the question and the paper"
    )


@pytest.mark.points(1)
@pytest.mark.parametrize("name", sorted(NUMERIC, key=lambda n: int(n[1:].split("_")[0])))
def test_numeric(ex, name):
    """One numeric question, within its stated tolerance."""
    value = _answer(ex, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        pytest.fail(f"{name} must be a number (an int or a float, not text or a bool); got {value!r}", pytrace=False)
    number = float(value)
    expected, abs_tol, rel_tol = NUMERIC[name]
    tolerance = f"+/- {abs_tol}" if abs_tol else f"{rel_tol:.0e} relative" if rel_tol else "exact"
    assert math.isfinite(number) and math.isclose(number, expected, abs_tol=abs_tol, rel_tol=rel_tol), (
        f"{name} = {value!r} is not right (tolerance: {tolerance})"
    )
