"""Random numbers fast under XLA (`moe_tf.rng`): router noise and the course models' dropout use Philox, seeded."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import rand
from keras import ops

from moe_tf import TopKRouter, rng
from moe_tf.course.models import build_model
from moe_tf.layers import Dropout
from moe_tf.transformer import TransformerBlock


def test_draws_are_reproducible_and_new_on_every_call():
    a, b = keras.random.SeedGenerator(3), keras.random.SeedGenerator(3)
    first_a, first_b = ops.convert_to_numpy(rng.normal((4, 5), a)), ops.convert_to_numpy(rng.normal((4, 5), b))
    np.testing.assert_array_equal(first_a, first_b, err_msg="the same seed must give the same draws")
    assert not np.array_equal(first_a, ops.convert_to_numpy(rng.normal((4, 5), a))), "each draw advances the seed"
    u = ops.convert_to_numpy(rng.uniform((1000,), a, 0.9, 1.1))
    assert u.min() >= 0.9 and u.max() < 1.1 and abs(u.mean() - 1.0) < 0.01


def test_draws_are_philox_and_reproducible_under_xla():
    """XLA's Philox and TensorFlow's CPU kernel give different numbers; each is reproducible from the seed."""
    eager = ops.convert_to_numpy(rng.normal((3, 4), keras.random.SeedGenerator(7)))
    expected = tf.random.stateless_normal((3, 4), seed=rng.philox_seed(keras.random.SeedGenerator(7)), alg="philox")
    np.testing.assert_array_equal(eager, expected.numpy(), err_msg="the draw should be Philox on the generator's seed")
    runs = []
    for _ in range(2):
        gen = keras.random.SeedGenerator(7)
        fn = tf.function(lambda: rng.normal((3, 4), gen), jit_compile=True)  # noqa: B023 (called in this iteration)
        runs.append([ops.convert_to_numpy(fn()) for _ in range(2)])
    np.testing.assert_array_equal(runs[0][0], runs[1][0], err_msg="same seed under XLA, same first draw")
    np.testing.assert_array_equal(runs[0][1], runs[1][1], err_msg="and the same second draw")
    assert not np.array_equal(runs[0][0], runs[0][1])


@pytest.mark.parametrize("noise", ["gaussian", "jitter"])
def test_router_noise_is_seeded_and_only_in_training(noise):
    x = rand(6, 5, seed=1)
    routers = [TopKRouter(4, k=2, noise=noise, seed=11) for _ in range(2)]
    for r in routers:
        r.build((None, 5))
        r.set_weights(routers[0].get_weights())
        if noise == "gaussian":
            r.noise_kernel.assign(np.full((5, 4), 0.5, "float32"))
    out = [ops.convert_to_numpy(r(x, training=True).logits) for r in routers]
    np.testing.assert_array_equal(out[0], out[1], err_msg="same seed, same noise")
    clean = ops.convert_to_numpy(routers[0](x, training=False).logits)
    assert not np.allclose(out[0], clean), "training adds noise"
    again = ops.convert_to_numpy(routers[0](x, training=True).logits)
    assert not np.array_equal(again, out[0]), "new noise on every training call"


def test_course_models_use_the_fast_dropout():
    model = build_model("switch", 20, 3, width=8, expert_units=8, num_experts=4, input_dropout=0.1)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 3 and all(isinstance(layer, Dropout) for layer in dropouts)
    block = TransformerBlock(num_heads=2, ffn_units=8, dropout=0.1, attention_dropout=0.1, seed=0)
    block(rand(2, 3, 4))
    assert isinstance(block.attention_output_dropout, Dropout) and isinstance(block.ffn_output_dropout, Dropout)
    assert isinstance(block.attention._dropout_layer, Dropout), "attention-probability dropout too"
    y = ops.convert_to_numpy(block(rand(2, 3, 4), training=True))
    assert np.all(np.isfinite(y))


def test_dropout_on_a_sparse_input_drops_stored_values():
    x = tf.sparse.from_dense(np.ones((4, 50), "float32"))
    y = Dropout(0.5, seed=0)(x, training=True)
    assert isinstance(y, tf.SparseTensor)
    values = y.values.numpy()
    assert set(np.unique(values)) <= {0.0, 2.0} and 0.3 < np.mean(values == 0) < 0.7
