"""Grades exercise 7: stable logsumexp and the ST-MoE router z-loss."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex07_z_loss"

_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _np(value):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)


def _float(value):
    arr = _np(value)
    assert arr.size == 1, f"the z-loss must be a scalar, got an array of shape {arr.shape}"
    return float(arr.reshape(()))


@pytest.mark.points(1)
def test_logsumexp_small_values(ex):
    x = np.array([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]])
    got = _np(ex.logsumexp(x))
    assert got.shape == (3,), f"logsumexp reduces the last axis: [3, 2] -> (3,); got {got.shape}"
    np.testing.assert_allclose(
        got,
        np.log(np.exp(x).sum(-1)),
        rtol=1e-6,
        err_msg="logsumexp([0, 0]) = log 2 = 0.6931, logsumexp([1, 2]) = 2.3133",
    )


@pytest.mark.points(2)
def test_logsumexp_does_not_overflow(ex):
    x = np.array([[1000.0, 1000.0], [1000.0, 0.0], [-1000.0, -1000.0], [-1000.0, 0.0], [800.0, 799.0]])
    with np.errstate(all="ignore"):
        got = _np(ex.logsumexp(x))
    assert np.all(np.isfinite(got)), (
        f"logsumexp returned {got.tolist()} for logits ~1000: subtract the row max m, then add it back"
    )
    expected = [1000 + math.log(2), 1000.0, -1000 + math.log(2), 0.0, 800 + math.log1p(math.exp(-1))]
    np.testing.assert_allclose(
        got,
        expected,
        rtol=1e-6,
        atol=1e-5,
        err_msg="logsumexp([1000, 1000]) = 1000 + log 2; logsumexp([-1000, -1000]) = -1000 + log 2",
    )


@pytest.mark.points(2)
def test_z_loss_worked_example(ex):
    got = _float(ex.router_z_loss(np.array([[0.0, 0.0], [1.0, 1.0]])))
    expected = (math.log(2) ** 2 + (1 + math.log(2)) ** 2) / 2
    assert got == pytest.approx(expected, rel=1e-6), (
        f"z-loss of [[0, 0], [1, 1]] = ((log 2)^2 + (1 + log 2)^2) / 2 = {expected:.6f} (mean over tokens, squared "
        f"logsumexp); got {got:.6f}"
    )


@pytest.mark.points(1)
def test_z_loss_of_large_logits_is_finite_and_exact(ex):
    with np.errstate(all="ignore"):
        got = _float(ex.router_z_loss(np.array([[1000.0, 1000.0], [-1000.0, 1000.0]])))
    assert math.isfinite(got), "the z-loss of logits ~1000 must be finite: use the stable logsumexp"
    expected = ((1000 + math.log(2)) ** 2 + 1000.0**2) / 2
    assert got == pytest.approx(expected, rel=1e-6), f"expected ((1000 + log 2)^2 + 1000^2) / 2 = {expected:.4f}"


@pytest.mark.points(2)
@_SETTINGS
@given(
    batch=st.integers(1, 12),
    num_experts=st.integers(1, 8),
    scale=st.sampled_from([0.1, 1.0, 10.0, 50.0]),
    seed=st.integers(0, 2**16),
)
def test_z_loss_matches_the_library(ex, batch, num_experts, scale, seed):
    from moe_tf.losses import router_z_loss as library_z_loss

    logits = (np.random.default_rng(seed).normal(size=(batch, num_experts)) * scale).astype("float32")
    expected = float(library_z_loss(logits))
    got = _float(ex.router_z_loss(logits))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), (
        f"z-loss of a [{batch}, {num_experts}] batch (logit scale {scale}): expected {expected:.6g}, got {got:.6g}"
    )


@pytest.mark.points(2)
def test_gradient_matches_autodiff(ex):
    import tensorflow as tf

    from moe_tf.losses import router_z_loss as library_z_loss

    logits = np.random.default_rng(4).normal(size=(5, 4)).astype("float32") * 3
    logits[0] = [500.0, 499.0, -3.0, 0.0]  # large logits: the softmax inside the gradient must be stable too
    x = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = library_z_loss(x)
    expected = np.asarray(tape.gradient(loss, x), np.float64)
    with np.errstate(all="ignore"):
        got = _np(ex.router_z_loss_grad(logits))
    assert got.shape == (5, 4), f"the gradient has the logits' shape (5, 4); got {got.shape}"
    assert np.all(np.isfinite(got)), "the gradient has inf/NaN for logits ~500: compute the softmax stably"
    np.testing.assert_allclose(
        got,
        expected,
        rtol=1e-4,
        atol=1e-5,
        err_msg="d L_z / d x[t, i] = (2/B) * logsumexp(x[t]) * softmax(x[t])_i",
    )
    np.testing.assert_allclose(
        _np(ex.router_z_loss_grad(np.array([[0.0, 0.0], [1.0, 1.0]]))),
        [[math.log(2) / 2] * 2, [(1 + math.log(2)) / 2] * 2],
        rtol=1e-6,
    )


@pytest.mark.points(1)
def test_logsumexp_reduces_the_last_axis_of_any_shape(ex):
    x = np.random.default_rng(6).normal(size=(2, 3, 4)) * 5
    got = _np(ex.logsumexp(x))
    assert got.shape == (2, 3), f"logsumexp of a [2, 3, 4] array reduces the last axis -> (2, 3); got {got.shape}"
    np.testing.assert_allclose(
        got,
        np.log(np.exp(x).sum(-1)),
        rtol=1e-6,
        err_msg="logsumexp over the last axis of a [2, 3, 4] array (x - m[..., None])",
    )
    one = _np(ex.logsumexp(np.array([1000.0, 999.0, -5.0])))
    assert one.size == 1, f"logsumexp of a single row [N] is a scalar; got shape {one.shape}"
    assert float(one.reshape(())) == pytest.approx(1000 + math.log1p(math.exp(-1.0)), rel=1e-6), (
        "logsumexp([1000, 999, -5]) = 1000 + log(1 + e^-1 + e^-1005) = 1000.3133"
    )


@pytest.mark.points(1)
def test_gradient_is_stable_where_float64_overflows(ex):
    """exp(1000) overflows even in float64: the softmax inside the gradient must be the stable one."""
    logits = np.array([[1000.0, 999.0, -3.0, 0.0], [-1000.0, -1001.0, -1000.0, -1002.0], [0.5, -0.5, 1.0, 0.0]])
    lse = np.array(
        [
            1000 + math.log1p(math.exp(-1.0)),
            logits[1].max() + math.log(np.exp(logits[1] + 1000).sum()),
            math.log(np.exp(logits[2]).sum()),
        ]
    )
    expected = 2.0 / 3 * lse[:, None] * np.exp(logits - lse[:, None])
    with np.errstate(all="ignore"):
        got = _np(ex.router_z_loss_grad(logits))
    assert got.shape == (3, 4), f"the gradient has the logits' shape (3, 4); got {got.shape}"
    assert np.all(np.isfinite(got)), (
        f"the gradient has inf/NaN for logits ~+-1000 ({got.tolist()}): softmax(x) = exp(x - logsumexp(x)), not "
        "exp(x) / sum(exp(x))"
    )
    np.testing.assert_allclose(
        got,
        expected,
        rtol=1e-4,
        atol=1e-5,
        err_msg="d L_z / d x[t, i] = (2/B) * logsumexp(x[t]) * softmax(x[t])_i, B = 3",
    )
