"""Tests for moe_tf.routing: softmax / top-k gates, expert capacity, capacity slots."""

import math
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf
from _helpers import np_softmax
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moe_tf.routing import buffer_capacity, capacity_positions, expert_capacity, softmax_gates, top_k_gates

# --------------------------------------------------------------------------- helpers


@st.composite
def routing_logits(draw, max_tokens=8, max_experts=8):
    """(logits [T, E] float32 with all-distinct entries, k with 1 <= k <= E)."""
    num_tokens = draw(st.integers(1, max_tokens))
    num_experts = draw(st.integers(1, max_experts))
    k = draw(st.integers(1, num_experts))
    logits = draw(
        hnp.arrays(
            np.float32,
            (num_tokens, num_experts),
            elements=st.floats(-20, 20, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False),
            unique=True,
        )
    )
    return logits, k


def reference_positions(indices, num_experts, capacity, token_mask):
    """Plain-Python version of the documented queue.

    All first choices queue before all second choices; inside one choice rank
    tokens queue in order. The slot is the number of earlier real assignments
    to the same expert (exclusive count), kept when it is < capacity. Padding
    tokens take no slot and are never kept (their position is None).
    """
    num_tokens, k = indices.shape
    positions = [[None] * k for _ in range(num_tokens)]
    keep = np.zeros((num_tokens, k), np.float32)
    taken = [0] * num_experts
    for choice in range(k):
        for t in range(num_tokens):
            if not token_mask[t]:
                continue
            e = int(indices[t, choice])
            positions[t][choice] = taken[e]
            keep[t, choice] = 1.0 if taken[e] < capacity else 0.0
            taken[e] += 1
    return positions, keep


@st.composite
def routing_indices(draw, max_tokens=10, max_experts=6, max_k=3):
    """(indices [T, k] with distinct experts per token, E, C, token_mask [T])."""
    num_tokens = draw(st.integers(1, max_tokens))
    num_experts = draw(st.integers(1, max_experts))
    k = draw(st.integers(1, min(num_experts, max_k)))
    rows = [draw(st.permutations(range(num_experts)))[:k] for _ in range(num_tokens)]
    indices = np.array(rows, np.int32).reshape(num_tokens, k)
    capacity = draw(st.integers(1, num_tokens + 1))
    mask = np.array(draw(st.lists(st.booleans(), min_size=num_tokens, max_size=num_tokens)), np.float32)
    return indices, num_experts, capacity, mask


# --------------------------------------------------------------------------- gates


@given(routing_logits())
def test_top_k_gates_match_numpy_reference(case):
    logits, k = case
    num_tokens, num_experts = logits.shape
    gates, indices = top_k_gates(logits, k)
    gates, indices = np.asarray(gates), np.asarray(indices)

    assert indices.shape == (num_tokens, k), f"indices should be [T, k]={(num_tokens, k)}, got {indices.shape}"
    assert indices.dtype == np.int32, f"indices should be int32, got {indices.dtype}"
    expected_idx = np.argsort(-logits.astype(np.float64), axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, expected_idx, err_msg="indices should be the k largest logits, best first")

    assert gates.shape == (num_tokens, num_experts), f"gates should be [T, E], got {gates.shape}"
    kept = np.zeros_like(gates, dtype=bool)
    np.put_along_axis(kept, expected_idx, True, axis=-1)
    assert np.all(gates[~kept] == 0.0), "gates outside the top k must be exactly 0"
    np.testing.assert_array_equal(
        (gates != 0).sum(axis=-1), np.full(num_tokens, k), err_msg="exactly k nonzero gates per row expected"
    )
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, atol=1e-5, err_msg="kept gates should sum to 1")
    top_logits = np.take_along_axis(logits, expected_idx, axis=-1)
    expected_top = np_softmax(top_logits)
    np.testing.assert_allclose(
        np.take_along_axis(gates, expected_idx, axis=-1),
        expected_top,
        rtol=1e-5,
        atol=1e-6,
        err_msg="kept gates should equal the softmax over the kept logits",
    )


