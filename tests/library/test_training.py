"""Training-time behaviour: routing metrics in `fit` logs and the `RoutingStats` callback.

Most models here train with `SGD(0.0)` and `shuffle=False`, so routing stays
fixed and the logged statistics can be checked against a NumPy recomputation
of each batch's routing.
"""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest
from _helpers import np_softmax, rand

from moe_tf import MixtureOfExperts, RoutingStats

S, D = 3, 5


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(4321)


def build_model(num_experts=4, k=2, capacity_factor=1.0, balance_loss="switch", names=("moe",), lr=0.0, **kwargs):
    inp = keras.Input((S, D))
    h = inp
    for name in names:
        h = MixtureOfExperts(
            num_experts, 8, k=k, capacity_factor=capacity_factor, balance_loss=balance_loss, name=name, **kwargs
        )(h)
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(keras.optimizers.SGD(lr), "mse")
    return model


def batch_stats(layer, x):
    """NumPy routing statistics of one batch `[B, S, D]` through `layer` (no noise)."""
    tokens = x.reshape(-1, x.shape[-1]).astype(np.float64)
    logits = tokens @ layer.router.kernel.numpy().astype(np.float64)
    probs = np_softmax(logits)
    E, k = layer.num_experts, layer.k
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    counts = np.bincount(indices.reshape(-1), minlength=E).astype(np.float64)
    capacity = len(tokens)
    if layer.capacity_factor is not None:
        exact = Fraction(repr(float(layer.capacity_factor))) * k * len(tokens) / E
        capacity = max(1, min(len(tokens), math.ceil(exact)))
    f = counts / counts.sum()
    return {
        "counts": counts,
        "dropped": np.maximum(counts - capacity, 0).sum(),
        "entropy_sum": -(probs * np.log(np.maximum(probs, 1e-12))).sum(),
        "tokens": len(tokens),
        "balance": E * np.sum(f * probs.mean(0)),
        "z": np.mean(np.log(np.exp(logits).sum(-1)) ** 2),
    }


def epoch_summary(layer, x, batch_size):
    stats = [batch_stats(layer, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    counts = sum(s["counts"] for s in stats)
    return {
        "load": counts / counts.sum(),
        "max_load": counts.max() / counts.sum() * layer.num_experts,
        "dropped": sum(s["dropped"] for s in stats) / counts.sum(),
        "entropy": sum(s["entropy_sum"] for s in stats) / sum(s["tokens"] for s in stats),
        "balance_loss": np.mean([s["balance"] for s in stats]),
        "z_loss": np.mean([s["z"] for s in stats]),
    }


METRIC_KEYS = ("max_load", "dropped", "entropy", "balance_loss", "z_loss")


def test_fit_logs_routing_metrics_for_train_and_validation():
    model = build_model(k=2, capacity_factor=1.0, z_loss_weight=1e-3)
    moe = model.get_layer("moe")
    x, y = rand(24, S, D, seed=1) * 2, rand(24, S, 1, seed=2)
    xv, yv = rand(8, S, D, seed=3) * 2, rand(8, S, 1, seed=4)
    hist = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, validation_data=(xv, yv), verbose=0).history
    for key in METRIC_KEYS:
        assert f"moe_{key}" in hist, f"fit should log moe_{key}; got {sorted(hist)}"
        assert f"val_moe_{key}" in hist, f"fit should log val_moe_{key}; got {sorted(hist)}"
        assert len(hist[f"moe_{key}"]) == 2

    train, val = epoch_summary(moe, x, 8), epoch_summary(moe, xv, 8)
    assert train["dropped"] > 0, "the test data should overflow some expert (cf=1.0, random router)"
    for key in METRIC_KEYS:
        for epoch in range(2):  # SGD(0.0): both epochs route identically
            np.testing.assert_allclose(
                hist[f"moe_{key}"][epoch],
                train[key],
                rtol=1e-4,
                atol=1e-6,
                err_msg=f"logged moe_{key} differs from the recomputed training value",
            )
            np.testing.assert_allclose(
                hist[f"val_moe_{key}"][epoch],
                val[key],
                rtol=1e-4,
                atol=1e-6,
                err_msg=f"logged val_moe_{key} differs from the recomputed validation value",
            )
    assert 1.0 <= hist["moe_max_load"][0] <= 4.0
    assert "moe_load_0" not in hist, "per-expert loads are only logged with log_expert_load=True"


def test_fit_logs_per_expert_load_when_requested():
    E = 4
    model = build_model(num_experts=E, k=2, log_expert_load=True)
    x, y = rand(16, S, D, seed=14) * 2, rand(16, S, 1, seed=15)
    stats = RoutingStats()
    hist = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[stats], verbose=0).history
    logged = np.array([hist[f"moe_load_{i}"][0] for i in range(E)])
    expected = epoch_summary(model.get_layer("moe"), x, 8)["load"]
    np.testing.assert_allclose(logged, expected, rtol=1e-5, err_msg="moe_load_<i> should be expert i's load fraction")
    np.testing.assert_allclose(logged, stats.history["moe"][0], rtol=1e-6, err_msg="logs and RoutingStats disagree")
    assert 0.0 <= hist["moe_entropy"][0] <= math.log(4) + 1e-6


