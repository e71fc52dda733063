"""Tests for moe_tf.dispatch: one-hot dispatch/combine tensors, einsum and gather dispatch."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from moe_tf.dispatch import (
    DISPATCHERS,
    dispatch_and_combine_tensors,
    dropless_dispatch,
    einsum_dispatch,
    gather_dispatch,
)
from moe_tf.layers import Experts
from moe_tf.plan import SlotPlan
from moe_tf.routing import capacity_positions, top_k_gates

IMPLEMENTATIONS = [einsum_dispatch, gather_dispatch]


# --------------------------------------------------------------------------- helpers


def route(logits, k, capacity, token_mask=None, mask_weights=True):
    """Runs the library's routing: returns indices, positions, weights, keep as numpy arrays."""
    num_experts = logits.shape[-1]
    gates, indices = top_k_gates(logits, k)
    positions, keep = capacity_positions(indices, num_experts, capacity, token_mask)
    weights = np.take_along_axis(np.asarray(gates), np.asarray(indices), axis=-1)
    if mask_weights:
        weights = weights * np.asarray(keep)
    return np.asarray(indices), np.asarray(positions), weights.astype(np.float32), np.asarray(keep)


def run_dispatch(dispatch_fn, tokens, indices, positions, weights, keep, experts, num_experts, capacity):
    """`dispatch_fn` on the `SlotPlan` of these routing arrays (dispatches read neither probs nor logits)."""
    zeros = tf.zeros((tf.shape(indices)[0], num_experts))  # [T, E]: gives the plan its E
    plan = SlotPlan(
        indices=indices, gates=weights, keep=keep, positions=positions, capacity=capacity, probs=zeros, logits=zeros
    )
    return dispatch_fn(tokens, plan, experts)


class AffineExperts:
    """Deterministic stand-in for `Experts`: expert e maps x to tanh(x @ W[e]) + b[e]."""

    def __init__(self, num_experts, dim, out_dim, seed=0, bias_scale=1.0):
        rng = np.random.default_rng(seed)
        self.kernel = tf.constant(rng.normal(size=(num_experts, dim, out_dim)).astype(np.float32))
        self.bias = tf.constant((rng.normal(size=(num_experts, 1, out_dim)) * bias_scale).astype(np.float32))

    def __call__(self, x):
        return tf.tanh(tf.einsum("ecd,edo->eco", x, self.kernel)) + self.bias


@st.composite
def routing_case(draw, max_tokens=8, max_experts=5, max_k=3):
    num_tokens = draw(st.integers(1, max_tokens))
    num_experts = draw(st.integers(1, max_experts))
    k = draw(st.integers(1, min(num_experts, max_k)))
    capacity = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(num_tokens, num_experts)) * 3).astype(np.float32)
    # Skew towards expert 0 now and then so that capacity drops happen.
    if draw(st.booleans()):
        logits[:, 0] += 5.0
    mask = np.array(draw(st.lists(st.booleans(), min_size=num_tokens, max_size=num_tokens)), np.float32)
    if draw(st.booleans()):
        mask[:] = 1.0
    return rng, logits, k, capacity, mask


def reference_dispatch(indices, positions, weights, keep, num_experts, capacity):
    num_tokens, k = indices.shape
    dispatch = np.zeros((num_tokens, num_experts, capacity), np.float32)
    combine = np.zeros_like(dispatch)
    for t in range(num_tokens):
        for j in range(k):
            if keep[t, j]:
                dispatch[t, indices[t, j], positions[t, j]] = 1.0
                combine[t, indices[t, j], positions[t, j]] = weights[t, j]
    return dispatch, combine


# --------------------------------------------------------------------------- dispatch / combine tensors


