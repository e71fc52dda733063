"""moe_tf.layers.Dropout: keras.layers.Dropout's behaviour, with a Philox mask that is fast under XLA."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import moe_tf.layers  # noqa: F401  (registers the layers for deserialisation; `import moe_tf` alone is lazy)
from moe_tf.layers import Dropout


def _ones(*shape):
    return np.ones(shape, "float32")


def test_inference_returns_the_inputs():
    x = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    np.testing.assert_array_equal(np.asarray(Dropout(0.5, seed=0)(x)), x)
    np.testing.assert_array_equal(np.asarray(Dropout(0.5, seed=0)(x, training=False)), x)


@pytest.mark.parametrize("jit", [False, True])
def test_training_drops_rate_and_rescales_survivors(jit):
    layer = Dropout(0.3, seed=1)
    y = tf.function(lambda x: layer(x, training=True), jit_compile=jit)(_ones(200, 500))
    y = np.asarray(y)
    assert np.all(np.isclose(y, 0.0) | np.isclose(y, 1 / 0.7))
    assert abs((y == 0).mean() - 0.3) < 0.01  # 100,000 Bernoulli draws: std 0.0015
    assert abs(y.mean() - 1.0) < 0.02  # the expectation is kept


def test_a_new_mask_every_call_and_the_seed_reproduces_them():
    a, b = Dropout(0.5, seed=7), Dropout(0.5, seed=7)
    x = _ones(64, 64)
    first, second = np.asarray(a(x, training=True)), np.asarray(a(x, training=True))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, np.asarray(b(x, training=True)))
    np.testing.assert_array_equal(second, np.asarray(b(x, training=True)))


def test_rate_zero_and_one():
    x = _ones(3, 4)
    np.testing.assert_array_equal(np.asarray(Dropout(0.0)(x, training=True)), x)
    np.testing.assert_array_equal(np.asarray(Dropout(1.0)(x, training=True)), np.zeros_like(x))


def test_noise_shape_broadcasts_the_mask():
    y = np.asarray(Dropout(0.5, noise_shape=(None, 1, 6), seed=2)(_ones(4, 5, 6), training=True))
    assert np.all(y == y[:, :1, :])  # the same mask for every step of a sequence
    assert 0 < (y == 0).mean() < 1


def test_bad_rate_is_a_value_error():
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.5)


def test_gradients_flow_through_kept_units_only():
    layer, x = Dropout(0.5, seed=3), tf.constant(_ones(10, 10))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(y)
    grad = np.asarray(tape.gradient(total, x))
    np.testing.assert_allclose(grad, np.asarray(y))  # d(sum y)/dx = mask / (1 - rate) = y for x = 1


def test_saves_and_loads_in_a_model(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(Dropout(0.25, seed=4, name="drop")(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("drop")
    assert isinstance(layer, Dropout) and layer.rate == 0.25 and layer.seed == 4
    x = _ones(3, 4)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_much_faster_than_keras_dropout_under_xla():
    """The reason for the layer: Keras's mask is ~30x slower under XLA on CPU; assert a safe 3x."""
    x = tf.constant(_ones(256, 512))

    def seconds(layer):
        step = tf.function(lambda x: tf.reduce_sum(layer(x, training=True)), jit_compile=True)
        step(x).numpy()
        start = time.process_time()
        for _ in range(10):
            step(x).numpy()
        return time.process_time() - start

    assert seconds(keras.layers.Dropout(0.3, seed=0)) > 3 * seconds(Dropout(0.3, seed=0))