def test_routing_stats_history_without_validation():
    E, epochs = 4, 3
    model = build_model(num_experts=E, k=2, names=("moe_a", "moe_b"))
    x, y = rand(16, S, D, seed=5) * 2, rand(16, S, 1, seed=6)
    stats = RoutingStats()
    hist = model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, callbacks=[stats], verbose=0).history
    assert set(stats.history) == {"moe_a", "moe_b"}, "one history per MixtureOfExperts layer"
    assert "moe_b_max_load" in hist
    for name in ("moe_a", "moe_b"):
        h = np.asarray(stats.history[name])
        assert h.shape == (epochs, E), f"expected history [epochs, E] = {(epochs, E)}, got {h.shape}"
        np.testing.assert_allclose(h.sum(axis=1), 1.0, atol=1e-6, err_msg="each epoch's loads should sum to 1")
        np.testing.assert_allclose(
            h.max(axis=1) * E,
            hist[f"{name}_max_load"],
            rtol=1e-5,
            err_msg="history should agree with the logged max_load",
        )
        assert np.size(stats.val_history[name]) == 0, "no validation data: val_history should stay empty"
    expected = epoch_summary(model.get_layer("moe_a"), x, 8)["load"]
    for row in np.asarray(stats.history["moe_a"]):
        np.testing.assert_allclose(row, expected, rtol=1e-5, err_msg="history row should be the epoch's load fractions")


def _route_by_sign(model, E):
    """Positive tokens go to expert 0, negative tokens to expert 1."""
    kernel = np.zeros((D, E), "float32")
    kernel[:, 0], kernel[:, 1] = 1.0, -1.0
    model.get_layer("moe").router.kernel.assign(kernel)


def test_routing_stats_keeps_training_load_when_validating():
    E, epochs = 4, 2
    model = build_model(num_experts=E, k=1, capacity_factor=None, balance_loss=None)
    _route_by_sign(model, E)
    x = rand(16, S, D, seed=7, low=0.1, high=1.0)  # training: all to expert 0
    xv = -rand(8, S, D, seed=8, low=0.1, high=1.0)  # validation: all to expert 1
    y, yv = np.zeros((16, S, 1), "float32"), np.zeros((8, S, 1), "float32")
    stats = RoutingStats()
    hist = model.fit(x, y, batch_size=8, epochs=epochs, validation_data=(xv, yv), callbacks=[stats], verbose=0).history
    train, val = np.asarray(stats.history["moe"]), np.asarray(stats.val_history["moe"])
    assert train.shape == (epochs, E) and val.shape == (epochs, E)
    np.testing.assert_array_equal(
        train,
        np.tile([1.0, 0, 0, 0], (epochs, 1)),
        err_msg="history should hold the training data's load (all on expert 0)",
    )
    np.testing.assert_array_equal(
        val,
        np.tile([0, 1.0, 0, 0], (epochs, 1)),
        err_msg="val_history should hold the validation load (all on expert 1)",
    )
    assert hist["moe_max_load"] == [E] * epochs and hist["val_moe_max_load"] == [E] * epochs