@given(routing_case(), st.booleans())
def test_dispatch_and_combine_tensors(case, mask_weights):
    _, logits, k, capacity, mask = case
    num_tokens, num_experts = logits.shape
    indices, positions, weights, keep = route(logits, k, capacity, mask, mask_weights=mask_weights)
    dispatch, combine = dispatch_and_combine_tensors(indices, positions, weights, keep, num_experts, capacity)
    dispatch, combine = np.asarray(dispatch), np.asarray(combine)

    shape = (num_tokens, num_experts, capacity)
    assert dispatch.shape == shape and combine.shape == shape, f"both tensors should be [T, E, C]={shape}"
    assert set(np.unique(dispatch)) <= {0.0, 1.0}, "dispatch must be binary (never a gate value)"
    assert dispatch.sum(0).max(initial=0) <= 1, "each slot (e, c) holds at most one token"
    per_token = dispatch.sum((1, 2))
    assert np.all(per_token <= k), "a token appears at most k times"
    np.testing.assert_array_equal(per_token, keep.sum(1), err_msg="a token appears once per kept assignment")
    for t in range(num_tokens):
        for j in range(k):
            e = indices[t, j]
            if keep[t, j]:
                assert dispatch[t, e, positions[t, j]] == 1.0, f"kept assignment ({t}, {j}) missing from dispatch"
            else:
                assert not dispatch[t, e].any() and not combine[t, e].any(), (
                    f"dropped assignment (token {t} -> expert {e}) must appear nowhere"
                )
    expected_combine = np.zeros_like(combine)
    for t in range(num_tokens):
        for j in range(k):
            expected_combine[t, indices[t, j]] = dispatch[t, indices[t, j]] * weights[t, j]
    np.testing.assert_allclose(combine, expected_combine, rtol=1e-6, err_msg="combine == dispatch * gate weight")
    ref_dispatch, ref_combine = reference_dispatch(indices, positions, weights, keep, num_experts, capacity)
    np.testing.assert_array_equal(dispatch, ref_dispatch)
    np.testing.assert_allclose(combine, ref_combine, rtol=1e-6)


def test_dispatch_tensors_hand_example():
    # 3 tokens, E=2, k=1, C=1: tokens 0 and 2 ask expert 0, token 2 is dropped.
    indices = np.array([[0], [1], [0]], np.int32)
    positions = np.array([[0], [0], [1]], np.int32)
    keep = np.array([[1.0], [1.0], [0.0]], np.float32)
    weights = np.array([[0.7], [0.4], [0.0]], np.float32)
    dispatch, combine = dispatch_and_combine_tensors(indices, positions, weights, keep, 2, 1)
    np.testing.assert_array_equal(np.asarray(dispatch)[:, :, 0], [[1, 0], [0, 1], [0, 0]])
    np.testing.assert_allclose(np.asarray(combine)[:, :, 0], [[0.7, 0], [0, 0.4], [0, 0]])


# --------------------------------------------------------------------------- einsum vs gather


@given(routing_case())
def test_einsum_and_gather_dispatch_agree(case):
    rng, logits, k, capacity, mask = case
    num_tokens, num_experts = logits.shape
    dim, out_dim = 3, 2
    tokens = tf.constant(rng.normal(size=(num_tokens, dim)).astype(np.float32))
    experts = AffineExperts(num_experts, dim, out_dim, seed=int(rng.integers(1000)))
    indices, positions, weights, keep = route(logits, k, capacity, mask)
    args = (tokens, indices, positions, weights, keep, experts, num_experts, capacity)
    out_einsum = np.asarray(run_dispatch(einsum_dispatch, *args))
    out_gather = np.asarray(run_dispatch(gather_dispatch, *args))
    assert out_einsum.shape == out_gather.shape == (num_tokens, out_dim), "outputs should be [T, d_out]"
    np.testing.assert_allclose(out_einsum, out_gather, atol=1e-5, err_msg="einsum and gather dispatch must agree")

    # Both equal a direct per-assignment reference.
    x = tokens.numpy()
    slots = np.zeros((num_experts, capacity, dim), np.float32)
    for t in range(num_tokens):
        for j in range(k):
            if keep[t, j]:
                slots[indices[t, j], positions[t, j]] = x[t]
    y = experts(tf.constant(slots)).numpy()
    expected = np.zeros((num_tokens, out_dim), np.float32)
    for t in range(num_tokens):
        for j in range(k):
            if keep[t, j]:
                expected[t] += weights[t, j] * y[indices[t, j], positions[t, j]]
    np.testing.assert_allclose(out_gather, expected, atol=1e-5, err_msg="gather dispatch vs per-slot reference")