@given(routing_logits())
def test_top_k_gates_without_renormalization_are_full_softmax(case):
    logits, k = case
    gates, indices = top_k_gates(logits, k, renormalize=False)
    gates, indices = np.asarray(gates), np.asarray(indices)
    probs = np_softmax(logits)
    expected_idx = np.argsort(-logits.astype(np.float64), axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, expected_idx, err_msg="renormalize must not change the chosen experts")
    expected = np.zeros_like(probs)
    np.put_along_axis(expected, expected_idx, np.take_along_axis(probs, expected_idx, axis=-1), axis=-1)
    np.testing.assert_allclose(
        gates,
        expected,
        rtol=1e-5,
        atol=1e-7,
        err_msg="renormalize=False should keep the raw full-softmax probabilities",
    )
    assert np.all(gates.sum(-1) <= 1.0 + 1e-5), "raw softmax probabilities of k experts sum to at most 1"


def test_top_k_gates_docstring_example():
    gates, idx = top_k_gates(np.array([[1.0, 3.0, 2.0]]), k=2)
    np.testing.assert_array_equal(np.asarray(idx), [[1, 2]])
    np.testing.assert_allclose(np.asarray(gates), [[0.0, 0.7310586, 0.2689414]], rtol=1e-6)


def test_top1_without_renormalization_keeps_gate_below_one():
    gates, _ = top_k_gates(np.array([[0.0, 1.0, 0.0]], np.float32), k=1, renormalize=False)
    expected = math.e / (math.e + 2.0)
    np.testing.assert_allclose(
        np.asarray(gates),
        [[0.0, expected, 0.0]],
        rtol=1e-6,
        err_msg="Switch top-1 gate should be p_i = softmax(logits)_i < 1",
    )
    gates, _ = top_k_gates(np.array([[0.0, 1.0, 0.0]], np.float32), k=1, renormalize=True)
    np.testing.assert_array_equal(np.asarray(gates), [[0.0, 1.0, 0.0]], err_msg="renormalized top-1 gate should be 1")


@given(routing_logits())
def test_softmax_gates_rows_sum_to_one(case):
    logits, _ = case
    gates = np.asarray(softmax_gates(logits))
    assert np.all(gates > 0), "every expert gets a positive dense gate"
    np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-5, err_msg="dense gates should sum to 1 per token")
    np.testing.assert_allclose(gates, np_softmax(logits), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- numerical robustness


@pytest.mark.parametrize("num_experts", [1, 2, 5, 8])
@pytest.mark.parametrize("value", [0.0, 3.5, -1e4])
def test_top_k_gates_ties_choose_exactly_k_lowest_indices(num_experts, value):
    logits = np.full((3, num_experts), value, np.float32)
    for k in range(1, num_experts + 1):
        for renormalize in (True, False):
            gates, indices = top_k_gates(logits, k, renormalize=renormalize)
            gates, indices = np.asarray(gates), np.asarray(indices)
            assert np.all(np.isfinite(gates)), f"ties must not give NaN/Inf gates (k={k})"
            np.testing.assert_array_equal(
                indices, np.tile(np.arange(k), (3, 1)), err_msg="ties should break towards the lower expert index"
            )
            np.testing.assert_array_equal((gates != 0).sum(-1), [k] * 3, err_msg=f"exactly k={k} experts per token")
            expected_gate = 1.0 / k if renormalize else 1.0 / num_experts
            np.testing.assert_allclose(gates[:, :k], expected_gate, rtol=1e-6, err_msg="tied gates should be equal")
            if renormalize:
                np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-6, err_msg="tied gates should sum to 1")


def test_top_k_gates_partial_ties():
    gates, indices = top_k_gates(np.array([[1.0, 2.0, 2.0, 0.0]], np.float32), k=2)
    np.testing.assert_array_equal(np.asarray(indices), [[1, 2]])
    np.testing.assert_allclose(np.asarray(gates), [[0.0, 0.5, 0.5, 0.0]], rtol=1e-6)
    gates, indices = top_k_gates(np.array([[1.0, 2.0, 2.0, 0.0]], np.float32), k=1)
    np.testing.assert_array_equal(np.asarray(indices), [[1]], err_msg="tie between experts 1 and 2 should pick 1")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("renormalize", [True, False])