def test_routing_stats_writes_tensorboard_events(tmp_path):
    import tensorflow as tf  # tf.summary writes through the tensorboard package, a dependency of moe-tf

    model = build_model(k=2)
    x, y = rand(8, S, D, seed=9), rand(8, S, 1, seed=10)
    stats = RoutingStats(log_dir=tmp_path / "logs")
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=[stats], verbose=0)
    files = list((tmp_path / "logs").rglob("events.out.tfevents*"))
    assert files, "RoutingStats(log_dir=...) should write TensorBoard event files"
    tags = {
        value.tag
        for f in files
        for event in tf.compat.v1.train.summary_iterator(str(f))
        for value in event.summary.value
    }
    for split in ("train", "validation"):
        for e in range(4):
            tag = f"moe/{split}/load_expert_{e}"
            assert tag in tags, f"missing scalar {tag}; got {sorted(tags)}"
        assert f"moe/{split}/expert_load" in tags


def test_routing_stats_requires_a_moe_layer():
    inp = keras.Input((D,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="MixtureOfExperts"):
        model.fit(rand(4, D), rand(4, 1), epochs=1, callbacks=[RoutingStats()], verbose=0)


@pytest.mark.parametrize("k", [1, 2])
def test_collapsed_router_shows_max_load_E(k):
    E = 4
    model = build_model(num_experts=E, k=k, capacity_factor=None, balance_loss=None)
    assert model.losses == [] or all(float(v) == 0 for v in model.losses)
    kernel = np.zeros((D, E), "float32")
    kernel[:, 2] = 5.0  # expert 2 dominates every positive token
    model.get_layer("moe").router.kernel.assign(kernel)
    x = rand(16, S, D, seed=11, low=0.1, high=1.0)
    hist = model.fit(x, np.zeros((16, S, 1)), batch_size=8, epochs=1, verbose=0).history
    # k=1: everything on expert 2 -> max_load = E; k=2: half the assignments -> E / 2.
    assert hist["moe_max_load"][0] == pytest.approx(E / k), f"expected max_load = E/k = {E / k} under collapse"
    assert hist["moe_dropped"][0] == 0.0, "capacity_factor=None drops nothing"


def test_switch_balance_value_exceeds_one_under_collapse():
    E = 4
    model = build_model(num_experts=E, k=1, capacity_factor=None, balance_loss="switch", balance_loss_weight=1e-2)
    kernel = np.zeros((D, E), "float32")
    kernel[:, 0] = 5.0
    model.get_layer("moe").router.kernel.assign(kernel)
    x = rand(16, S, D, seed=12, low=0.1, high=1.0)
    hist = model.fit(x, np.zeros((16, S, 1)), batch_size=8, epochs=1, verbose=0).history
    assert hist["moe_max_load"][0] == E
    balance = hist["moe_balance_loss"][0]
    assert balance > 1.0, f"a collapsed router should give a Switch balance value > 1 (uniform = 1), got {balance}"
    expected = epoch_summary(model.get_layer("moe"), x, 8)["balance_loss"]
    np.testing.assert_allclose(balance, expected, rtol=1e-4, err_msg="expected E * P_0 with f = one-hot")


def test_balanced_router_has_switch_value_near_one():
    """Contrast to the collapse test: a zero router (uniform probabilities) gives E * sum f_i / E = 1."""
    E = 4
    model = build_model(num_experts=E, k=1, capacity_factor=None)
    model.get_layer("moe").router.kernel.assign(np.zeros((D, E), "float32"))
    x = rand(16, S, D, seed=13)
    hist = model.fit(x, np.zeros((16, S, 1)), batch_size=8, epochs=1, verbose=0).history
    assert hist["moe_balance_loss"][0] == pytest.approx(1.0, abs=1e-5)
    assert hist["moe_entropy"][0] == pytest.approx(math.log(E), abs=1e-5), "uniform router: entropy log E"


def test_step_timer_skips_the_first_step_and_reports_the_median():
    import keras

    from moe_tf.callbacks import StepTimer

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", jit_compile=True)
    timer = StepTimer()
    assert timer.median_ms() is None and timer.first_s is None
    x = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    model.fit(x, x[:, :2], batch_size=8, epochs=2, verbose=0, callbacks=[timer])
    assert len(timer.times) == 2 * 5 - 1, "every step but the first (tracing and XLA compilation)"
    assert timer.median_ms() == pytest.approx(1e3 * float(np.median(timer.times)))
    assert max(timer.times) < 1.0, "a compiled step of a 10-weight model takes far less than a second"
    assert timer.first_s > max(timer.times), "the first step traces and compiles: the slowest of all"