def _outputs_and_grads(
    dispatch_fn, tokens, weights, indices, positions, keep, experts, num_experts, capacity, cotangent
):
    """Output and the gradients of `sum(out * cotangent)` w.r.t. tokens, weights and the experts' kernel."""
    with tf.GradientTape() as tape:
        tape.watch([tokens, weights, experts.kernel])
        out = run_dispatch(dispatch_fn, tokens, indices, positions, weights, keep, experts, num_experts, capacity)
        loss = tf.reduce_sum(out * cotangent)
    grads = tape.gradient(loss, [tokens, weights, experts.kernel])
    return [out] + [tf.convert_to_tensor(g) for g in grads]


@given(routing_case(max_tokens=10), st.booleans())
def test_gather_dispatch_gradients_equal_the_einsum_dispatch(case, jit):
    """The gather dispatch's hand-written gradients (gathers through the inverse slot map) are the true ones.

    The einsum dispatch's gradients come from TensorFlow's own rules for
    einsum; the gather dispatch replaces the scatter-add gradient of its
    gathers by gathers, so every gradient is compared: tokens (each token sums
    its k slots), gate weights and the experts' kernel (each slot receives its
    one assignment), with drops and padding tokens.
    """
    rng, logits, k, capacity, mask = case
    num_tokens, num_experts = logits.shape
    dim, out_dim = 3, 2
    experts = AffineExperts(num_experts, dim, out_dim, seed=int(rng.integers(1000)))
    indices, positions, weights, keep = route(logits, k, capacity, mask)
    tokens = tf.constant(rng.normal(size=(num_tokens, dim)).astype(np.float32))
    cotangent = tf.constant(rng.normal(size=(num_tokens, out_dim)).astype(np.float32))
    args = (tokens, tf.constant(weights), indices, positions, keep, experts, num_experts, capacity, cotangent)
    run = tf.function(_outputs_and_grads, jit_compile=True) if jit else _outputs_and_grads
    want = _outputs_and_grads(einsum_dispatch, *args)
    got = run(gather_dispatch, *args)
    for name, a, b in zip(("output", "d tokens", "d weights", "d expert kernel"), want, got):
        np.testing.assert_allclose(
            np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5, err_msg=f"{name}: gather != einsum"
        )
    dropped = np.asarray(keep).sum(-1) == 0  # tokens with no slot at all
    assert np.all(np.asarray(got[1])[dropped] == 0.0), "a fully dropped token gets exactly zero gradient"


@pytest.mark.parametrize("num_tokens, num_experts, k, capacity", [(6, 4, 2, 2), (9, 3, 1, 2), (5, 2, 2, 5)])
def test_dispatchers_agree_with_real_experts_layer(num_tokens, num_experts, k, capacity):
    rng = np.random.default_rng(num_tokens)
    dim = 4
    experts = Experts(num_experts, units=8, bias_initializer="random_normal")
    experts.build((num_experts, None, dim))
    tokens = tf.constant(rng.normal(size=(num_tokens, dim)).astype(np.float32))
    logits = (rng.normal(size=(num_tokens, num_experts)) * 3).astype(np.float32)
    logits[:, 0] += 4.0  # force some drops
    indices, positions, weights, keep = route(logits, k, capacity)
    args = (tokens, indices, positions, weights, keep, experts, num_experts, capacity)
    out_einsum = np.asarray(run_dispatch(einsum_dispatch, *args))
    out_gather = np.asarray(run_dispatch(gather_dispatch, *args))
    assert out_einsum.shape == (num_tokens, dim)
    np.testing.assert_allclose(out_einsum, out_gather, atol=1e-5, err_msg="einsum and gather dispatch must agree")
    assert np.abs(out_gather).sum() > 0, "kept tokens should produce nonzero outputs"
    assert DISPATCHERS == {"einsum": einsum_dispatch, "gather": gather_dispatch, "dropless": dropless_dispatch}


# --------------------------------------------------------------------------- dropped assignments


