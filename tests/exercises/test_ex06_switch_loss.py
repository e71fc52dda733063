"""Grades exercise 6: the Switch Transformer load-balancing loss alpha * N * sum_i f_i P_i."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex06_switch_loss"

_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])


def _np(value):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)


def _float(value):
    arr = _np(value)
    assert arr.size == 1, f"the loss must be a scalar, got an array of shape {arr.shape}"
    return float(arr.reshape(()))


def _loss(ex, probs, alpha):
    return _float(ex.switch_balance_loss(np.asarray(probs, "float32"), alpha=alpha))


@pytest.mark.points(2)
def test_fractions_and_mean_probs(ex):
    f = _np(ex.expert_fractions(PROBS))
    p = _np(ex.mean_router_probs(PROBS))
    assert f.shape == (3,) and p.shape == (3,), (
        f"f and P are one value per expert, shape (3,); got {f.shape}, {p.shape}"
    )
    np.testing.assert_allclose(
        f, [0.5, 0.25, 0.25], atol=1e-6, err_msg="top-1 experts are 0, 1, 0, 2 -> f = [2/4, 1/4, 1/4]"
    )
    np.testing.assert_allclose(
        p, [0.375, 0.35, 0.275], atol=1e-6, err_msg="P = mean over tokens = [0.375, 0.35, 0.275]"
    )


@pytest.mark.points(1)
def test_worked_example(ex):
    assert _loss(ex, PROBS, 0.01) == pytest.approx(0.0103125, rel=1e-5), (
        "alpha * N * sum f_i P_i = 0.01 * 3 * (0.5*0.375 + 0.25*0.35 + 0.25*0.275) = 0.0103125"
    )


@pytest.mark.points(2)
def test_even_routing_gives_alpha_and_collapse_gives_alpha_times_n(ex):
    alpha = 0.01
    uniform = np.full((8, 4), 0.25)
    assert _loss(ex, uniform, alpha) == pytest.approx(alpha, rel=1e-5), "a uniform router (all p = 1/N) gives alpha"
    balanced = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]] * 0.6 + 0.1  # each expert is top-1 for 2 of 8 tokens
    assert _loss(ex, balanced, alpha) == pytest.approx(alpha, rel=1e-5), (
        "perfectly even dispatch (every f_i = 1/N) gives alpha, whatever the probabilities"
    )
    collapsed = np.tile([1.0, 0.0, 0.0, 0.0], (8, 1))
    assert _loss(ex, collapsed, alpha) == pytest.approx(alpha * 4, rel=1e-5), (
        "every token sent to expert 0 with probability 1: f_0 = P_0 = 1, loss = alpha * N = 0.04"
    )
    assert _loss(ex, collapsed[:, :2].copy(), alpha) == pytest.approx(alpha * 2, rel=1e-5), "N = 2 collapse: 0.02"


@pytest.mark.points(1)
def test_alpha_is_not_a_lower_bound(ex):
    probs = np.array([[0.51, 0.49], [0.51, 0.49], [0.0, 1.0]])
    assert _loss(ex, probs, 1.0) == pytest.approx(2 * (2 / 3 * 0.34 + 1 / 3 * 0.66), rel=1e-5), (
        "f = [2/3, 1/3], P = [0.34, 0.66]: the loss is 2 * (2/3 * 0.34 + 1/3 * 0.66) = 0.8933 < alpha = 1"
    )


@pytest.mark.points(2)
@_SETTINGS
@given(
    num_tokens=st.integers(1, 16),
    num_experts=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    alpha=st.sampled_from([1e-2, 0.1, 1.0]),
)
def test_matches_the_library(ex, num_tokens, num_experts, seed, alpha):
    from moe_tf.losses import switch_balance_loss as library_loss

    probs = np.random.default_rng(seed).dirichlet(np.ones(num_experts) * 0.5, size=num_tokens).astype("float32")
    expected = alpha * float(library_loss(probs, np.eye(num_experts, dtype="float32")[probs.argmax(-1)]))
    got = _loss(ex, probs, alpha)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-7), (
        f"for T={num_tokens} tokens, N={num_experts} experts, alpha={alpha}: expected {expected:.6g}, got {got:.6g}"
    )
    assert alpha / num_experts - 1e-6 <= got <= alpha * num_experts + 1e-6, "the loss lies in [alpha / N, alpha * N]"


@pytest.mark.points(2)
def test_gradient_flows_only_through_p(ex):
    import tensorflow as tf

    probs = tf.constant(PROBS, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(probs)
        loss = ex.switch_balance_loss(probs, alpha=0.01)
    grad = tape.gradient(loss, probs)
    assert grad is not None, (
        "no gradient reached router_probs: build the loss with keras.ops on the input tensor (numpy breaks the graph)"
    )
    expected = np.tile(0.01 * 3 * np.array([0.5, 0.25, 0.25]) / 4, (4, 1))
    np.testing.assert_allclose(
        np.asarray(grad),
        expected,
        rtol=1e-5,
        atol=1e-9,
        err_msg="d loss / d p[t, i] = alpha * N * f_i / T = [0.00375, 0.001875, 0.001875] for every token: "
        "the gradient flows through P only (f is a count)",
    )


@pytest.mark.points(1)
def test_argmax_ties_go_to_the_lower_expert(ex):
    probs = np.array(
        [[0.25, 0.25, 0.5, 0.0], [0.4, 0.4, 0.1, 0.1], [0.1, 0.3, 0.3, 0.3], [0.5, 0.0, 0.0, 0.5]], dtype="float32"
    )
    f = _np(ex.expert_fractions(probs))
    np.testing.assert_allclose(
        f,
        [0.5, 0.25, 0.25, 0.0],
        atol=1e-6,
        err_msg="top-1 experts with ties broken towards the LOWER index: 2, 0 (0.4 = 0.4), 1 (of three 0.3s), "
        "0 (0.5 = 0.5), so f = [2/4, 1/4, 1/4, 0]",
    )
    p = probs.mean(axis=0)
    assert _loss(ex, probs, 1.0) == pytest.approx(4 * float(np.dot([0.5, 0.25, 0.25, 0.0], p)), rel=1e-5), (
        "the loss uses the same f: 4 * (0.5 * P_0 + 0.25 * P_1 + 0.25 * P_2)"
    )


@pytest.mark.points(1)
def test_default_alpha_is_the_papers(ex):
    got = _float(ex.switch_balance_loss(np.asarray(PROBS, "float32")))
    assert got == pytest.approx(0.0103125, rel=1e-5), (
        f"switch_balance_loss(probs) without alpha uses the documented default alpha = 1e-2 (the paper's): "
        f"expected 0.0103125, got {got:.6g}"
    )
