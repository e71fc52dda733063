"""Tests for moe_tf.losses: CV^2, importance, load, Switch balance and router z-loss."""

import math

import numpy as np
import pytest
import tensorflow as tf
from _helpers import np_softmax
from hypothesis import given
from hypothesis import strategies as st

from moe_tf.losses import cv_squared, importance_loss, load_loss, router_z_loss, switch_balance_loss

# --------------------------------------------------------------------------- numpy references


def np_logsumexp(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1)
    return m + np.log(np.exp(x - m[:, None]).sum(-1))


def np_cv_squared(x):
    x = np.asarray(x, np.float64)
    if x.size <= 1 or x.mean() == 0:
        return 0.0
    return x.var() / x.mean() ** 2


def np_top_k_indices(x, k):
    return np.argsort(-np.asarray(x, np.float64), axis=-1, kind="stable")[:, :k]


def np_one_hot_choices(indices, num_experts):
    """[T, k] -> [T, k, E] one-hot."""
    return np.eye(num_experts, dtype=np.float32)[indices]


def np_switch_balance(probs, expert_mask):
    probs = np.asarray(probs, np.float64)
    chosen = np.asarray(expert_mask, np.float64)
    if chosen.ndim == 3:
        chosen = chosen.sum(1)
    counts = chosen.sum(0)
    f = counts / counts.sum()
    p = probs.mean(0)
    return probs.shape[-1] * float((f * p).sum())


_phi = np.vectorize(lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0))))


def np_load_loss(clean, noisy, stddev, k):
    """Shazeer et al. 2017 smooth load, computed from the definition (no top-(k+1) trick)."""
    clean, noisy, stddev = (np.asarray(a, np.float64) for a in (clean, noisy, stddev))
    num_tokens, num_experts = clean.shape
    prob = np.zeros_like(clean)
    for t in range(num_tokens):
        for i in range(num_experts):
            others = np.delete(noisy[t], i)
            kth_excluding = np.sort(others)[::-1][k - 1]
            prob[t, i] = _phi((clean[t, i] - kth_excluding) / stddev[t, i])
    return np_cv_squared(prob.sum(0))


@st.composite
def token_expert_case(draw, max_tokens=8, max_experts=6):
    """(rng seed, T, E, k) with 1 <= k <= E."""
    num_tokens = draw(st.integers(1, max_tokens))
    num_experts = draw(st.integers(1, max_experts))
    k = draw(st.integers(1, num_experts))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed), num_tokens, num_experts, k


def distinct_logits(rng, num_tokens, num_experts, scale=2.0):
    """Logits whose entries are distinct within each row (gaps >= 0.5 * scale)."""
    base = np.stack([rng.permutation(num_experts) for _ in range(num_tokens)]).astype(np.float64)
    return ((base + rng.uniform(0.0, 0.5, base.shape)) * scale).astype(np.float32)


# --------------------------------------------------------------------------- cv_squared


@pytest.mark.parametrize("x", [[3.0, 3.0, 3.0], [0.25] * 8, [7.0, 7.0]])
def test_cv_squared_is_zero_for_equal_entries(x):
    assert float(cv_squared(np.array(x, np.float32))) == pytest.approx(0.0, abs=1e-12), "equal loads give CV^2 = 0"


def test_cv_squared_known_values():
    assert float(cv_squared([1.0, 0.0])) == pytest.approx(1.0, rel=1e-6), "var 0.25 / mean^2 0.25 = 1"
    assert float(cv_squared([4.0, 0.0, 0.0, 0.0])) == pytest.approx(3.0, rel=1e-6), "collapse over E gives E - 1"


@given(st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=2, max_size=16).filter(lambda v: sum(v) > 1e-2))
def test_cv_squared_matches_population_variance(values):
    x = np.array(values, np.float32)
    expected = np_cv_squared(x)
    got = float(cv_squared(x))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), f"expected var/mean^2 = {expected}, got {got}"


@pytest.mark.parametrize("x", [[5.0], [0.0], [0.0, 0.0, 0.0, 0.0]])
def test_cv_squared_degenerate_inputs_are_zero(x):
    got = float(cv_squared(np.array(x, np.float32)))
    assert math.isfinite(got) and got == 0.0, f"single entry / no tokens should give exactly 0, got {got}"


# --------------------------------------------------------------------------- switch balance loss


