"""Grades exercise 13: DeepSeek-V3 auxiliary-loss-free balancing (bias for selection only)."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex13_aux_free_bias"

# Fast, deterministic grading: no example database written, no shrinking or explain phase.
_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _np(x):
    return np.asarray(x, dtype=np.float64)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _route(ex, logits, bias, k):
    gates, indices = ex.route_with_bias(np.asarray(logits, np.float32), np.asarray(bias, np.float32), k)
    return _np(gates), np.asarray(indices).astype(np.int64)


@pytest.mark.points(2)
def test_update_bias_direction_and_step(ex):
    got = _np(ex.update_bias(np.zeros(4), np.array([6, 2, 4, 4]), 0.01))
    assert got.shape == (4,), f"the new bias must have shape [E] = (4,); got {got.shape}"
    assert np.allclose(got, [-0.01, 0.01, 0.0, 0.0]), (
        "loads [6, 2, 4, 4] (mean 4), gamma 0.01: the overloaded expert 0 goes DOWN by gamma, the underloaded "
        "expert 1 goes UP by gamma, experts at the mean keep their bias: expected [-0.01, 0.01, 0, 0], "
        f"got {got.tolist()}"
    )
    got = _np(ex.update_bias(np.array([0.5, -0.2, 0.1]), np.array([1, 10, 1]), 0.001))
    assert np.allclose(got, [0.501, -0.201, 0.101]), (
        f"bias [0.5, -0.2, 0.1], loads [1, 10, 1], gamma 0.001 should give [0.501, -0.201, 0.101]; got {got.tolist()}"
    )
    load = np.asarray(ex.expert_load(np.array([[0, 1], [0, 2], [0, 1]]), 4))
    assert load.tolist() == [3, 2, 1, 0], (
        f"expert_load([[0, 1], [0, 2], [0, 1]], 4) should be [3, 2, 1, 0]; got {load.tolist()}"
    )


@pytest.mark.points(2)
def test_bias_changes_selection_not_gate_values(ex):
    logits = np.array([[2.0, 0.0, -1.0]])
    gates, indices = _route(ex, logits, [0.0, 0.0, 0.0], 2)
    assert indices.tolist() == [[0, 1]], (
        f"with zero bias the top-2 of sigmoid([2, 0, -1]) are experts [0, 1]; got {indices.tolist()}"
    )
    s = _sigmoid(logits[0])
    assert np.allclose(gates, [[s[0] / (s[0] + s[1]), s[1] / (s[0] + s[1])]], atol=1e-5), (
        f"gates are the chosen sigmoid affinities normalised to sum 1: expected "
        f"{[round(s[0] / (s[0] + s[1]), 4), round(s[1] / (s[0] + s[1]), 4)]}, got {gates.round(4).tolist()}"
    )
    gates, indices = _route(ex, logits, [-0.5, 0.0, 0.3], 2)
    assert indices.tolist() == [[2, 1]], (
        "bias [-0.5, 0, 0.3] gives biased scores (0.381, 0.5, 0.569): the selection must use s + b, so experts "
        f"[2, 1] (best first); got {indices.tolist()}"
    )
    expected = np.array([[s[2], s[1]]]) / (s[2] + s[1])
    assert np.allclose(gates, expected, atol=1e-5), (
        f"the gates must come from the ORIGINAL affinities s (not s + b): expected {expected.round(4).tolist()}, "
        f"got {gates.round(4).tolist()}"
    )


@pytest.mark.points(2)
def test_bias_gets_no_gradient(ex):
    logits = tf.Variable(np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32))
    bias = tf.Variable(np.array([0.3, -0.2, 0.1, 0.0, -0.4], np.float32))
    weights = tf.constant(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        gates, _ = ex.route_with_bias(logits, bias, 3)
        objective = tf.reduce_sum(tf.convert_to_tensor(gates) * weights)
    grad_logits, grad_bias = tape.gradient(objective, [logits, bias])
    assert grad_logits is not None and np.abs(grad_logits.numpy()).sum() > 0, (
        "the gates must be differentiable in the router logits (write route_with_bias with keras.ops)"
    )
    assert grad_bias is None or np.allclose(grad_bias.numpy(), 0.0), (
        "the bias must receive no gradient: it only selects the experts and is updated by the sign rule, "
        f"not by the optimizer; got gradient {grad_bias.numpy().round(4).tolist()}"
    )


@pytest.mark.points(3)
def test_bias_updates_balance_a_skewed_router(ex):
    rng = np.random.default_rng(0)
    num_experts, num_tokens, k, dim = 8, 512, 2, 16
    kernel = 0.3 * rng.normal(size=(dim, num_experts))
    skew = np.linspace(2.0, -1.0, num_experts)  # expert 0 is strongly preferred, expert 7 starved
    bias = np.zeros(num_experts)
    imbalance = []
    for _ in range(300):
        logits = rng.normal(size=(num_tokens, dim)) @ kernel + skew
        _, indices = _route(ex, logits, bias, k)
        load = np.bincount(indices.ravel(), minlength=num_experts)
        imbalance.append(load.max() / load.mean())
        bias = _np(ex.update_bias(bias, load, 0.005))
    assert imbalance[0] > 2.0, f"the skewed router should start unbalanced (max/mean load > 2); got {imbalance[0]:.2f}"
    late = float(np.mean(imbalance[-50:]))
    assert late < 1.35, (
        f"after 300 bias updates (gamma 0.005) the max/mean expert load should fall below 1.35 (it starts at "
        f"{imbalance[0]:.2f}); the last 50 steps average {late:.2f}"
    )
    assert bias[0] < 0 < bias[-1], (
        f"the most-preferred expert 0 must end with a negative bias and the starved expert 7 with a positive one; "
        f"got {np.round(bias, 3).tolist()}"
    )


@pytest.mark.points(1)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 6))
@settings(_SETTINGS, max_examples=15)
def test_gates_are_normalised_affinities_property(ex, seed, num_experts, k):
    k = min(k, num_experts)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(4, num_experts))
    bias = 0.2 * rng.normal(size=num_experts)
    gates, indices = _route(ex, logits, bias, k)
    assert gates.shape == (4, k) and indices.shape == (4, k), f"gates and indices must be [T, k] = (4, {k})"
    s = _sigmoid(logits.astype(np.float32))
    expected_indices = np.argsort(-(s + bias.astype(np.float32)), axis=-1, kind="stable")[:, :k]
    assert np.array_equal(np.sort(indices, axis=-1), np.sort(expected_indices, axis=-1)), (
        f"the chosen experts must be the top-{k} of sigmoid(logits) + bias; expected {expected_indices.tolist()}, "
        f"got {indices.tolist()}"
    )
    chosen = np.take_along_axis(s, indices, axis=-1)
    assert np.allclose(gates, chosen / chosen.sum(-1, keepdims=True), atol=1e-5), (
        "gates must be the chosen experts' sigmoid affinities divided by their sum"
    )


@pytest.mark.points(1)
def test_update_bias_returns_a_new_array(ex):
    """update_bias returns a new array and leaves its inputs untouched (the docstring's promise)."""
    bias = np.array([0.5, -0.2, 0.1, 0.0])
    load = np.array([9, 1, 4, 2])
    bias_before, load_before = bias.copy(), load.copy()
    got = _np(ex.update_bias(bias, load, 0.01))
    assert np.allclose(got, [0.49, -0.19, 0.1, 0.01]), (
        f"bias [0.5, -0.2, 0.1, 0], loads [9, 1, 4, 2] (mean 4), gamma 0.01 should give [0.49, -0.19, 0.1, 0.01]; "
        f"got {got.tolist()}"
    )
    assert np.array_equal(bias, bias_before) and np.array_equal(load, load_before), (
        f"update_bias modified its input: bias is now {bias.tolist()} (was {bias_before.tolist()}). Return a new "
        "array (b - gamma * ...) instead of updating in place (b -= ...): the caller may still need the old bias"
    )


@pytest.mark.points(1)
def test_route_ties_go_to_the_lower_expert(ex):
    """Equal biased scores: the lower expert index comes first (the docstring's rule)."""
    gates, indices = _route(ex, np.zeros((1, 4)), [0.0, 0.0, 0.0, 0.0], 2)
    assert indices.tolist() == [[0, 1]], (
        f"all 4 biased scores are equal (sigmoid(0) = 0.5): the top-2 must be the lower indices [0, 1]; "
        f"got {indices.tolist()}"
    )
    assert np.allclose(gates, 0.5), f"two equal affinities give gates [0.5, 0.5]; got {gates.tolist()}"
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 2.0]])
    gates, indices = _route(ex, logits, [0.0, 0.25, 0.25, 0.0], 3)
    assert indices.tolist() == [[1, 2, 0], [0, 3, 1]], (
        "logits [[0, 0, 0, 0], [2, 0, 0, 2]], bias [0, 0.25, 0.25, 0], k=3: the biased scores are "
        "(0.5, 0.75, 0.75, 0.5) and (0.881, 0.75, 0.75, 0.881); best first, ties to the lower index: expected "
        f"[[1, 2, 0], [0, 3, 1]], got {indices.tolist()}"
    )
