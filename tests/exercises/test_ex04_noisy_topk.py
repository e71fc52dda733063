"""Grades exercise 4: noisy top-k gating (Shazeer et al. 2017) with caller-supplied noise."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex04_noisy_topk"

_SETTINGS = settings(max_examples=25, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

X = np.array([[1.0, 1.0]])
W_GATE = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])  # clean logits [1, 0, 0.5]
W_NOISE = np.zeros((2, 3))  # noise scale softplus(0) = log 2
NOISE = np.array([[0.0, 2.0, 0.0]])  # H = [1, 2 log 2, 0.5]


def _np(value, dtype=np.float64):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value)).astype(dtype)


def _gating(ex, *args, **kwargs):
    out = ex.noisy_top_k_gating(*args, **kwargs)
    assert isinstance(out, (tuple, list)) and len(out) == 2, "noisy_top_k_gating must return a pair (gates, indices)"
    return _np(out[0]), _np(out[1], np.int64)


@pytest.mark.points(2)
def test_softplus_values_and_stability(ex):
    with np.errstate(all="ignore"):
        got = _np(ex.softplus(np.array([0.0, 1.0, -2.0, 1000.0, -1000.0])))
    assert got.shape == (5,), f"softplus is elementwise: expected shape (5,), got {got.shape}"
    assert np.all(np.isfinite(got)), "softplus(1000) overflowed: use max(x, 0) + log1p(exp(-|x|))"
    np.testing.assert_allclose(got[:3], [np.log(2.0), 1.31326169, 0.12692801], rtol=1e-5,
                               err_msg="softplus(0) = log 2 = 0.6931, softplus(1) = 1.3133, softplus(-2) = 0.1269")
    np.testing.assert_allclose(got[3:], [1000.0, 0.0], rtol=1e-6, atol=1e-12,
                               err_msg="softplus(1000) = 1000 and softplus(-1000) = 0 (to double precision)")


@pytest.mark.points(2)
def test_noisy_logits(ex):
    got = _np(ex.noisy_logits(X, W_GATE, W_NOISE, NOISE))
    assert got.shape == (1, 3), f"H must be [T, E] = (1, 3); got {got.shape}"
    np.testing.assert_allclose(got, [[1.0, 2 * np.log(2.0), 0.5]], rtol=1e-5,
                               err_msg="H = x W_g + noise * softplus(x W_noise) = [1, 0 + 2 * log 2, 0.5]")
    rng = np.random.default_rng(7)
    x, wg, wn, eps = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    expected = x @ wg + eps * np.log1p(np.exp(x @ wn))
    np.testing.assert_allclose(_np(ex.noisy_logits(x, wg, wn, eps)), expected, rtol=1e-5, atol=1e-7,
                               err_msg="H differs from x W_g + noise * softplus(x W_noise) on random inputs")


@pytest.mark.points(2)
def test_keep_top_k(ex):
    with np.errstate(all="ignore"):
        got = _np(ex.keep_top_k(np.array([[1.0, 1.386, 0.5], [2.0, 2.0, 2.0]]), 2))
    assert got.shape == (2, 3), f"KeepTopK keeps the shape [T, E]; got {got.shape}"
    np.testing.assert_allclose(got[0], [1.0, 1.386, -np.inf], rtol=1e-6,
                               err_msg="KeepTopK([1, 1.386, 0.5], 2) = [1, 1.386, -inf]: kept values are unchanged")
    np.testing.assert_allclose(got[1], [2.0, 2.0, -np.inf], rtol=1e-6,
                               err_msg="with ties exactly k entries are kept, lower index first: [2, 2, -inf]")


@pytest.mark.points(2)
def test_noise_can_change_the_choice(ex):
    gates, indices = _gating(ex, X, W_GATE, W_NOISE, 2, NOISE)
    np.testing.assert_array_equal(indices, [[1, 0]], err_msg="H = [1, 1.386, 0.5]: the top 2 are experts 1 then 0")
    np.testing.assert_allclose(gates, [[0.40460968, 0.59539032, 0.0]], rtol=1e-5, atol=1e-8,
                               err_msg="G = softmax(KeepTopK(H, 2)) = softmax([1, 1.386, -inf]) = [0.4046, 0.5954, 0]")
    clean_gates, clean_indices = _gating(ex, X, W_GATE, W_NOISE, 1, np.zeros((1, 3)))
    np.testing.assert_array_equal(clean_indices, [[0]], err_msg="without noise, top-1 of [1, 0, 0.5] is expert 0")
    np.testing.assert_allclose(clean_gates, [[1.0, 0.0, 0.0]], atol=1e-7)


@pytest.mark.points(2)
@_SETTINGS
@given(num_tokens=st.integers(1, 5), d=st.integers(1, 4), num_experts=st.integers(1, 6), data=st.data(),
       seed=st.integers(0, 2**16))
def test_zero_noise_is_plain_top_k(ex, num_tokens, d, num_experts, data, seed):
    from moe_tf.routing import top_k_gates

    k = data.draw(st.integers(1, num_experts), label="k")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_tokens, d))
    w_gate, w_noise = rng.normal(size=(d, num_experts)), rng.normal(size=(d, num_experts))
    gates, indices = _gating(ex, x, w_gate, w_noise, k, np.zeros((num_tokens, num_experts)))
    assert gates.shape == (num_tokens, num_experts) and indices.shape == (num_tokens, k), (
        f"expected gates {(num_tokens, num_experts)} and indices {(num_tokens, k)}; got {gates.shape}, {indices.shape}"
    )
    ref_gates, ref_indices = (np.asarray(t) for t in top_k_gates((x @ w_gate).astype("float32"), k))
    np.testing.assert_array_equal(indices, ref_indices, err_msg="with zero noise the experts are the top k of x W_g")
    np.testing.assert_allclose(gates, ref_gates, rtol=1e-4, atol=1e-6,
                               err_msg="with zero noise the gates are softmax over the top-k clean logits")
    np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-6, err_msg="each row of gates sums to 1")