@pytest.mark.parametrize("num_experts, tokens_per_expert", [(1, 3), (2, 1), (4, 3), (8, 2)])
def test_switch_balance_loss_is_one_under_uniform_routing(num_experts, tokens_per_expert):
    num_tokens = num_experts * tokens_per_expert
    probs = np.full((num_tokens, num_experts), 1.0 / num_experts, np.float32)
    mask_te = np.eye(num_experts, dtype=np.float32)[np.arange(num_tokens) % num_experts]
    got = float(switch_balance_loss(probs, mask_te))
    assert got == pytest.approx(1.0, abs=1e-6), f"uniform routing ([T, E] mask) should give exactly 1.0, got {got}"
    for k in range(1, num_experts + 1):
        choices = (np.arange(num_tokens)[:, None] + np.arange(k)[None, :]) % num_experts  # [T, k], distinct
        got = float(switch_balance_loss(probs, np_one_hot_choices(choices, num_experts)))
        assert got == pytest.approx(1.0, abs=1e-6), f"uniform routing ([T, {k}, E] mask) should give 1.0, got {got}"


@pytest.mark.parametrize("num_experts", [2, 4, 8])
def test_switch_balance_loss_collapse(num_experts):
    num_tokens = 16
    logits = np.zeros((num_tokens, num_experts), np.float32)
    logits[:, 0] = 40.0  # p_0 ~ 1 - (E - 1) * 4e-18
    probs = np_softmax(logits).astype(np.float32)
    all_to_zero = np.zeros((num_tokens, num_experts), np.float32)
    all_to_zero[:, 0] = 1.0
    got = float(switch_balance_loss(probs, all_to_zero))
    assert got == pytest.approx(num_experts, rel=1e-5), f"full collapse should give ~E={num_experts}, got {got}"

    # Partial collapse: half the tokens pile onto expert 0, the rest spread evenly.
    half = np.zeros((num_tokens, num_experts), np.float32)
    half[: num_tokens // 2, 0] = 1.0
    half[num_tokens // 2 :, :] = np.eye(num_experts, dtype=np.float32)[np.arange(num_tokens // 2) % num_experts]
    mixed_probs = np.where(half > 0, 0.9, 0.1 / (num_experts - 1)).astype(np.float32)
    got = float(switch_balance_loss(mixed_probs, half))
    assert 1.0 < got < num_experts, f"partial collapse should give a value in (1, E), got {got}"


@given(token_expert_case(), st.booleans())
def test_switch_balance_loss_matches_numpy(case, three_d):
    rng, num_tokens, num_experts, k = case
    logits = distinct_logits(rng, num_tokens, num_experts)
    probs = np_softmax(logits + rng.normal(size=logits.shape)).astype(np.float32)
    choices = np_one_hot_choices(np_top_k_indices(logits, k), num_experts)  # [T, k, E]
    expert_mask = choices if three_d else choices.sum(1)
    expected = np_switch_balance(probs, expert_mask)
    got = float(switch_balance_loss(probs, expert_mask))
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"expected E * sum(f * P) = {expected}, got {got}"


def test_switch_balance_loss_gradient_flows_through_router_probs():
    rng = np.random.default_rng(0)
    num_tokens, num_experts = 12, 4
    probs = tf.Variable(np_softmax(rng.normal(size=(num_tokens, num_experts))).astype(np.float32))
    indices = rng.integers(0, num_experts, size=num_tokens)
    expert_mask = np.eye(num_experts, dtype=np.float32)[indices]
    with tf.GradientTape() as tape:
        loss = switch_balance_loss(probs, expert_mask)
    grad = tape.gradient(loss, probs)
    assert grad is not None, "the balance loss must be differentiable in the router probabilities"
    grad = grad.numpy()
    f = expert_mask.sum(0) / num_tokens
    expected = np.broadcast_to(num_experts * f / num_tokens, grad.shape)  # d/dp[t, i] of E * sum_i f_i * mean_t p
    np.testing.assert_allclose(grad, expected, rtol=1e-5, err_msg="gradient should be E * f_i / T")
    assert np.abs(grad).sum() > 0, "gradient w.r.t. router probs must be nonzero"


# --------------------------------------------------------------------------- router z-loss


@given(token_expert_case())
def test_router_z_loss_matches_numpy(case):
    rng, num_tokens, num_experts, _ = case
    logits = (rng.normal(size=(num_tokens, num_experts)) * 5).astype(np.float32)
    expected = float(np.mean(np_logsumexp(logits) ** 2))
    got = float(router_z_loss(logits))
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"expected mean(logsumexp^2) = {expected}, got {got}"


@pytest.mark.parametrize("num_experts", [1, 4, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_router_z_loss_no_overflow_for_large_logits(num_experts, dtype):
    logits = np.full((3, num_experts), 1e4, dtype)
    expected = (1e4 + math.log(num_experts)) ** 2
    got = float(router_z_loss(logits))
    assert math.isfinite(got), f"z-loss of 1e4 logits must not overflow, got {got}"
    assert got == pytest.approx(expected, rel=1e-5), f"expected (1e4 + log E)^2 = {expected}, got {got}"
    mixed = np.array([[1e4] + [-1e4] * (num_experts - 1)], dtype)
    got = float(router_z_loss(mixed))
    assert got == pytest.approx(1e8, rel=1e-5), f"one dominant 1e4 logit should give ~1e8, got {got}"


def test_router_z_loss_all_padding_is_zero():
    logits = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32) * 10
    got = float(router_z_loss(logits, mask=np.zeros(5, np.float32)))
    assert math.isfinite(got) and got == 0.0, f"all-padding batch should give 0, got {got}"


# --------------------------------------------------------------------------- importance and load losses


@given(token_expert_case())
def test_importance_loss_matches_cv_of_summed_gates(case):
    rng, num_tokens, num_experts, k = case
    logits = distinct_logits(rng, num_tokens, num_experts)
    gates = np_softmax(logits)
    keep = np.zeros_like(gates, bool)
    np.put_along_axis(keep, np_top_k_indices(logits, k), True, -1)
    gates = np.where(keep, gates, 0.0).astype(np.float32)
    expected = np_cv_squared(gates.sum(0))
    got = float(importance_loss(gates))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), f"expected CV^2(sum_t gates) = {expected}, got {got}"


@given(token_expert_case())
def test_load_loss_without_noise_is_cv_of_hard_counts(case):
    rng, num_tokens, num_experts, k = case
    clean = distinct_logits(rng, num_tokens, num_experts)
    noisy = distinct_logits(rng, num_tokens, num_experts)
    counts = np_one_hot_choices(np_top_k_indices(noisy, k), num_experts).sum((0, 1))
    expected = np_cv_squared(counts)
    got = float(load_loss(clean, noisy, None, k))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), f"expected CV^2(top-k counts) = {expected}, got {got}"


@given(token_expert_case())
def test_load_loss_with_noise_matches_shazeer_reference(case):
    rng, num_tokens, num_experts, k = case
    clean = (rng.normal(size=(num_tokens, num_experts)) * 2).astype(np.float32)
    stddev = rng.uniform(0.3, 2.0, size=clean.shape).astype(np.float32)
    noisy = (clean + stddev * rng.normal(size=clean.shape)).astype(np.float32)
    expected = 0.0 if k >= num_experts else np_load_loss(clean, noisy, stddev, k)
    got = float(load_loss(clean, noisy, stddev, k))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), f"expected CV^2(sum_x P(x, i)) = {expected}, got {got}"


