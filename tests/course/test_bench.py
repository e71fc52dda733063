"""moe_tf.course.bench: the layers it builds, the step it times, and its argument checks (tiny sizes: fast)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from moe_tf import MixtureOfExperts
from moe_tf.course.bench import LAYER_KINDS, make_layer, make_step, run_once, time_layers, time_row, time_step

ROOT = Path(__file__).resolve().parents[2]
T, D, H, E = 32, 8, 16, 4


def _x(tokens=T, dim=D):
    return tf.random.stateless_normal((tokens, dim), seed=(1, 2))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_every_kind_maps_tokens_to_tokens(kind):
    layer = make_layer(kind, E, k=2, units=H, dim=D, capacity_factor=1.0)
    y = layer(_x())
    assert tuple(y.shape) == ((E, T * 2 // E, D) if kind == "experts" else (T, D))
    assert np.all(np.isfinite(np.asarray(y)))


def test_layers_are_configured_as_named():
    dense = make_layer("dense-moe", E, k=2, units=H, dim=D)
    assert isinstance(dense, MixtureOfExperts) and dense.k is None and dense.capacity_factor is None
    sparse = make_layer("einsum", E, k=1, units=H, dim=D, capacity_factor=1.25)
    assert (sparse.k, sparse.capacity_factor, sparse.dispatch, sparse.num_experts) == (1, 1.25, "einsum", E)
    ffn = make_layer("ffn", E, k=2, units=H, dim=D)
    ffn(_x())
    assert ffn.layers[0].units == 2 * H  # the same active FLOPs as top-2 at capacity factor 1.0


def test_same_seed_same_weights():
    a, b = (make_layer("gather", E, units=H, dim=D, seed=3) for _ in range(2))
    x = _x()
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))


def test_step_returns_the_loss_and_a_gradient_per_weight():
    layer = make_layer("gather", E, k=2, units=H, dim=D, capacity_factor=2.0)
    x = _x()
    loss, grads = make_step(layer)(x)
    assert len(grads) == len(layer.trainable_variables) and all(g is not None for g in grads)
    expected = float(tf.reduce_mean(tf.square(layer(x, training=True))) + sum(layer.losses))
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    router_grad = grads[[v.path for v in layer.trainable_variables].index(layer.router.kernel.path)]
    assert float(tf.reduce_sum(tf.abs(router_grad))) > 0  # the router learns through the gates


def test_step_loss_is_the_mean_square_of_a_rank3_output_too():
    layer = make_layer("experts", E, k=2, units=H, dim=D)  # returns [E, T*k/E, D]
    x = _x()
    y = np.asarray(layer(x, training=True))
    assert y.ndim == 3
    loss, grads = make_step(layer)(x)
    assert float(loss) == pytest.approx(float(np.mean(np.square(y))), rel=1e-4)
    assert len(grads) == len(layer.trainable_variables) and all(g is not None for g in grads)


def test_timings_are_positive_and_keyed_by_name():
    x = _x()
    times = time_layers(
        {"a": make_layer("ffn", E, units=H, dim=D), "b": make_layer("dense-moe", E, units=H, dim=D)}, x, reps=2
    )
    assert list(times) == ["a", "b"] and all(t > 0 for t in times.values())
    assert time_step(make_layer("gather", E, units=H, dim=D), x, reps=1) > 0
    assert run_once(make_step(make_layer("ffn", E, units=H, dim=D)), x) > 0
    row = time_row({"dense": ("dense-moe", E, 2, H, D, None), "top2": ("gather", E, 2, H, D, 1.0)}, x, reps=1)
    assert set(row) == {"dense", "top2"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="sparse", num_experts=4), "`kind` must be one of"),
        (dict(kind="gather", num_experts=0), "`num_experts` must be a positive integer"),
        (dict(kind="gather", num_experts=4, k=5), "1 <= k <= num_experts=4"),
        (dict(kind="gather", num_experts=4, units=0), "`units`"),
        (dict(kind="gather", num_experts=4, dim=2.5), "`dim`"),
        (dict(kind="gather", num_experts=4, capacity_factor=0.0), "`capacity_factor`"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_layer(**kwargs)


def test_bad_timing_arguments():
    layer = make_layer("ffn", E, units=H, dim=D)
    with pytest.raises(ValueError, match="`layers` must be a non-empty dict"):
        time_layers([], _x())
    with pytest.raises(ValueError, match="`reps` must be a positive integer"):
        time_step(layer, _x(), reps=0)
    with pytest.raises(ValueError, match="`configs` must be a non-empty dict"):
        time_row({}, _x())


def test_benchmark_script_imports_its_layers_from_the_library():
    """bench/dispatch.py uses moe_tf.course.bench (not a copy) and still parses its options."""
    source = (ROOT / "bench" / "dispatch.py").read_text()
    assert "from moe_tf.course.bench import" in source and "def make_layer" not in source
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dispatch.py"), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "--quick" in done.stdout
