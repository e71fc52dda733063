"""Tests of `SoftMoE` (Puigcerver et al. 2023): slots are softmax-weighted averages of all tokens."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import np_softmax, rand

from moe_tf import SoftMoE


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


def reference(layer, x):
    """NumPy Soft MoE on `[B, m, d]` (normalize=False)."""
    x = np.asarray(x, np.float64)
    E, p = layer.num_experts, layer.slots_per_expert
    ex = layer.experts
    out = []
    for group in x:
        logits = group @ layer.slot_embeddings.numpy()  # [m, S]
        dispatch, combine = np_softmax(logits, axis=0), np_softmax(logits, axis=1)
        slots = dispatch.T @ group  # [S, d]
        ys = []
        for j in range(E * p):
            e = j // p  # slot j belongs to expert j // p
            hidden = np.maximum(slots[j] @ ex.hidden_kernel.numpy()[e] + ex.hidden_bias.numpy()[e], 0)
            ys.append(hidden @ ex.output_kernel.numpy()[e] + ex.output_bias.numpy()[e])
        out.append(combine @ np.stack(ys))
    return np.stack(out)


def test_matches_numpy_reference():
    layer = SoftMoE(num_experts=3, expert_units=8, slots_per_expert=2)
    x = rand(2, 5, 4, seed=1)
    np.testing.assert_allclose(layer(x).numpy(), reference(layer, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer(x[0]).numpy(), reference(layer, x[:1])[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_dispatch_sums_over_tokens_combine_over_slots(normalize):
    layer = SoftMoE(num_experts=4, expert_units=8, slots_per_expert=3, normalize=normalize)
    x = rand(2, 7, 5, seed=2)
    layer(x)
    w = layer.weights_for(x)
    assert w["dispatch"].shape == (2, 7, 12) and w["combine"].shape == (2, 7, 12)
    np.testing.assert_allclose(w["dispatch"].numpy().sum(axis=1), 1.0, rtol=1e-5)  # each slot: weights over tokens
    np.testing.assert_allclose(w["combine"].numpy().sum(axis=2), 1.0, rtol=1e-5)  # each token: weights over slots
    assert (w["dispatch"].numpy() > 0).all(), "no token is dropped: every token feeds every slot"


def test_every_token_gets_a_gradient_and_no_token_is_dropped():
    layer = SoftMoE(num_experts=2, expert_units=8, slots_per_expert=1)
    x = tf.constant(rand(1, 9, 4, seed=3))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    assert (np.abs(grads[0].numpy()).sum(-1) > 0).all()
    assert all(np.abs(g.numpy()).max() > 0 for g in grads[1:])


def test_not_causal_a_later_token_changes_the_first_output():
    layer = SoftMoE(num_experts=2, expert_units=8)
    x = rand(1, 6, 4, seed=4)
    changed = x.copy()
    changed[0, -1] += 1.0
    assert np.abs(layer(changed).numpy()[0, 0] - layer(x).numpy()[0, 0]).max() > 1e-6


def test_mask_padding_has_no_effect_and_outputs_zero():
    layer = SoftMoE(num_experts=2, expert_units=8, slots_per_expert=2)
    x = rand(1, 6, 4, seed=5)
    mask = np.array([[1, 1, 1, 1, 0, 0]], bool)
    y = layer(x, mask=mask).numpy()
    np.testing.assert_array_equal(y[0, 4:], 0.0)
    np.testing.assert_allclose(y[0, :4], layer(x[:, :4]).numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.weights_for(x, mask=mask)["dispatch"].numpy()[0, 4:], 0.0, atol=1e-12)


def test_params_and_flops():
    layer = SoftMoE(num_experts=4, expert_units=8, slots_per_expert=2)
    layer.build((None, 16, 5))
    S = 8
    assert layer.count_params() == 5 * S + 4 * (5 * 8 + 8 + 8 * 5 + 5)
    assert layer.active_flops_per_token() == 2 * (S * (2 * 5 + 5) + S / 16 * (5 * 8 + 8 * 5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 0, "expert_units": 4}, "num_experts"),
        ({"num_experts": 2, "expert_units": 4, "slots_per_expert": 0}, "slots_per_expert"),
        ({"num_experts": 2, "expert_units": 4, "normalize": "yes"}, "normalize"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SoftMoE(**kwargs)


def test_bad_rank():
    with pytest.raises(ValueError, match=r"rank 2 \[batch, dim\] or 3 \[batch, seq, dim\].*\(rank 4\)"):
        SoftMoE(2, 4)(np.zeros((4,), "float32")[None, None, None])