def test_load_loss_gradients_are_finite_and_nonzero():
    rng = np.random.default_rng(3)
    num_tokens, num_experts, k = 10, 5, 2
    clean = tf.Variable((rng.normal(size=(num_tokens, num_experts)) * 2).astype(np.float32))
    stddev = tf.Variable(rng.uniform(0.5, 1.5, size=(num_tokens, num_experts)).astype(np.float32))
    noise = rng.normal(size=(num_tokens, num_experts)).astype(np.float32)
    with tf.GradientTape() as tape:
        noisy = tf.stop_gradient(clean + stddev * noise)
        loss = load_loss(clean, noisy, stddev, k)
    grad_clean, grad_std = tape.gradient(loss, [clean, stddev])
    for name, grad in (("clean logits", grad_clean), ("noise stddev", grad_std)):
        assert grad is not None, f"load loss must be differentiable w.r.t. {name}"
        assert np.all(np.isfinite(grad.numpy())), f"gradient w.r.t. {name} must be finite"
        assert np.abs(grad.numpy()).sum() > 0, f"gradient w.r.t. {name} must be nonzero"


@pytest.mark.parametrize("noise", [False, True])
def test_load_loss_is_zero_when_k_equals_num_experts(noise):
    rng = np.random.default_rng(0)
    clean = (rng.normal(size=(6, 3)) * 4).astype(np.float32)
    stddev = np.ones_like(clean) if noise else None
    got = float(load_loss(clean, clean + 1.0, stddev, k=3))
    assert got == 0.0, f"k == E means every expert is always chosen: expected 0, got {got}"


