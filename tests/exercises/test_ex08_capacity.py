"""Grades exercise 8: expert capacity and capacity positions (GShard / Switch Transformer)."""

import math
import numbers

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from moe_tf.routing import capacity_positions as reference_positions
from moe_tf.routing import expert_capacity as reference_capacity

EXERCISE = "ex08_capacity"

# Fast, deterministic grading: no example database written, no shrinking or explain phase.
_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _positions(ex, indices, num_experts, capacity):
    positions, keep = ex.capacity_positions(np.asarray(indices, np.int32), num_experts, capacity)
    positions = np.asarray(positions)
    keep = np.asarray(keep)
    assert positions.shape == np.shape(indices), (
        f"positions must have the shape of indices [T, k] = {np.shape(indices)}; got {positions.shape}"
    )
    assert keep.shape == np.shape(indices), f"keep must have shape [T, k] = {np.shape(indices)}; got {keep.shape}"
    return positions.astype(np.int64), keep.astype(bool)


def _reference(indices, num_experts, capacity):
    positions, keep = reference_positions(np.asarray(indices, np.int32), num_experts, capacity)
    return np.asarray(positions).astype(np.int64), np.asarray(keep) > 0


@pytest.mark.points(1)
def test_capacity_worked_examples(ex):
    cases = [  # (T, E, k, capacity_factor) -> C
        ((8, 4, 2, 1.25), 5),  # 1.25 * 2 * 8 / 4 = 5 exactly
        ((1024, 8, 2, 1.25), 320),
        ((10, 4, 1, 1.0), 3),  # 2.5 rounds UP to 3
        ((12, 4, 1, 2), 6),  # an integer factor
    ]
    for args, expected in cases:
        got = ex.expert_capacity(*args)
        assert int(got) == expected, (
            f"expert_capacity(num_tokens={args[0]}, num_experts={args[1]}, k={args[2]}, "
            f"capacity_factor={args[3]}) should be ceil(cf*k*T/E) = {expected}; got {got}"
        )


@pytest.mark.points(2)
def test_capacity_is_exact_not_float_ceil(ex):
    # In float64, 1.1 * 2 * 200 / 8 = 55.00000000000001 and math.ceil gives 56: one slot too many.
    assert math.ceil(1.1 * 2 * 200 / 8) == 56  # the trap is real on this machine
    got = ex.expert_capacity(200, 8, 2, 1.1)
    assert int(got) == 55, (
        "expert_capacity(num_tokens=200, num_experts=8, k=2, capacity_factor=1.1) must be exactly 55 "
        f"(1.1 = 11/10, 11*2*200/(10*8) = 55); got {got}: a float product rounded up gains a slot"
    )
    for args in [(100, 4, 1, 1.1), (300, 6, 2, 0.7), (1000, 64, 2, 1.2), (70, 7, 1, 0.1)]:
        expected = reference_capacity(*args)
        assert int(ex.expert_capacity(*args)) == expected, (
            f"expert_capacity{args} should be exactly {expected}; got {ex.expert_capacity(*args)}"
        )


@pytest.mark.points(2)
def test_positions_worked_example(ex):
    indices = [[0, 1], [0, 2], [1, 0], [0, 1]]
    positions, keep = _positions(ex, indices, num_experts=3, capacity=2)
    expected_positions = np.array([[0, 1], [1, 0], [0, 3], [2, 2]])
    expected_keep = np.array([[True, True], [True, True], [True, False], [False, False]])
    assert np.array_equal(positions, expected_positions), (
        f"for indices {indices}, E=3, capacity 2 the positions should be {expected_positions.tolist()} "
        f"(first choices queue before second choices, token order within a choice, first slot is 0); "
        f"got {positions.tolist()}"
    )
    assert np.array_equal(keep, expected_keep), (
        f"for indices {indices}, E=3, capacity 2 keep should be {expected_keep.tolist()}; got {keep.tolist()}"
    )


@pytest.mark.points(2)
def test_exclusive_cumsum_keeps_exactly_capacity(ex):
    # Four tokens all pick expert 0 (top-1), capacity 4: every token fits. An inclusive cumsum would number
    # them 1..4 and drop the fourth (4 < 4 is False): the classic off-by-one.
    positions, keep = _positions(ex, [[0], [0], [0], [0]], num_experts=2, capacity=4)
    assert positions[:, 0].tolist() == [0, 1, 2, 3], (
        f"the first token sent to an expert must get position 0 (exclusive cumsum): expected [0, 1, 2, 3], "
        f"got {positions[:, 0].tolist()}"
    )
    assert keep.all(), f"an expert of capacity 4 receiving 4 tokens must keep all 4; keep = {keep[:, 0].tolist()}"
    # Capacity 2 keeps exactly the first two.
    _, keep = _positions(ex, [[0], [0], [0], [0]], num_experts=2, capacity=2)
    assert keep[:, 0].tolist() == [True, True, False, False], (
        f"capacity 2 must keep exactly tokens 0 and 1; keep = {keep[:, 0].tolist()}"
    )


