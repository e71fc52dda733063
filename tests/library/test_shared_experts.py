"""Tests of `SharedExpertsMoE` and `deepseek_moe_config` (DeepSeekMoE, Dai et al. 2024)."""

import keras
import numpy as np
import pytest
from _helpers import np_softmax, rand

from moe_tf import MixtureOfExperts, SharedExpertsMoE
from moe_tf.callbacks import RoutingStats
from moe_tf.layers import deepseek_moe_config


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


def ffn(experts, x):
    """`[T, d] -> [E, T, o]`, relu experts with biases."""
    hidden = np.maximum(
        np.einsum("td,edh->eth", x, experts.hidden_kernel.numpy()) + experts.hidden_bias.numpy()[:, None], 0
    )
    return np.einsum("eth,eho->eto", hidden, experts.output_kernel.numpy()) + experts.output_bias.numpy()[:, None]


def reference(layer, x):
    """y = sum_s FFN_s(x) + sum_{top-k} softmax(x W)_i FFN_i(x), gates not renormalised."""
    tokens = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    scores = np_softmax(tokens @ layer.router.kernel.numpy())
    idx = np.argsort(-scores, axis=-1, kind="stable")[:, : layer.k]
    routed = ffn(layer.experts, tokens)
    y = ffn(layer.shared, tokens).sum(0) if layer.shared is not None else 0.0
    for j in range(idx.shape[1]):
        y = y + np.take_along_axis(scores, idx[:, j : j + 1], -1) * routed[idx[:, j], np.arange(len(tokens))]
    return y.reshape(x.shape)


def test_deepseek_config_keeps_total_and_active_size():
    cfg = deepseek_moe_config(num_experts=8, expert_units=128, k=2, granularity=4, num_shared_experts=1)
    assert cfg == {"num_experts": 31, "expert_units": 32, "k": 7, "num_shared_experts": 1}
    assert (cfg["num_experts"] + cfg["num_shared_experts"]) * cfg["expert_units"] == 8 * 128  # total hidden units
    assert (cfg["k"] + cfg["num_shared_experts"]) * cfg["expert_units"] == 2 * 128  # active hidden units
    fine = SharedExpertsMoE(**cfg)
    coarse = MixtureOfExperts(8, 128, k=2)
    x = rand(2, 4, 16, seed=0)
    fine(x), coarse(x)
    router = lambda layer: layer.router.kernel.shape[0] * layer.router.kernel.shape[1]
    # Same expert weights; only the biases (more, smaller experts) and the router differ.
    fine_experts = fine.count_params() - router(fine)
    coarse_experts = coarse.count_params() - router(coarse)
    assert fine_experts - coarse_experts == (32 - 8) * 16  # one output bias [d] per expert; hidden biases add up equal


def test_matches_numpy_reference():
    layer = SharedExpertsMoE(num_experts=6, expert_units=8, k=2, num_shared_experts=2, shared_units=5)
    x = rand(3, 4, 7, seed=1)
    np.testing.assert_allclose(layer(x).numpy(), reference(layer, x), rtol=1e-4, atol=1e-5)


def test_shared_experts_see_every_token():
    layer = SharedExpertsMoE(num_experts=4, expert_units=8, k=1, num_shared_experts=1, capacity_factor=0.25)
    x = rand(16, 6, seed=2)
    layer(x)
    for w in layer.experts.weights:  # silence the routed experts: what remains is the shared path
        w.assign(np.zeros(w.shape, "float32"))
    y = layer(x).numpy()
    np.testing.assert_allclose(y, ffn(layer.shared, x.astype(np.float64))[0], rtol=1e-5, atol=1e-6)
    assert (np.abs(y).sum(-1) > 0).all(), "every token, even one whose routed slot was dropped, gets the shared expert"


def test_zero_shared_experts_is_the_routed_layer():
    layer = SharedExpertsMoE(num_experts=4, expert_units=8, k=2, num_shared_experts=0)
    x = rand(5, 6, seed=3)
    assert layer.shared is None
    layer(x)
    routed = MixtureOfExperts(4, 8, k=2, renormalize=False)  # SharedExpertsMoE's routed part, on its own
    routed(x)
    routed.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), routed(x).numpy(), rtol=1e-6)


def test_shared_and_routed_experts_start_different_with_a_seeded_initializer():
    layer = SharedExpertsMoE(4, 8, k=1, kernel_initializer=keras.initializers.GlorotUniform(seed=3))
    layer(rand(5, 6, seed=4))
    assert not np.allclose(layer.shared.hidden_kernel.numpy()[0], layer.experts.hidden_kernel.numpy()[0])


def test_mask_zeroes_padding():
    layer = SharedExpertsMoE(num_experts=4, expert_units=8, k=2)
    x = rand(2, 5, 6, seed=5)
    mask = np.array([[1, 1, 1, 0, 0], [1] * 5], bool)
    y = layer(x, mask=mask).numpy()
    np.testing.assert_array_equal(y[0, 3:], 0.0)


def test_keras_round_trip_jit_and_routing_stats(tmp_path):
    inputs = keras.Input((8, 6))
    h = SharedExpertsMoE(**deepseek_moe_config(4, 16, k=2, granularity=2), capacity_factor=1.25, name="ds")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    x, y = rand(32, 8, 6, seed=6), np.arange(32) % 2
    stats = RoutingStats()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[stats])
    assert np.isfinite(history.history["loss"]).all()
    assert "ds_max_load" in history.history
    assert stats.history["ds"].shape == (2, 7)
    model.save(tmp_path / "ds.keras")
    loaded = keras.models.load_model(tmp_path / "ds.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("ds").get_config() == model.get_layer("ds").get_config()


def test_active_flops_per_token():
    layer = SharedExpertsMoE(num_experts=6, expert_units=8, k=2, num_shared_experts=1, shared_units=4)
    layer.build((None, 10))
    assert layer.active_flops_per_token() == 2 * (10 * 6 + 2 * (10 * 8 + 8 * 10) + (10 * 4 + 4 * 10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 4, "expert_units": 8, "k": 5}, "k"),
        ({"num_experts": 4, "expert_units": 8, "k": 1, "num_shared_experts": -1}, "num_shared_experts"),
        ({"num_experts": 4, "expert_units": 8, "k": 1, "shared_units": 0}, "shared_units"),
        ({"num_experts": 0, "expert_units": 8, "k": 1}, "num_experts"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SharedExpertsMoE(**kwargs)


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        deepseek_moe_config(8, 100, k=2, granularity=3)
    with pytest.raises(ValueError, match="num_shared_experts"):
        deepseek_moe_config(8, 128, k=1, granularity=2, num_shared_experts=2)
