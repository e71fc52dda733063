"""Grades exercise 3: sparse top-k gates with renormalisation."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex03_topk_gating"

_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _np(value, dtype=np.float64):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value)).astype(dtype)


def _call(ex, logits, k):
    out = ex.top_k_gates(logits, k)
    assert isinstance(out, (tuple, list)) and len(out) == 2, "top_k_gates must return a pair (gates, indices)"
    return _np(out[0]), _np(out[1], np.int64)


def _ref_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.points(2)
def test_worked_example(ex):
    gates, indices = _call(ex, np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]]), 2)
    assert gates.shape == (2, 3), f"gates must be [T, E] = (2, 3); got {gates.shape}"
    assert indices.shape == (2, 2), f"indices must be [T, k] = (2, 2); got {indices.shape}"
    np.testing.assert_array_equal(indices, [[1, 2], [2, 0]], err_msg="indices are the top-k experts, best first")
    np.testing.assert_allclose(
        gates[0],
        [0.0, 0.73105858, 0.26894142],
        rtol=1e-5,
        atol=1e-7,
        err_msg="logits [1, 3, 2], k=2: keep experts 1 and 2, gates = softmax([3, 2]) = [0.7311, 0.2689], expert 0 = 0",
    )


@pytest.mark.points(2)
@_SETTINGS
@given(
    num_tokens=st.integers(1, 6),
    num_experts=st.integers(1, 8),
    data=st.data(),
)
def test_properties_and_library_agreement(ex, num_tokens, num_experts, data):
    from moe_tf.routing import top_k_gates as library_top_k_gates

    k = data.draw(st.integers(1, num_experts), label="k")
    # Half-integer logits: exact in float32 and full of ties.
    steps = data.draw(
        st.lists(st.integers(-6, 6), min_size=num_tokens * num_experts, max_size=num_tokens * num_experts),
        label="logits*2",
    )
    logits = np.array(steps, np.float64).reshape(num_tokens, num_experts) / 2.0
    gates, indices = _call(ex, logits, k)
    assert gates.shape == (num_tokens, num_experts) and indices.shape == (num_tokens, k), (
        f"for logits {logits.shape} and k={k}: gates must be {(num_tokens, num_experts)}, indices {(num_tokens, k)}; "
        f"got {gates.shape} and {indices.shape}"
    )
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, rtol=1e-5, err_msg="each row of gates must sum to 1")
    assert np.all(gates >= 0), "gates must be non-negative"
    assert np.all((gates > 0).sum(axis=-1) <= k), f"at most k={k} non-zero gates per token"
    ref_gates, ref_indices = (np.asarray(t) for t in library_top_k_gates(logits.astype("float32"), k))
    np.testing.assert_array_equal(
        indices,
        ref_indices,
        err_msg=f"chosen experts differ for logits {logits.tolist()}, k={k} "
        "(best first; ties: lower expert index first)",
    )
    np.testing.assert_allclose(
        gates, ref_gates, rtol=1e-5, atol=1e-6, err_msg=f"gate values differ for logits {logits.tolist()}, k={k}"
    )


@pytest.mark.points(2)
def test_ties_go_to_the_lower_index(ex):
    gates, indices = _call(ex, np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 0.0, 2.0]]), 2)
    np.testing.assert_array_equal(
        indices,
        [[0, 1], [1, 3]],
        err_msg="ties are broken towards the lower expert index: [1, 1, 1, 0] with k=2 keeps experts 0 and 1",
    )
    np.testing.assert_allclose(
        gates,
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.5]],
        atol=1e-7,
        err_msg="two kept equal logits share the gate 0.5 / 0.5; exactly k experts are kept",
    )


@pytest.mark.points(2)
def test_k_equals_E_is_softmax_and_k_one_is_one_hot(ex):
    logits = np.random.default_rng(3).normal(size=(5, 4))
    gates, indices = _call(ex, logits, 4)
    np.testing.assert_allclose(
        gates,
        _ref_softmax(logits),
        rtol=1e-5,
        atol=1e-7,
        err_msg="with k = E every expert is kept: the gates are the full softmax",
    )
    np.testing.assert_array_equal(
        np.sort(indices, axis=-1),
        np.tile(np.arange(4), (5, 1)),
        err_msg="with k = E the indices are a permutation of all experts",
    )
    gates1, indices1 = _call(ex, logits, 1)
    np.testing.assert_array_equal(indices1[:, 0], logits.argmax(-1), err_msg="k=1 picks the argmax")
    np.testing.assert_allclose(
        gates1,
        np.eye(4)[logits.argmax(-1)],
        atol=1e-7,
        err_msg="k=1 with renormalisation gives a one-hot gate (1.0 on the argmax)",
    )


@pytest.mark.points(1)
def test_large_logits_are_stable(ex):
    with np.errstate(all="ignore"):
        gates, _ = _call(ex, np.array([[1000.0, 999.0, -1000.0]]), 2)
    assert np.all(np.isfinite(gates)), "logits ~1000 gave inf/NaN: subtract the max before exp"
    np.testing.assert_allclose(gates, [[0.73105858, 0.26894142, 0.0]], rtol=1e-5, atol=1e-7)


@pytest.mark.points(1)
@pytest.mark.parametrize("k", [0, 4])
def test_invalid_k_raises(ex, k):
    with pytest.raises(ValueError):
        ex.top_k_gates(np.zeros((2, 3)), k)


@pytest.mark.points(1)
def test_input_logits_are_not_modified(ex):
    logits = np.array([[1.0, 3.0, 2.0, -1.0], [0.5, 0.5, 4.0, 0.0]])
    before = logits.copy()
    gates, indices = _call(ex, logits, 2)
    np.testing.assert_array_equal(
        logits,
        before,
        err_msg="top_k_gates modified the caller's logits (a sort, a max shift or a -inf mask done "
        "in place): work on a new array; np.asarray(x, float64) returns x itself for a "
        "float64 input",
    )
    np.testing.assert_array_equal(
        indices, [[1, 2], [2, 0]], err_msg="indices of [[1, 3, 2, -1], [0.5, 0.5, 4, 0]], k=2"
    )


@pytest.mark.points(1)
def test_ties_at_the_cut_with_k_above_one(ex):
    """Order matters when a tie straddles the k-th place: which expert is kept changes the gates."""
    logits = np.array([[0.0, 2.0, 1.0, 2.0, 1.0], [3.0, 1.0, 1.0, 1.0, 3.0]])
    gates, indices = _call(ex, logits, 3)
    np.testing.assert_array_equal(
        indices,
        [[1, 3, 2], [0, 4, 1]],
        err_msg="k=3: [0, 2, 1, 2, 1] keeps experts 1, 3 (the two 2s, lower index first) then 2 (of the tied 1s, "
        "the lower index); [3, 1, 1, 1, 3] keeps 0, 4, then 1",
    )
    e2, e1 = np.exp(2.0), np.exp(1.0)
    np.testing.assert_allclose(
        gates[0],
        [0.0, e2, e1, e2, 0.0] / (2 * e2 + e1),
        rtol=1e-5,
        atol=1e-7,
        err_msg="the kept tied logit is expert 2's, not expert 4's: expert 4's gate is 0",
    )