def test_top_k_gates_extreme_logits_stay_finite(dtype, renormalize):
    rng = np.random.default_rng(0)
    logits = (rng.choice([-1.0, 1.0], size=(16, 6)) * 1e4 + rng.normal(size=(16, 6))).astype(dtype)
    logits[0] = 1e4  # all tied at the top
    logits[1] = -1e4  # all tied at the bottom
    logits[2] = [1e4, -1e4, 1e4, -1e4, 0.0, 0.0]
    for k in (1, 2, 6):
        gates, indices = top_k_gates(logits, k, renormalize=renormalize)
        gates = np.asarray(gates, np.float64)
        assert np.all(np.isfinite(gates)), f"gates must be finite for +-1e4 logits ({np.dtype(dtype).name}, k={k})"
        assert np.all(gates >= 0), "gates must be non-negative"
        if renormalize:
            np.testing.assert_allclose(gates.sum(-1), 1.0, atol=2e-3, err_msg="renormalized gates should sum to 1")
        expected_idx = np.argsort(-logits.astype(np.float64), axis=-1, kind="stable")[:, :k]
        np.testing.assert_array_equal(np.asarray(indices), expected_idx, err_msg="chosen experts should be the top k")


@pytest.mark.parametrize("renormalize", [True, False])
def test_top_k_gates_float16_random_logits(renormalize):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(32, 8)) * 8).astype(np.float16)
    gates, _ = top_k_gates(logits, 2, renormalize=renormalize)
    gates = np.asarray(gates, np.float64)
    assert np.all(np.isfinite(gates)), "float16 gates must be finite"
    expected = np_softmax(logits.astype(np.float64))
    if renormalize:
        np.testing.assert_allclose(gates.sum(-1), 1.0, atol=2e-3, err_msg="float16 gates should sum to ~1")
    else:
        top = np.argsort(-logits.astype(np.float64), -1, kind="stable")[:, :2]
        np.testing.assert_allclose(np.take_along_axis(gates, top, -1), np.take_along_axis(expected, top, -1), atol=2e-3)


# --------------------------------------------------------------------------- expert capacity


@pytest.mark.parametrize(
    "num_tokens, num_experts, k, capacity_factor, expected",
    [
        (1024, 8, 2, 1.25, 320),
        (10, 11, 1, 1.1, 1),
        (200, 8, 2, 1.1, 55),  # float: 1.1 * 2 * 200 / 8 = 55.00000000000001 -> ceil 56 (wrong)
        (50, 1, 1, 1.1, 55),
        (8, 8, 1, 1.0, 1),
        (9, 8, 1, 1.0, 2),
        (1, 64, 1, 1.0, 1),
        (100, 4, 2, 0.5, 25),
        (7, 3, 2, 2, 10),  # integer capacity factor
    ],
)
def test_expert_capacity_examples(num_tokens, num_experts, k, capacity_factor, expected):
    got = expert_capacity(num_tokens, num_experts, k, capacity_factor)
    assert isinstance(got, int) and not isinstance(got, bool), f"int num_tokens should give a Python int, got {got!r}"
    assert got == expected, (
        f"expert_capacity{(num_tokens, num_experts, k, capacity_factor)} should be {expected}, got {got}"
    )


def test_float_ceil_pitfall_is_real():
    # Guards the example above: the naive float formula really is off by one there.
    assert math.ceil(1.1 * 2 * 200 / 8) == 56


