"""Grades exercise 1: softmax gate, dense mixture, and the one-logit softmax trap."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex01_dense_mixture"


def _np(value):
    """The learner's output as a float64 numpy array (numpy, keras or tf tensors)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)


def _ref_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.points(2)
def test_softmax_values(ex):
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 5.0, 2.0]])
    got = _np(ex.softmax(logits))
    assert got.shape == (3, 3), f"softmax must keep the shape [batch, E] = (3, 3); got {got.shape}"
    np.testing.assert_allclose(
        got[0],
        [0.09003057, 0.24472847, 0.66524096],
        rtol=1e-5,
        err_msg="softmax([1, 2, 3]) should be about [0.0900, 0.2447, 0.6652] (softmax over the LAST axis)",
    )
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-6, err_msg="every row of a softmax must sum to 1")
    np.testing.assert_allclose(got, _ref_softmax(logits), rtol=1e-5, atol=1e-7)


@pytest.mark.points(1)
def test_softmax_is_stable_for_large_logits(ex):
    logits = np.array([[1000.0, 1000.0], [1000.0, 0.0], [-1000.0, -1001.0]])
    with np.errstate(all="ignore"):
        got = _np(ex.softmax(logits))
    assert np.all(np.isfinite(got)), (
        "softmax([1000, 1000]) returned inf/NaN: subtract each row's max before exp (softmax(z) = softmax(z - c))"
    )
    np.testing.assert_allclose(got, [[0.5, 0.5], [1.0, 0.0], [0.7310586, 0.2689414]], rtol=1e-5, atol=1e-7)


@pytest.mark.points(1)
def test_softmax_over_one_unit_is_always_one(ex):
    """The Dense(1, activation='softmax') trap: whatever the input, the 'gate' is exactly 1."""
    import keras

    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    selector = keras.layers.Dense(1, activation="softmax")
    with pytest.warns(UserWarning):  # Keras itself warns about a softmax over one unit
        keras_out = np.asarray(selector(x))
    kernel, bias = (np.asarray(w) for w in selector.get_weights())
    logits = x @ kernel + bias  # [6, 1]: one logit per input
    got = _np(ex.softmax(np.concatenate([logits, [[1000.0], [-1000.0]]])))
    assert got.shape == (8, 1), f"softmax of [8, 1] logits must have shape (8, 1); got {got.shape}"
    np.testing.assert_array_equal(
        got, 1.0, err_msg="a softmax over ONE logit is exp(z)/exp(z) = 1 for every z (including +-1000)"
    )
    # the same constant Keras' Dense(1, softmax) outputs (a vectorised exp may round it one float32 step below 1)
    np.testing.assert_allclose(keras_out, 1.0, rtol=0, atol=2.0**-23)


@pytest.mark.points(2)
def test_softmax_gate(ex):
    x = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    w_gate = np.array([[1.0, -1.0, 0.0], [0.5, 0.0, -2.0]])
    got = _np(ex.softmax_gate(x, w_gate))
    assert got.shape == (3, 3), (
        f"softmax_gate of x [3, 2] and w_gate [2, 3] must be [batch, E] = (3, 3); got {got.shape}"
    )
    np.testing.assert_allclose(
        _np(ex.softmax_gate(np.array([[1.0, 2.0]]), np.array([[1.0, -1.0], [0.0, 0.0]]))),
        [[0.88079708, 0.11920292]],
        rtol=1e-5,
        err_msg="softmax_gate([[1, 2]], [[1, -1], [0, 0]]): logits [1, -1] -> gates [0.8808, 0.1192]",
    )
    np.testing.assert_allclose(got, _ref_softmax(x @ w_gate), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, 1.0), "with E >= 2 experts the gates are a distribution, not all ones"


@pytest.mark.points(2)
def test_dense_mixture_example(ex):
    x = np.array([[1.0, 2.0]])
    w_gate = np.array([[1.0, -1.0], [0.0, 0.0]])
    kernels = np.array([[[1.0], [0.0]], [[0.0], [1.0]]])
    got = _np(ex.dense_mixture(x, w_gate, kernels))
    assert got.shape == (1, 1), f"dense_mixture output must be [batch, d_out] = (1, 1); got {got.shape}"
    np.testing.assert_allclose(
        got,
        [[1.11920292]],
        rtol=1e-5,
        err_msg="gates [0.8808, 0.1192], expert outputs [1, 2]: y = 0.8808 * 1 + 0.1192 * 2 = 1.1192",
    )
    biases = np.array([[10.0], [-10.0]])
    np.testing.assert_allclose(
        _np(ex.dense_mixture(x, w_gate, kernels, biases)),
        [[1.11920292 + 10 * (0.88079708 - 0.11920292)]],
        rtol=1e-5,
        err_msg="with expert_biases, expert i outputs x @ W_i + b_i (expected 8.7352)",
    )


