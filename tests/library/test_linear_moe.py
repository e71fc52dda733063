"""LinearExpertsMoE: the mixture of linear experts used on the IMDB bag of n-grams."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import np_softmax

from moe_tf.layers import LinearExpertsMoE


def _inputs(n=12, d=20, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype("float32")
    x[np.abs(x) < 0.7] = 0.0  # mostly zeros, like a bag of n-grams
    return x


def _parts(layer, x):
    """Router logits, expert outputs [T, E, units] computed by hand from the layer's weights."""
    w_router = np.asarray(layer.router.kernel)
    logits = x.astype(np.float64) @ w_router
    kernel = np.asarray(layer.kernel).reshape(x.shape[1], layer.num_experts, layer.output_units)
    experts = np.einsum("td,deo->teo", x, kernel) + np.asarray(layer.bias)
    return logits, experts


def test_dense_mixture_is_the_softmax_weighted_sum_of_linear_experts():
    x = _inputs()
    layer = LinearExpertsMoE(4, 3, k=None, seed=0)
    layer.build(x.shape)
    layer.bias.assign(np.random.default_rng(1).normal(size=(4, 3)))
    logits, experts = _parts(layer, x)
    expected = np.einsum("te,teo->to", np_softmax(logits), experts)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_keeps_only_the_k_best_experts(k):
    x = _inputs(seed=k)
    layer = LinearExpertsMoE(5, 2, k=k, seed=0)
    layer.build(x.shape)
    logits, experts = _parts(layer, x)
    probs = np_softmax(logits)
    top = np.argsort(-logits, axis=1)[:, :k]
    expected = np.zeros((len(x), 2))
    for t in range(len(x)):
        g = probs[t, top[t]]
        if k > 1:
            g = g / g.sum()  # renormalised over the kept experts (k = 1: the raw probability, Switch)
        expected[t] = (g[:, None] * experts[t, top[t]]).sum(0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-5)


def test_capacity_drops_assignments_to_exactly_zero():
    x = _inputs(n=16)
    layer = LinearExpertsMoE(4, 1, k=1, capacity_factor=0.5, seed=0)  # C = ceil(0.5 * 16 / 4) = 2
    layer.build(x.shape)
    logits, experts = _parts(layer, x)
    choice = logits.argmax(1)
    out = np.asarray(layer(x))[:, 0]
    probs = np_softmax(logits)
    for e in range(4):
        tokens = np.flatnonzero(choice == e)
        kept, dropped = tokens[:2], tokens[2:]  # first come, first served
        np.testing.assert_allclose(out[kept], probs[kept, e] * experts[kept, e, 0], rtol=1e-4, atol=1e-5)
        assert np.all(out[dropped] == 0.0)
    result = layer.routing_metrics.result()
    routed = np.bincount(choice, minlength=4)
    expected_dropped = np.maximum(routed - 2, 0).sum() / 16
    assert expected_dropped > 0  # the case really overflows
    name = layer.routing_metrics.name
    assert float(result[f"{name}_dropped"]) == pytest.approx(expected_dropped)


def test_sparse_and_dense_inputs_agree_and_train():
    x = _inputs(n=64, d=30)
    y = (x[:, :15].sum(1) > x[:, 15:].sum(1)).astype("int64")
    layer = LinearExpertsMoE(4, 2, k=2, seed=0, name="moe")
    layer.build(x.shape)
    np.testing.assert_allclose(np.asarray(layer(tf.sparse.from_dense(x))), np.asarray(layer(x)), rtol=1e-5, atol=1e-6)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((30,), sparse=True)
    model = keras.Model(inputs, LinearExpertsMoE(4, 2, k=2, seed=0, name="moe")(inputs))
    model.compile(
        keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    history = model.fit(tf.sparse.from_dense(x), y, epochs=15, batch_size=16, verbose=0)
    assert len(model.losses) == 1  # the Switch balance loss
    assert {"moe_max_load", "moe_dropped", "moe_entropy", "moe_balance_loss"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity_factor"):
        LinearExpertsMoE(3, 2, k=None, capacity_factor=1.0)
    with pytest.raises(ValueError, match="k"):
        LinearExpertsMoE(3, 2, k=4)
    with pytest.raises(ValueError, match="noise"):
        LinearExpertsMoE(3, 2, k=1, noise="jitter")