@given(
    num_tokens=st.integers(1, 100_000),
    num_experts=st.integers(1, 128),
    k=st.integers(1, 4),
    capacity_factor=st.one_of(
        st.sampled_from([0.5, 1.0, 1.1, 1.2, 1.25, 1.5, 2.0, 3.0, 0.1, 0.3, 1.05]),
        st.floats(0.01, 8.0, allow_nan=False, allow_infinity=False),
    ),
)
def test_expert_capacity_is_exact_ceiling(num_tokens, num_experts, k, capacity_factor):
    exact = Fraction(repr(capacity_factor)) * k * num_tokens / num_experts
    expected = -((-exact.numerator) // exact.denominator)  # exact ceil
    got = expert_capacity(num_tokens, num_experts, k, capacity_factor)
    assert got == expected, f"expected exact ceil({exact}) = {expected}, got {got}"


@pytest.mark.parametrize(
    "num_tokens, num_experts, k, capacity_factor",
    [
        (1024, 8, 2, 1.25),
        (10, 11, 1, 1.1),
        (200, 8, 2, 1.1),
        (9, 8, 1, 1.0),
        (100, 4, 2, 0.5),
        (33, 3, 1, 1.1),
        (1, 64, 1, 1.0),
    ],
)
def test_expert_capacity_tensor_num_tokens_matches_int(num_tokens, num_experts, k, capacity_factor):
    expected = expert_capacity(num_tokens, num_experts, k, capacity_factor)
    got = expert_capacity(tf.constant(num_tokens), num_experts, k, capacity_factor)
    assert got.dtype == tf.int32, f"tensor num_tokens should give an int32 tensor, got {got.dtype}"
    assert int(got) == expected, f"tensor path should give {expected} like the int path, got {int(got)}"

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def dynamic(x):
        return expert_capacity(tf.shape(x)[0], num_experts, k, capacity_factor)

    got_dynamic = int(dynamic(tf.zeros((num_tokens, 4))))
    assert got_dynamic == expected, f"dynamic batch size should give {expected}, got {got_dynamic}"


@pytest.mark.parametrize(
    "num_tokens, num_experts, k, capacity_factor", [(360, 8, 1, 1.2), (45, 1, 1, 1.2), (90, 4, 2, 1.2)]
)
def test_expert_capacity_tensor_path_float32_rounding(num_tokens, num_experts, k, capacity_factor):
    expected = expert_capacity(num_tokens, num_experts, k, capacity_factor)
    got = int(expert_capacity(tf.constant(num_tokens), num_experts, k, capacity_factor))
    assert got == expected, f"tensor path should give the exact ceil {expected}, got {got}"


# --------------------------------------------------------------------------- capacity positions


def test_capacity_positions_hand_example():
    # 4 tokens, E=2, k=2, C=2.
    indices = np.array([[0, 1], [0, 1], [1, 0], [0, 1]], np.int32)
    # First choices queue first: t0->e0 slot 0, t1->e0 slot 1, t2->e1 slot 0, t3->e0 slot 2 (dropped).
    # Then second choices: t0->e1 slot 1, t1->e1 slot 2 (dropped), t2->e0 slot 3, t3->e1 slot 3 (dropped).
    positions, keep = capacity_positions(indices, 2, 2)
    np.testing.assert_array_equal(np.asarray(positions), [[0, 1], [1, 2], [0, 3], [2, 3]])
    np.testing.assert_array_equal(np.asarray(keep), [[1, 1], [1, 0], [1, 0], [0, 0]])
    assert np.asarray(positions).dtype == np.int32 and np.asarray(keep).dtype == np.float32

    # Token 1 is padding: it takes no slot, so t3's first choice now fits.
    positions, keep = capacity_positions(indices, 2, 2, token_mask=np.array([1, 0, 1, 1], np.float32))
    positions, keep = np.asarray(positions), np.asarray(keep)
    np.testing.assert_array_equal(keep, [[1, 1], [0, 0], [1, 0], [1, 0]])
    np.testing.assert_array_equal(positions[[0, 2, 3]], [[0, 1], [0, 2], [1, 2]])


def test_capacity_positions_first_token_gets_slot_zero_and_capacity_is_fully_used():
    # Every token picks expert 0: with C=3 exactly the first 3 tokens fit (slots 0, 1, 2).
    indices = np.zeros((5, 1), np.int32)
    positions, keep = capacity_positions(indices, 2, 3)
    np.testing.assert_array_equal(np.asarray(positions)[:, 0], [0, 1, 2, 3, 4], err_msg="exclusive cumsum from 0")
    np.testing.assert_array_equal(np.asarray(keep)[:, 0], [1, 1, 1, 0, 0], err_msg="an expert of capacity 3 keeps 3")


@given(routing_indices())
def test_capacity_positions_match_reference(case):
    indices, num_experts, capacity, mask = case
    positions, keep = capacity_positions(indices, num_experts, capacity, token_mask=mask)
    positions, keep = np.asarray(positions), np.asarray(keep)
    ref_positions, ref_keep = reference_positions(indices, num_experts, capacity, mask)
    np.testing.assert_array_equal(keep, ref_keep, err_msg="keep should follow choice-major, token-order priority")
    for t in range(indices.shape[0]):
        for j in range(indices.shape[1]):
            if ref_keep[t, j]:
                assert positions[t, j] == ref_positions[t][j], (
                    f"assignment (token {t}, choice {j}) should sit in slot {ref_positions[t][j]}, got {positions[t, j]}"
                )
            elif mask[t]:
                assert positions[t, j] >= capacity, "a dropped real assignment must have position >= capacity"


@given(routing_indices())
def test_capacity_positions_invariants(case):
    indices, num_experts, capacity, mask = case
    positions, keep = capacity_positions(indices, num_experts, capacity, token_mask=mask)
    positions, keep = np.asarray(positions), np.asarray(keep)
    assert set(np.unique(keep)) <= {0.0, 1.0}, "keep must be binary"
    assert np.all(keep[mask == 0] == 0), "padding tokens must never be kept"
    for e in range(num_experts):
        requested = int(((indices == e) & (mask[:, None] > 0)).sum())
        kept_slots = sorted(positions[(indices == e) & (keep > 0)].tolist())
        expected_kept = min(requested, capacity)
        assert len(kept_slots) == expected_kept, (
            f"expert {e} asked by {requested} real assignments with capacity {capacity} should keep "
            f"{expected_kept}, kept {len(kept_slots)}"
        )
        assert kept_slots == list(range(expected_kept)), (
            f"kept slots of expert {e} should be exactly 0..{expected_kept - 1} (unique), got {kept_slots}"
        )


@given(routing_indices())
def test_capacity_positions_padding_is_like_removing_tokens(case):
    indices, num_experts, capacity, mask = case
    real = mask > 0
    positions, keep = capacity_positions(indices, num_experts, capacity, token_mask=mask)
    positions, keep = np.asarray(positions), np.asarray(keep)
    if real.any():
        sub_positions, sub_keep = capacity_positions(indices[real], num_experts, capacity)
        sub_positions, sub_keep = np.asarray(sub_positions), np.asarray(sub_keep)
        np.testing.assert_array_equal(keep[real], sub_keep, err_msg="padding must not change who is kept")
        np.testing.assert_array_equal(
            positions[real], sub_positions, err_msg="padding must not take slots from real tokens"
        )
    # No mask == all-ones mask; capacity as a tensor == capacity as an int.
    p_none, k_none = capacity_positions(indices, num_experts, capacity)
    p_ones, k_ones = capacity_positions(indices, num_experts, tf.constant(capacity), np.ones(len(mask), np.float32))
    np.testing.assert_array_equal(np.asarray(p_none), np.asarray(p_ones))
    np.testing.assert_array_equal(np.asarray(k_none), np.asarray(k_ones))


def test_capacity_positions_all_padding_keeps_nothing():
    indices = np.array([[0, 1], [1, 0], [0, 1]], np.int32)
    _, keep = capacity_positions(indices, 2, 5, token_mask=np.zeros(3, np.float32))
    np.testing.assert_array_equal(np.asarray(keep), np.zeros((3, 2)), err_msg="all-padding batch keeps nothing")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("k", [0, -1, 5, 1.5, True, False, None, "2"])
def test_top_k_gates_rejects_bad_k(k):
    with pytest.raises(ValueError) as info:
        top_k_gates(np.zeros((2, 4), np.float32), k)
    message = str(info.value)
    assert "`k`" in message, f"error should name `k`: {message!r}"
    assert f"k={k!r}" in message, f"error should show the received value k={k!r}: {message!r}"


@pytest.mark.parametrize("capacity_factor", [0, 0.0, -1, -0.5, "a", None, True])
def test_expert_capacity_rejects_bad_capacity_factor(capacity_factor):
    with pytest.raises(ValueError) as info:
        expert_capacity(16, 4, 1, capacity_factor)
    message = str(info.value)
    assert "capacity_factor" in message, f"error should name capacity_factor: {message!r}"
    assert repr(capacity_factor) in message, f"error should show the received value: {message!r}"


@pytest.mark.parametrize("capacity_factor", [float("nan"), float("inf")])
def test_expert_capacity_rejects_non_finite_capacity_factor(capacity_factor):
    with pytest.raises(ValueError, match="capacity_factor"):
        expert_capacity(16, 4, 1, capacity_factor)


def test_top1_gates_emit_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gates, _ = top_k_gates(np.array([[0.0, 1.0, 0.5]], np.float32), k=1)
    np.testing.assert_array_equal(np.asarray(gates), [[0.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    "tokens, experts, k, factor, expected",
    [
        (1024, 8, 2, 1.25, 320),  # the formula itself when 1 <= C <= T
        (6, 8, 1, 1.0, 1),  # ceil(6/8) = 1
        (1, 64, 1, 0.5, 1),  # formula gives 1 after ceil; never 0 slots
        (6, 2, 2, 4.0, 6),  # 24 slots would exceed T: cut to T
        (7, 4, 2, None, 7),  # no limit: T
    ],
)
def test_buffer_capacity_clamps_to_one_and_t(tokens, experts, k, factor, expected):
    assert buffer_capacity(tokens, experts, k, factor) == expected
    # The same value when the token count is only known at run time.
    traced = tf.function(lambda t: buffer_capacity(t, experts, k, factor))(tf.constant(tokens))
    assert int(traced) == expected