@pytest.mark.points(2)
@settings(
    max_examples=15,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.integers(1, 4),
    d=st.integers(1, 4),
    num_experts=st.integers(2, 5),
    d_out=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_dense_mixture_matches_reference(ex, batch, d, num_experts, d_out, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d))
    w_gate = rng.normal(size=(d, num_experts))
    kernels = rng.normal(size=(num_experts, d, d_out))
    biases = rng.normal(size=(num_experts, d_out))
    gates = _ref_softmax(x @ w_gate)
    expected = sum(gates[:, i : i + 1] * (x @ kernels[i] + biases[i]) for i in range(num_experts))
    got = _np(ex.dense_mixture(x, w_gate, kernels, biases))
    assert got.shape == (batch, d_out), f"expected output shape [batch, d_out] = {(batch, d_out)}; got {got.shape}"
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg="y must be sum_i g_i(x) * (x @ W_i + b_i)")


@pytest.mark.points(2)
def test_one_logit_gate(ex):
    z = np.array([0.0, 2.0, -3.0, 1000.0, -1000.0])
    with np.errstate(all="ignore"):
        got = _np(ex.one_logit_gate(z))
    assert got.shape == (5, 2), f"one_logit_gate of 5 logits must be [batch, 2] = (5, 2); got {got.shape}"
    assert np.all(np.isfinite(got)), "one_logit_gate(+-1000) returned inf/NaN: compute the sigmoid stably"
    np.testing.assert_allclose(
        got[:2],
        [[0.5, 0.5], [0.88079708, 0.11920292]],
        rtol=1e-5,
        err_msg="one_logit_gate(0) = [0.5, 0.5]; one_logit_gate(2) = [0.8808, 0.1192]",
    )
    expected = _ref_softmax(np.stack([z, np.zeros_like(z)], axis=-1))
    np.testing.assert_allclose(
        got,
        expected,
        rtol=1e-5,
        atol=1e-7,
        err_msg="the gate must equal softmax([z, 0]) = [sigmoid(z), 1 - sigmoid(z)]",
    )


@pytest.mark.points(1)
def test_softmax_any_leading_shape_and_input_untouched(ex):
    logits = np.random.default_rng(1).normal(size=(2, 3, 4)) * 3
    before = logits.copy()
    got = _np(ex.softmax(logits))
    np.testing.assert_array_equal(
        logits,
        before,
        err_msg="softmax modified the caller's logits: subtract the max into a NEW array (z = z - m), "
        "never in place (z -= m changes the array the caller passed)",
    )
    assert got.shape == (2, 3, 4), f"softmax keeps the shape [..., E]: (2, 3, 4) -> (2, 3, 4); got {got.shape}"
    np.testing.assert_allclose(
        got,
        _ref_softmax(logits),
        rtol=1e-5,
        atol=1e-7,
        err_msg="softmax of a [2, 3, 4] array is taken over the LAST axis (the E experts) "
        "of every row, whatever the leading axes",
    )


@pytest.mark.points(1)
def test_one_logit_gate_is_stable_without_overflow_warnings(ex):
    """The docstring promises no overflow warning for z = +-1000: 1 / (1 + exp(-z)) gives the right values
    but overflows (exp(1000) = inf) on the way, which is the instability the exercise is about."""
    z = np.array([1000.0, -1000.0, 750.0, -750.0, 3.0])
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            got = _np(ex.one_logit_gate(z))
    except FloatingPointError as err:
        pytest.fail(
            f"one_logit_gate({z.tolist()}) overflowed ({err}): exp(1000) = inf even when the final "
            "value is right; compute it as softmax([z, 0]) with the max subtracted, or take exp of -|z| only",
            pytrace=False,
        )
    assert got.shape == (5, 2), f"one_logit_gate of 5 logits must be [batch, 2] = (5, 2); got {got.shape}"
    expected = _ref_softmax(np.stack([z, np.zeros_like(z)], axis=-1))
    np.testing.assert_allclose(
        got,
        expected,
        rtol=1e-6,
        atol=1e-12,
        err_msg="the gate must equal [sigmoid(z), 1 - sigmoid(z)] for z = +-1000, +-750, 3",
    )
