"""Grades exercise 4: noisy top-k gating (Shazeer et al. 2017) with caller-supplied noise."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex04_noisy_topk"

_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

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
    np.testing.assert_allclose(
        got[:3],
        [np.log(2.0), 1.31326169, 0.12692801],
        rtol=1e-5,
        err_msg="softplus(0) = log 2 = 0.6931, softplus(1) = 1.3133, softplus(-2) = 0.1269",
    )
    np.testing.assert_allclose(
        got[3:],
        [1000.0, 0.0],
        rtol=1e-6,
        atol=1e-12,
        err_msg="softplus(1000) = 1000 and softplus(-1000) = 0 (to double precision)",
    )


@pytest.mark.points(2)
def test_noisy_logits(ex):
    got = _np(ex.noisy_logits(X, W_GATE, W_NOISE, NOISE))
    assert got.shape == (1, 3), f"H must be [T, E] = (1, 3); got {got.shape}"
    np.testing.assert_allclose(
        got,
        [[1.0, 2 * np.log(2.0), 0.5]],
        rtol=1e-5,
        err_msg="H = x W_g + noise * softplus(x W_noise) = [1, 0 + 2 * log 2, 0.5]",
    )
    rng = np.random.default_rng(7)
    x, wg, wn, eps = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    expected = x @ wg + eps * np.log1p(np.exp(x @ wn))
    np.testing.assert_allclose(
        _np(ex.noisy_logits(x, wg, wn, eps)),
        expected,
        rtol=1e-5,
        atol=1e-7,
        err_msg="H differs from x W_g + noise * softplus(x W_noise) on random inputs",
    )


@pytest.mark.points(2)
def test_keep_top_k(ex):
    with np.errstate(all="ignore"):
        got = _np(ex.keep_top_k(np.array([[1.0, 1.386, 0.5], [2.0, 2.0, 2.0]]), 2))
    assert got.shape == (2, 3), f"KeepTopK keeps the shape [T, E]; got {got.shape}"
    np.testing.assert_allclose(
        got[0],
        [1.0, 1.386, -np.inf],
        rtol=1e-6,
        err_msg="KeepTopK([1, 1.386, 0.5], 2) = [1, 1.386, -inf]: kept values are unchanged",
    )
    np.testing.assert_allclose(
        got[1],
        [2.0, 2.0, -np.inf],
        rtol=1e-6,
        err_msg="with ties exactly k entries are kept, lower index first: [2, 2, -inf]",
    )


@pytest.mark.points(2)
def test_noise_can_change_the_choice(ex):
    gates, indices = _gating(ex, X, W_GATE, W_NOISE, 2, NOISE)
    np.testing.assert_array_equal(indices, [[1, 0]], err_msg="H = [1, 1.386, 0.5]: the top 2 are experts 1 then 0")
    np.testing.assert_allclose(
        gates,
        [[0.40460968, 0.59539032, 0.0]],
        rtol=1e-5,
        atol=1e-8,
        err_msg="G = softmax(KeepTopK(H, 2)) = softmax([1, 1.386, -inf]) = [0.4046, 0.5954, 0]",
    )
    clean_gates, clean_indices = _gating(ex, X, W_GATE, W_NOISE, 1, np.zeros((1, 3)))
    np.testing.assert_array_equal(clean_indices, [[0]], err_msg="without noise, top-1 of [1, 0, 0.5] is expert 0")
    np.testing.assert_allclose(clean_gates, [[1.0, 0.0, 0.0]], atol=1e-7)


@pytest.mark.points(2)
@_SETTINGS
@given(
    num_tokens=st.integers(1, 5),
    d=st.integers(1, 4),
    num_experts=st.integers(1, 6),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
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
    np.testing.assert_allclose(
        gates,
        ref_gates,
        rtol=1e-4,
        atol=1e-6,
        err_msg="with zero noise the gates are softmax over the top-k clean logits",
    )
    np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-6, err_msg="each row of gates sums to 1")


@pytest.mark.points(1)
def test_softplus_keeps_tiny_values(ex):
    """log(1 + exp(-40)) rounds 1 + 4.2e-18 to 1 and returns 0: the 'loses everything' of the docstring."""
    x = np.array([-40.0, -20.0, 800.0])
    with np.errstate(all="ignore"):
        got = _np(ex.softplus(x))
    assert np.all(np.isfinite(got)), f"softplus({x.tolist()}) must be finite; got {got.tolist()}"
    np.testing.assert_allclose(
        got,
        [np.log1p(np.exp(-40.0)), np.log1p(np.exp(-20.0)), 800.0],
        rtol=1e-5,
        atol=0,
        err_msg="softplus(-40) = 4.248e-18 and softplus(-20) = 2.061e-09: tiny but not 0 (compute log1p(exp(-|x|)); "
        "log(1 + exp(x)) rounds 1 + 4e-18 to 1 and returns 0); softplus(800) = 800",
    )


@pytest.mark.points(1)
def test_keep_top_k_returns_a_new_array(ex):
    h = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, -1.0, 0.0, 5.0]])
    before = h.copy()
    with np.errstate(all="ignore"):
        got = _np(ex.keep_top_k(h, 1))
    np.testing.assert_array_equal(h, before, err_msg="keep_top_k wrote -inf into the caller's h: fill a NEW array")
    np.testing.assert_array_equal(
        got,
        [[-np.inf, 3.0, -np.inf, -np.inf], [-np.inf, -np.inf, -np.inf, 5.0]],
        err_msg="k=1 keeps only each row's largest entry (of the tied 3s, expert 1's)",
    )
    np.testing.assert_array_equal(_np(ex.keep_top_k(h, 4)), before, err_msg="k = E keeps every entry unchanged")


@pytest.mark.points(1)
def test_gating_ties_go_to_the_lower_index(ex):
    x, w_gate, w_noise = np.array([[1.0]]), np.array([[1.0, 2.0, 1.0, 1.0]]), np.zeros((1, 4))
    gates, indices = _gating(ex, x, w_gate, w_noise, 2, np.zeros((1, 4)))
    np.testing.assert_array_equal(
        indices, [[1, 0]], err_msg="H = [1, 2, 1, 1], k=2: expert 1, then expert 0 (of the tied 1s, the lower index)"
    )
    top = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(
        gates,
        [[top[0], top[1], 0.0, 0.0]],
        rtol=1e-5,
        atol=1e-8,
        err_msg="the tied expert kept is expert 0: gates = softmax([1, 2]) on experts 0 and 1",
    )
    _, indices3 = _gating(ex, x, w_gate, w_noise, 3, np.zeros((1, 4)))
    np.testing.assert_array_equal(indices3, [[1, 0, 2]], err_msg="k=3: experts 1, 0, 2 (ties: lower index first)")


@pytest.mark.points(2)
def test_gating_with_a_learned_noise_scale_for_every_k(ex):
    from moe_tf.routing import top_k_gates

    for seed in range(3):
        rng = np.random.default_rng(seed)
        num_tokens, d, num_experts = 6, 3, 5
        x = rng.normal(size=(num_tokens, d))
        w_gate, w_noise = rng.normal(size=(d, num_experts)), rng.normal(size=(d, num_experts))
        noise = rng.normal(size=(num_tokens, num_experts))
        h = x @ w_gate + noise * np.log1p(np.exp(x @ w_noise))
        for k in range(1, num_experts + 1):
            gates, indices = _gating(ex, x, w_gate, w_noise, k, noise)
            ref_gates, ref_indices = (np.asarray(t) for t in top_k_gates(h.astype("float32"), k))
            np.testing.assert_array_equal(
                indices,
                ref_indices,
                err_msg=f"k={k}: the experts are the top k of H = x W_g + noise * softplus(x W_noise), best first",
            )
            np.testing.assert_allclose(
                gates,
                ref_gates,
                rtol=1e-4,
                atol=1e-6,
                err_msg=f"k={k}: G = softmax(KeepTopK(H, k)): zero outside the top k, each row sums to 1",
            )
