"""Auxiliary-loss-free load balancing (DeepSeek-V3): `bias_update_rate` of `TopKRouter` / `MixtureOfExperts`.

The course's definition (exercise 13, `solutions/ex13_aux_free_bias.py`): a
per-expert bias `b` is added to the affinity scores only to choose the top-k
experts; the gates come from the unbiased scores; after each training step
`b_i <- b_i + gamma * sign(mean_load - load_i)`. The router's affinities are its
softmax probabilities. Every check below compares with a NumPy (float64)
reimplementation of that rule.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import np_softmax, rand
from keras import ops

from moe_tf import MixtureOfExperts, TopKRouter
from moe_tf.routing import top_k_choices


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(2024)


def np_route(logits, bias, k, renormalize):
    """Reference: indices = top-k of softmax(logits) + bias (ties: lower index); gates from the unbiased logits."""
    probs = np_softmax(logits)
    indices = np.argsort(-(probs + bias), axis=-1, kind="stable")[:, :k]
    chosen = np.take_along_axis(probs, indices, axis=-1)
    if renormalize:
        gates = chosen / chosen.sum(-1, keepdims=True)
    else:
        gates = chosen
    return gates, indices


def np_update(bias, indices, num_experts, gamma, token_mask=None):
    weights = np.ones(len(indices)) if token_mask is None else np.asarray(token_mask, np.float64)
    load = np.bincount(indices.reshape(-1), weights=np.repeat(weights, indices.shape[1]), minlength=num_experts)
    return bias + gamma * np.sign(load.mean() - load)


def skewed_router(gamma=0.01, k=2, num_experts=4, dim=6, **kwargs):
    """A router with diverse per-token logits plus a fixed skew towards expert 0 (then 1)."""
    router = TopKRouter(num_experts, k=k, bias_update_rate=gamma, use_bias=True, **kwargs)
    router.build((None, dim))
    router.kernel.assign(0.5 * rand(dim, num_experts, seed=1))
    skew = np.zeros(num_experts, "float32")
    skew[:2] = (2.0, 1.0)
    router.bias.assign(skew)
    return router


def _logits(router, x):
    logits = np.asarray(x, np.float64) @ router.kernel.numpy().astype(np.float64)
    return logits + (router.bias.numpy() if router.use_bias else 0.0)


# -- default off ---------------------------------------------------------------------------------------


def test_default_off_adds_no_weight_and_routes_as_before():
    x = rand(32, 6, seed=2)
    router = TopKRouter(4, k=2)
    out = router(x, training=True)
    assert router.bias_update_rate == 0.0 and router.get_config()["bias_update_rate"] == 0.0
    assert not hasattr(router, "selection_bias")
    assert [w.name for w in router.weights] == ["kernel"], "no extra weight when the bias is off"
    gates, indices = top_k_choices(out.logits, 2, renormalize=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(out.indices), ops.convert_to_numpy(indices))
    np.testing.assert_array_equal(ops.convert_to_numpy(out.gates), ops.convert_to_numpy(gates))
    moe = MixtureOfExperts(4, 8, k=2)
    moe(rand(3, 5, 6, seed=3), training=True)
    assert moe.router.bias_update_rate == 0.0 and not hasattr(moe.router, "selection_bias")
    assert all("selection_bias" not in w.path for w in moe.weights)


def test_moe_with_a_zero_bias_matches_the_default_layer():
    x = rand(3, 5, 6, seed=17)
    plain = MixtureOfExperts(4, 8, k=2, capacity_factor=1.25)
    biased = MixtureOfExperts(4, 8, k=2, capacity_factor=1.25, bias_update_rate=1e-3)
    plain(x)
    biased(x)
    biased.router.kernel.assign(plain.router.kernel)
    for a, b in zip(biased.experts.weights, plain.experts.weights):
        a.assign(b)
    np.testing.assert_allclose(ops.convert_to_numpy(biased(x)), ops.convert_to_numpy(plain(x)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k,renormalize", [(1, False), (2, True), (2, False), (3, True)])
def test_zero_bias_routes_like_the_unbiased_router(k, renormalize):
    x = rand(40, 6, seed=4)
    plain = TopKRouter(5, k=k, renormalize=renormalize)
    biased = TopKRouter(5, k=k, renormalize=renormalize, bias_update_rate=0.1)
    plain.build((None, 6))
    biased.build((None, 6))
    biased.kernel.assign(plain.kernel)
    a, b = plain(x), biased(x)  # inference: the bias stays 0
    for key in ("indices", "gates", "keep", "probs"):
        np.testing.assert_allclose(
            ops.convert_to_numpy(getattr(b, key)), ops.convert_to_numpy(getattr(a, key)), rtol=1e-6, atol=1e-7
        )
    np.testing.assert_array_equal(biased.selection_bias.numpy(), np.zeros(5))


# -- selection uses the bias, gates do not -------------------------------------------------------------


@pytest.mark.parametrize("k,renormalize", [(1, False), (1, True), (2, True), (2, False)])
def test_bias_changes_selection_not_gate_values(k, renormalize):
    router = skewed_router(gamma=0.01, k=k, renormalize=renormalize)
    x = rand(50, 6, seed=5)
    bias = np.array([-0.4, 0.0, 0.3, 0.05])
    router.selection_bias.assign(bias)
    out = router(x)  # inference: no update
    logits = _logits(router, x)
    gates, indices = np_route(logits, bias, k, router.renormalize)
    if renormalize and k == 1:
        gates = np.ones_like(gates)
    np.testing.assert_array_equal(ops.convert_to_numpy(out.indices), indices)
    np.testing.assert_allclose(ops.convert_to_numpy(out.gates), gates, rtol=1e-5, atol=1e-6)
    # The selection really moved: expert 0 (favoured by the router, penalised by the bias) is chosen less.
    unbiased = np_route(logits, 0 * bias, k, router.renormalize)[1]
    assert (unbiased != indices).any(axis=-1).mean() > 0.3
    assert (indices == 0).sum() < (unbiased == 0).sum()
    # The gates read the unbiased probabilities: gate = p_i (raw) or p_i / sum of the chosen p (renormalised).
    probs = ops.convert_to_numpy(out.probs)
    chosen = np.take_along_axis(probs, ops.convert_to_numpy(out.indices), axis=-1)
    if not renormalize:
        np.testing.assert_allclose(ops.convert_to_numpy(out.gates), chosen, rtol=1e-6)
    # Dense gates: zero outside the chosen experts, row sums = compact gate sums.
    dense = ops.convert_to_numpy(out.dense_gates())
    np.testing.assert_allclose(dense.sum(-1), ops.convert_to_numpy(out.gates).sum(-1), rtol=1e-6)
    assert ((dense > 0).sum(-1) <= k).all()


def test_a_uniform_bias_changes_nothing():
    router = skewed_router(gamma=0.01, k=2)
    x = rand(30, 6, seed=6)
    before = router(x)
    router.selection_bias.assign(np.full(4, 0.7, "float32"))
    after = router(x)
    for key in ("indices", "gates"):
        np.testing.assert_allclose(
            ops.convert_to_numpy(getattr(after, key)), ops.convert_to_numpy(getattr(before, key)), rtol=1e-6
        )


def test_bias_gets_no_gradient_and_router_kernel_does():
    router = skewed_router(gamma=0.01, k=2)
    router.selection_bias.assign([-0.3, 0.0, 0.2, 0.1])
    x = tf.constant(rand(20, 6, seed=7))
    with tf.GradientTape() as tape:
        out = router(x, training=False)
        target = tf.reduce_sum(out.gates * tf.range(1.0, 3.0))
    grads = tape.gradient(target, [router.kernel, router.selection_bias.value])
    assert grads[1] is None, "the selection bias must not receive a gradient"
    assert grads[0] is not None and np.abs(grads[0].numpy()).sum() > 0, "the router kernel learns through the gates"
    assert [w.path for w in router.non_trainable_weights] == [router.selection_bias.path]
    assert router.selection_bias.path not in [w.path for w in router.trainable_weights]


# -- the update rule ---------------------------------------------------------------------------------------


def test_one_update_is_gamma_sign_of_mean_minus_load():
    gamma = 0.01
    router = skewed_router(gamma=gamma, k=2)
    x = rand(64, 6, seed=8)
    _, indices = np_route(_logits(router, x), np.zeros(4), 2, True)
    out = router(x, training=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(out.indices), indices, err_msg="selection uses the old bias")
    expected = np_update(np.zeros(4), indices, 4, gamma)
    np.testing.assert_allclose(router.selection_bias.numpy(), expected, atol=1e-7)
    assert expected[0] == -gamma and expected[1] == -gamma and (expected[2:] == gamma).all()


def test_no_update_outside_training():
    router = skewed_router(gamma=0.05, k=2)
    x = rand(16, 6, seed=9)
    for training in (None, False):
        router(x, training=training)
    np.testing.assert_array_equal(router.selection_bias.numpy(), np.zeros(4))


def test_bias_moves_a_skewed_router_to_balance():
    gamma, E = 0.01, 4
    router = skewed_router(gamma=gamma, k=2, num_experts=E)
    x = rand(256, 6, seed=10)
    loads = []
    bias = np.zeros(E)
    for _ in range(120):
        logits = _logits(router, x)
        _, indices = np_route(logits, bias, 2, True)
        out = router(x, training=True)
        np.testing.assert_array_equal(ops.convert_to_numpy(out.indices), indices)
        loads.append(np.bincount(indices.reshape(-1), minlength=E) / indices.size)
        bias = np_update(bias, indices, E, gamma)
        np.testing.assert_allclose(router.selection_bias.numpy(), bias, atol=1e-5)
    first, last = loads[0].max() * E, np.mean([load.max() for load in loads[-20:]]) * E
    assert first > 1.6, f"at the start experts 0 and 1 take most tokens (max load near E/k = 2); got {first}"
    assert last < 1.25, f"after 120 updates the max load should be near 1 (balanced); got {last:.3f}"
    b = router.selection_bias.numpy()
    assert b[0] < b[1] < min(b[2], b[3]), f"the most-preferred expert gets the lowest bias; bias = {b}"


def test_padding_is_left_out_of_the_load():
    gamma, E = 0.01, 4
    moe = MixtureOfExperts(E, 8, k=1, balance_loss=None, bias_update_rate=gamma)
    x = np.abs(rand(2, 8, 6, seed=11)) + 0.1
    x[:, :, 0] = 0.0
    x[:, 5:, :] = 0.0  # padding rows: only feature 0 is on, which points at expert 3
    x[:, 5:, 0] = 50.0
    mask = np.ones((2, 8), bool)
    mask[:, 5:] = False
    moe(x, mask=mask)  # build
    kernel = np.zeros((6, E), "float32")
    kernel[1:, 2] = 1.0  # real tokens choose expert 2
    kernel[0, 3] = 1.0  # padding rows would choose expert 3
    moe.router.kernel.assign(kernel)
    tokens = x.reshape(-1, 6)
    _, indices = np_route(_logits(moe.router, tokens), np.zeros(E), 1, False)
    assert (indices[mask.reshape(-1)] == 2).all() and (indices[~mask.reshape(-1)] == 3).all(), "test setup"
    moe(x, mask=mask, training=True)
    expected = np_update(np.zeros(E), indices, E, gamma, token_mask=mask.reshape(-1))
    np.testing.assert_allclose(moe.router.selection_bias.numpy(), expected, atol=1e-7)
    assert expected[3] > 0 and expected[2] < 0, "expert 3 got only padding: underloaded, so its bias goes up"


# -- training, serialisation, arguments ----------------------------------------------------------------------


def test_jit_compiled_fit_updates_the_bias_once_per_step():
    """With a frozen model (SGD(0)) the bias follows the NumPy rule batch after batch, under XLA."""
    gamma, E, batch = 0.02, 4, 16
    inp = keras.Input((6,))
    moe = MixtureOfExperts(E, 8, k=2, balance_loss=None, bias_update_rate=gamma, name="moe")
    model = keras.Model(inp, keras.layers.Dense(1)(moe(inp)))
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
    kernel = 0.05 * rand(6, E, seed=13)
    kernel[:, 0] += 1.0
    moe.router.kernel.assign(kernel)
    x, y = np.abs(rand(64, 6, seed=14)), rand(64, 1, seed=15)
    model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)
    bias = np.zeros(E)
    logits = _logits(moe.router, x)
    for _ in range(2):
        for i in range(0, len(x), batch):
            _, indices = np_route(logits[i : i + batch], bias, 2, True)
            bias = np_update(bias, indices, E, gamma)
    np.testing.assert_allclose(moe.router.selection_bias.numpy(), bias, atol=1e-6)
    assert moe.router.selection_bias.numpy()[0] < 0, "the preferred expert's bias went down"
    before = moe.router.selection_bias.numpy().copy()
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    np.testing.assert_array_equal(moe.router.selection_bias.numpy(), before, err_msg="evaluate/predict moved the bias")


def test_config_roundtrip():
    router = TopKRouter(5, k=2, bias_update_rate=1e-3, seed=1)
    config = router.get_config()
    assert config["bias_update_rate"] == 1e-3
    assert TopKRouter.from_config(config).get_config() == config
    moe = MixtureOfExperts(4, 8, k=2, capacity_factor=1.25, balance_loss=None, bias_update_rate=5e-3, name="m")
    config = moe.get_config()
    assert config["bias_update_rate"] == 5e-3
    clone = MixtureOfExperts.from_config(config)
    assert clone.get_config() == config and clone.router.bias_update_rate == 5e-3


def test_save_and_load_keeps_the_bias(tmp_path):
    inp = keras.Input((5, 6))
    moe = MixtureOfExperts(4, 8, k=2, capacity_factor=1.25, balance_loss=None, bias_update_rate=1e-2, name="moe")
    model = keras.Model(inp, keras.layers.Dense(2)(moe(inp)))
    bias = np.array([0.3, -0.2, 0.05, -0.15], "float32")
    moe.router.selection_bias.assign(bias)
    x = rand(3, 5, 6, seed=16)
    before = ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "aux_free.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("moe").router.selection_bias.numpy(), bias)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x, training=False)), before)
    assert loaded.get_layer("moe").get_config() == moe.get_config()


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(k=2, bias_update_rate=-0.1), r"`bias_update_rate`.*received bias_update_rate=-0\.1"),
        (
            dict(k=None, bias_update_rate=1e-3),
            r"`bias_update_rate`.*integer `k`.*received bias_update_rate=0\.001 with k=None",
        ),
        (dict(k=2, bias_update_rate=float("inf")), r"`bias_update_rate`.*received bias_update_rate=inf"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TopKRouter(4, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        MixtureOfExperts(4, 8, **kwargs)