# --------------------------------------------------------------------------- padding masks


def _loss_inputs(name, rng, num_tokens, num_experts, k):
    """Valid inputs for one loss, as a tuple of per-token arrays, plus the extra args."""
    logits = distinct_logits(rng, num_tokens, num_experts)
    if name == "importance":
        return (np_softmax(logits).astype(np.float32),), {}
    if name == "load_hard":
        return (logits, distinct_logits(rng, num_tokens, num_experts)), {"noise_stddev": None, "k": k}
    if name == "load_noisy":
        stddev = rng.uniform(0.3, 2.0, logits.shape).astype(np.float32)
        return (logits, (logits + stddev * rng.normal(size=logits.shape)).astype(np.float32), stddev), {"k": k}
    if name == "switch_2d":
        choices = np_one_hot_choices(np_top_k_indices(logits, k), num_experts).sum(1)
        return (np_softmax(logits).astype(np.float32), choices), {}
    if name == "switch_3d":
        choices = np_one_hot_choices(np_top_k_indices(logits, k), num_experts)
        return (np_softmax(logits).astype(np.float32), choices), {}
    if name == "z":
        return (logits,), {}
    raise AssertionError(name)


def _call_loss(name, arrays, extra, mask=None):
    if name == "importance":
        return float(importance_loss(*arrays, mask=mask))
    if name == "load_hard":
        return float(load_loss(arrays[0], arrays[1], extra["noise_stddev"], extra["k"], mask=mask))
    if name == "load_noisy":
        return float(load_loss(*arrays, extra["k"], mask=mask))
    if name in ("switch_2d", "switch_3d"):
        return float(switch_balance_loss(*arrays, mask=mask))
    if name == "z":
        return float(router_z_loss(*arrays, mask=mask))
    raise AssertionError(name)


LOSS_NAMES = ["importance", "load_hard", "load_noisy", "switch_2d", "switch_3d", "z"]


@pytest.mark.parametrize("name", LOSS_NAMES)
@given(case=token_expert_case(), pattern=st.lists(st.booleans(), min_size=16, max_size=16))
def test_padding_rows_do_not_change_the_loss(name, case, pattern):
    rng, num_tokens, num_experts, k = case
    mask = np.array(pattern[:num_tokens], np.float32)
    if mask.sum() == 0:
        mask[rng.integers(num_tokens)] = 1.0
    real = mask > 0
    arrays, extra = _loss_inputs(name, rng, num_tokens, num_experts, k)
    expected = _call_loss(name, tuple(a[real] for a in arrays), extra)
    garbage = []
    for position, a in enumerate(arrays):
        a = a.copy()
        noise = rng.uniform(-50.0, 50.0, a.shape).astype(a.dtype)
        if name == "load_noisy" and position == 2:
            noise = np.abs(noise) + 0.1  # a noise scale stays positive
        a[~real] = noise[~real]
        garbage.append(a)
    got = _call_loss(name, tuple(garbage), extra, mask=mask)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), (
        f"{name}: padding rows must not change the loss: expected {expected} (rows removed), got {got}"
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_padding_gives_zero(name):
    rng = np.random.default_rng(7)
    arrays, extra = _loss_inputs(name, rng, 5, 4, 2)
    got = _call_loss(name, arrays, extra, mask=np.zeros(5, np.float32))
    assert math.isfinite(got) and got == 0.0, f"{name}: all-padding batch should give a finite 0, got {got}"


@pytest.mark.parametrize(
    "name",
    [
        "importance",
        "load_hard",
        "load_noisy",
        "switch_2d",
        "z",
    ],
)
def test_padding_rows_with_huge_finite_values_do_not_leak(name):
    rng = np.random.default_rng(11)
    mask = np.array([1, 0, 1, 0, 1], np.float32)
    arrays, extra = _loss_inputs(name, rng, 5, 4, 2)
    expected = _call_loss(name, tuple(a[mask > 0] for a in arrays), extra)
    garbage = []
    for position, a in enumerate(arrays):
        a = a.copy()
        a[mask == 0] = 1e20 if not (name == "load_noisy" and position == 2) else 1.0
        garbage.append(a)
    got = _call_loss(name, tuple(garbage), extra, mask=mask)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), (
        f"{name}: huge padding values must not leak into the loss: expected {expected}, got {got}"
    )