def _fully_dropped_case():
    """3 tokens, E=2, k=2, C=1: token 2's first and second choices are both dropped.

    First choices: t0 -> e0 slot 0, t1 -> e1 slot 0, t2 -> e0 slot 1 (dropped).
    Second choices: t0 -> e1 slot 1, t1 -> e0 slot 2, t2 -> e1 slot 2 (all dropped).
    """
    logits = np.array([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0]], np.float32)
    indices, positions, _, keep = route(logits, 2, 1)
    np.testing.assert_array_equal(keep, [[1, 0], [1, 0], [0, 0]], err_msg="precondition of the hand-made case")
    gates, _ = top_k_gates(logits, 2)
    raw_weights = np.take_along_axis(np.asarray(gates), indices, -1).astype(np.float32)  # NOT zeroed where dropped
    return indices, positions, raw_weights, keep


@pytest.mark.parametrize("dispatch_fn", IMPLEMENTATIONS, ids=["einsum", "gather"])
@pytest.mark.parametrize("bias", [0.0, 1000.0])
def test_fully_dropped_token_outputs_exact_zero(dispatch_fn, bias):
    indices, positions, weights, keep = _fully_dropped_case()
    tokens = tf.constant([[1.0, -2.0], [0.5, 3.0], [4.0, 5.0]])
    experts = AffineExperts(2, 2, 2, seed=1)
    experts.bias = tf.fill((2, 1, 2), bias)  # empty slots produce `bias`, not 0
    for w in (weights, weights * keep):
        out = np.asarray(run_dispatch(dispatch_fn, tokens, indices, positions, w, keep, experts, 2, 1))
        assert np.all(out[2] == 0.0), f"a fully dropped token must output exactly 0.0, got {out[2]}"
        assert np.all(out[:2] != 0.0), "kept tokens should have nonzero outputs"
        expected_kept = np.asarray(experts(tf.constant([[[1.0, -2.0]], [[0.5, 3.0]]])))[:, 0, :]
        np.testing.assert_allclose(out[0], w[0, 0] * expected_kept[0], rtol=1e-5)
        np.testing.assert_allclose(out[1], w[1, 0] * expected_kept[1], rtol=1e-5)


# --------------------------------------------------------------------------- XLA and gradients


@pytest.mark.parametrize("dispatch_fn", IMPLEMENTATIONS, ids=["einsum", "gather"])
def test_dispatch_under_xla_with_gradients(dispatch_fn):
    num_experts, capacity, dim = 2, 1, 3
    experts = AffineExperts(num_experts, dim, dim, seed=2, bias_scale=10.0)
    logits = tf.constant([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0], [0.0, 3.0]])
    cotangent = tf.constant(np.random.default_rng(0).normal(size=(4, dim)).astype(np.float32))

    @tf.function(jit_compile=True)
    def step(tokens):
        with tf.GradientTape() as tape:
            tape.watch(tokens)
            gates, indices = top_k_gates(logits, 2)
            positions, keep = capacity_positions(indices, num_experts, capacity)
            weights = tf.gather(gates, indices, batch_dims=1) * keep
            out = run_dispatch(dispatch_fn, tokens, indices, positions, weights, keep, experts, num_experts, capacity)
            loss = tf.reduce_sum(out * cotangent)
        grad = tape.gradient(loss, tokens)
        return out, keep, tf.convert_to_tensor(grad)  # gather's gradient may be IndexedSlices

    tokens = tf.constant(np.random.default_rng(1).normal(size=(4, dim)).astype(np.float32))
    out, keep, grad = (np.asarray(v) for v in step(tokens))
    # Tokens 0 and 1 get a slot; tokens 2 and 3 are fully dropped (each expert has 1 slot).
    np.testing.assert_array_equal(keep, [[1, 0], [1, 0], [0, 0], [0, 0]], err_msg="routing precondition")
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad)), "outputs and gradients must be finite under XLA"
    assert np.all(out[2:] == 0.0), "fully dropped tokens must output exactly 0 under XLA"
    assert np.all(grad[2:] == 0.0), "fully dropped tokens must get exactly zero gradient"
    assert np.all(np.abs(grad[:2]).sum(-1) > 0), "kept tokens must get a nonzero gradient"

    eager_out = run_dispatch(dispatch_fn, tokens, *route(logits.numpy(), 2, capacity), experts, num_experts, capacity)
    np.testing.assert_allclose(out, np.asarray(eager_out), atol=1e-5, err_msg="XLA and eager outputs must agree")