@pytest.mark.points(2)
def test_first_choices_have_priority(ex):
    # Token 0's SECOND choice and token 1's FIRST choice both want expert 1, capacity 1:
    # the first choice wins although token 0 comes earlier.
    positions, keep = _positions(ex, [[0, 1], [1, 0]], num_experts=2, capacity=1)
    assert keep[1, 0] and not keep[0, 1], (
        "with indices [[0, 1], [1, 0]] and capacity 1, token 1's first choice (expert 1) must take expert 1's "
        f"only slot before token 0's second choice; got keep = {keep.tolist()}, positions = {positions.tolist()}"
    )
    assert positions.tolist() == [[0, 1], [0, 1]], f"expected positions [[0, 1], [0, 1]]; got {positions.tolist()}"


@st.composite
def _routing(draw):
    num_experts = draw(st.integers(1, 6))
    k = draw(st.integers(1, num_experts))
    num_tokens = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.permutation(num_experts)[:k] for _ in range(num_tokens)]).astype(np.int32)
    capacity = draw(st.integers(0, num_tokens + 1))
    return indices, num_experts, capacity


@pytest.mark.points(2)
@given(_routing())
@_SETTINGS
def test_positions_match_reference_property(ex, routing):
    indices, num_experts, capacity = routing
    positions, keep = _positions(ex, indices, num_experts, capacity)
    expected_positions, expected_keep = _reference(indices, num_experts, capacity)
    assert np.array_equal(positions, expected_positions), (
        f"positions differ from the expected ones for indices={indices.tolist()}, E={num_experts}, "
        f"capacity={capacity}: expected {expected_positions.tolist()}, got {positions.tolist()}"
    )
    assert np.array_equal(keep, expected_keep), (
        f"keep differs for indices={indices.tolist()}, E={num_experts}, capacity={capacity}: "
        f"expected {expected_keep.tolist()}, got {keep.tolist()}"
    )
    counts = np.bincount(indices.ravel(), minlength=num_experts)
    kept = np.bincount(indices.ravel(), weights=keep.ravel(), minlength=num_experts)
    assert np.array_equal(kept, np.minimum(counts, capacity)), (
        f"each expert must keep min(assignments, capacity) = {np.minimum(counts, capacity).tolist()}; "
        f"kept {kept.astype(int).tolist()}"
    )


@pytest.mark.points(1)
def test_capacity_of_an_empty_group_and_return_type(ex):
    got = ex.expert_capacity(0, 4, 2, 1.25)
    assert isinstance(got, numbers.Integral) and not isinstance(got, bool), (
        f"expert_capacity returns an int (a number of slots); got {got!r} of type {type(got).__name__}"
    )
    assert got == 0, (
        f"expert_capacity(num_tokens=0, ...) = ceil(1.25 * 2 * 0 / 4) = 0: no tokens, no slots (no minimum of 1 in "
        f"this formula); got {got}"
    )
    got = ex.expert_capacity(1, 64, 1, 1.0)
    assert got == 1 and isinstance(got, numbers.Integral), f"ceil(1 * 1 * 1 / 64) = 1; got {got!r}"


@pytest.mark.points(1)
def test_top_3_queues_choice_by_choice(ex):
    # Every token picks all three experts, in a different order. Choice-major queue: the three first choices
    # (one per expert) take slot 0, the second choices slot 1, the third choices slot 2.
    positions, keep = _positions(ex, [[0, 1, 2], [1, 2, 0], [2, 0, 1]], num_experts=3, capacity=2)
    assert positions.tolist() == [[0, 1, 2]] * 3, (
        "for indices [[0, 1, 2], [1, 2, 0], [2, 0, 1]] every first choice gets slot 0, every second choice slot 1 "
        f"and every third choice slot 2 (all first choices queue before any second choice); got {positions.tolist()}"
    )
    assert keep.tolist() == [[True, True, False]] * 3, (
        f"capacity 2 keeps the first and second choices and drops every third choice; got {keep.tolist()}"
    )


@pytest.mark.points(1)
def test_capacity_zero_keeps_nothing(ex):
    positions, keep = _positions(ex, [[1, 0], [1, 2], [0, 1]], num_experts=3, capacity=0)
    assert not keep.any(), f"capacity 0: no assignment fits (position < 0 is never true); got keep = {keep.tolist()}"
    assert positions.tolist() == [[0, 1], [1, 0], [0, 2]], (
        f"dropped assignments still get their position (>= capacity): expected [[0, 1], [1, 0], [0, 2]] (token 0's "
        f"second choice queues behind token 2's first choice at expert 0); "
        f"got {positions.tolist()}"
    )
