"""Grades exercise 5: CV^2, importance loss and the smooth load loss (Shazeer et al. 2017)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex05_cv_losses"

_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

CLEAN = np.array([[1.0, 0.0, 0.5]])
NOISY = np.array([[1.0, 1.5, 0.5]])
STDDEV = np.ones((1, 3))


def _np(value):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)


def _float(value):
    arr = _np(value)
    assert arr.size == 1, f"expected a scalar, got an array of shape {arr.shape}"
    return float(arr.reshape(()))


def _noisy_inputs(rng, num_tokens, num_experts):
    clean = rng.normal(size=(num_tokens, num_experts))
    stddev = np.log1p(np.exp(rng.normal(size=(num_tokens, num_experts)))) + 1e-2
    noisy = clean + rng.normal(size=(num_tokens, num_experts)) * stddev
    return clean, noisy, stddev


@pytest.mark.points(2)
def test_cv_squared(ex):
    assert _float(ex.cv_squared(np.array([1.0, 2.0, 3.0]))) == pytest.approx(1 / 6, rel=1e-6), (
        "CV^2 of [1, 2, 3] = population Var (2/3) / Mean^2 (4) = 1/6 (divide by E, not E - 1)"
    )
    assert _float(ex.cv_squared(np.array([5.0, 5.0, 5.0]))) == pytest.approx(0.0, abs=1e-12), "equal entries: 0"
    assert _float(ex.cv_squared(np.array([0.0, 0.0]))) == pytest.approx(0.0, abs=1e-12), (
        "an all-zero vector gives 0 (the 1e-10 epsilon in the denominator), not NaN"
    )
    assert _float(ex.cv_squared(np.array([7.0]))) == 0.0, "a single entry (E = 1) gives 0"
    assert _float(ex.cv_squared(np.array([4.0, 0.0, 0.0, 0.0]))) == pytest.approx(3.0, rel=1e-6), (
        "one expert takes everything, E = 4: CV^2 = E - 1 = 3"
    )


@pytest.mark.points(2)
def test_importance_and_importance_loss(ex):
    from moe_tf.losses import importance_loss as library_importance_loss

    gates = np.array([[0.7, 0.3, 0.0], [0.1, 0.6, 0.3]])
    imp = _np(ex.importance(gates))
    assert imp.shape == (3,), f"importance is one value per expert: expected shape (3,), got {imp.shape}"
    np.testing.assert_allclose(imp, [0.8, 0.9, 0.3], rtol=1e-6, err_msg="importance = sum of gates over the batch")
    assert _float(ex.importance_loss(gates)) == pytest.approx(0.155, rel=1e-5), "CV^2 of [0.8, 0.9, 0.3] = 0.155"
    assert _float(ex.importance_loss(gates, weight=0.1)) == pytest.approx(0.0155, rel=1e-5), "the loss is w * CV^2"
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(16, 6)) * 2
    soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert _float(ex.importance_loss(soft)) == pytest.approx(float(library_importance_loss(soft)), rel=1e-4)


@pytest.mark.points(1)
def test_normal_cdf(ex):
    got = _np(ex.normal_cdf(np.array([0.0, -1.0, 1.96, 8.0, -8.0])))
    np.testing.assert_allclose(
        got,
        [0.5, 0.15865525, 0.9750021, 1.0, 6.22e-16],
        rtol=1e-4,
        atol=1e-12,
        err_msg="Phi(0) = 0.5, Phi(-1) = 0.1587, Phi(1.96) = 0.9750, Phi(8) = 1, Phi(-8) ~ 0",
    )


@pytest.mark.points(2)
def test_smooth_load_worked_example(ex):
    got = _np(ex.smooth_load(CLEAN, NOISY, STDDEV, 1))
    assert got.shape == (3,), f"smooth_load is one value per expert: expected shape (3,), got {got.shape}"
    np.testing.assert_allclose(
        got,
        [0.30853754, 0.15865525, 0.15865525],
        rtol=1e-5,
        err_msg="k=1, H = [1, 1.5, 0.5]: expert 1 is in the top 1, its bar is the 2nd largest H (1.0) -> Phi(0 - 1); "
        "experts 0 and 2 must beat the largest H (1.5) -> Phi(1 - 1.5), Phi(0.5 - 1.5)",
    )
    got2 = _np(ex.smooth_load(np.vstack([CLEAN, CLEAN]), np.vstack([NOISY, NOISY]), np.full((2, 3), 2.0), 2))
    # k=2: experts 1 and 0 are in (bar = 3rd largest, 0.5); expert 2 is out (bar = 2nd largest, 1.0). Sum of 2 tokens.
    expected2 = 2 * np.array([0.59870633, 0.40129367, 0.40129367])
    np.testing.assert_allclose(
        got2, expected2, rtol=1e-5, err_msg="k=2, stddev 2, two equal tokens: 2 * [Phi(0.25), Phi(-0.25), Phi(-0.25)]"
    )


@pytest.mark.points(2)
@_SETTINGS
@given(num_tokens=st.integers(1, 12), num_experts=st.integers(2, 6), data=st.data(), seed=st.integers(0, 2**16))
def test_load_loss_matches_the_library(ex, num_tokens, num_experts, data, seed):
    from moe_tf.losses import load_loss as library_load_loss

    k = data.draw(st.integers(1, num_experts - 1), label="k")
    clean, noisy, stddev = _noisy_inputs(np.random.default_rng(seed), num_tokens, num_experts)
    expected = float(library_load_loss(clean.astype("float32"), noisy.astype("float32"), stddev.astype("float32"), k))
    got = _float(ex.load_loss(clean, noisy, stddev, k))
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-6), (
        f"load_loss for T={num_tokens}, E={num_experts}, k={k} should be {expected:.6f}; got {got:.6f}"
    )
    assert _float(ex.load_loss(clean, noisy, stddev, k, weight=0.01)) == pytest.approx(0.01 * got, rel=1e-6, abs=1e-9)


@pytest.mark.points(1)
def test_load_loss_is_zero_when_every_expert_is_chosen(ex):
    clean, noisy, stddev = _noisy_inputs(np.random.default_rng(1), 8, 4)
    assert _float(ex.load_loss(clean, noisy, stddev, 4)) == pytest.approx(0.0, abs=1e-9), (
        "with k = E every expert receives every token: the load is even and the loss is 0"
    )
    assert _float(ex.load_loss(CLEAN, NOISY, STDDEV, 1)) == pytest.approx(0.11470776, rel=1e-5), (
        "load_loss of the docstring example: CV^2 of [0.3085, 0.1587, 0.1587] = 0.1147"
    )


@pytest.mark.points(1)
def test_smooth_load_when_every_expert_is_chosen(ex):
    clean, noisy, stddev = _noisy_inputs(np.random.default_rng(2), 5, 3)
    for k in (3, 4):
        got = _np(ex.smooth_load(clean, noisy, stddev, k))
        assert got.shape == (3,), f"smooth_load is one value per expert: expected shape (3,), got {got.shape}"
        np.testing.assert_allclose(
            got,
            [5.0, 5.0, 5.0],
            rtol=1e-9,
            err_msg=f"k={k} >= E=3: every expert is always chosen, so Load_i = T = 5 for every expert "
            "(the docstring's special case: there is no (k+1)-th logit to compare with)",
        )


@pytest.mark.points(1)
def test_smooth_load_with_ties_in_the_noisy_logits(ex):
    """The threshold rule is strict: H_i is in the top k when H_i > the (k+1)-th largest."""
    clean = np.zeros((1, 3))
    # k=1, H = [2, 1, 1]: expert 0 is in (2 > 1), bar = 1; experts 1 and 2 tie with the 2nd largest: out, bar = 2.
    got = _np(ex.smooth_load(clean, np.array([[2.0, 1.0, 1.0]]), np.ones((1, 3)), 1))
    np.testing.assert_allclose(
        got,
        [0.15865525, 0.02275013, 0.02275013],
        rtol=1e-5,
        err_msg="k=1, clean 0, H = [2, 1, 1]: expert 0 must beat the 2nd largest H (1) -> Phi(-1); experts 1 and 2 "
        "are not > the 2nd largest (they equal it), so their bar is the largest H (2) -> Phi(-2)",
    )
    # k=2, H = [1, 1, 0]: experts 0 and 1 are in (1 > 0), bar = 0; expert 2 equals the 3rd largest: out, bar = 1.
    got = _np(ex.smooth_load(clean, np.array([[1.0, 1.0, 0.0]]), np.ones((1, 3)), 2))
    np.testing.assert_allclose(
        got,
        [0.5, 0.5, 0.15865525],
        rtol=1e-5,
        err_msg="k=2, clean 0, H = [1, 1, 0]: experts 0 and 1 beat the 3rd largest (0) -> Phi(0); expert 2 equals "
        "it, so it is out and must beat the 2nd largest (1) -> Phi(-1)",
    )
