"""One contract for every MoE layer configuration (issue 14, part 4).

Every layer built on `moe_tf.layers.MoELayer` (and the `TransformerBlock`
that carries one) must:

1. survive a `get_config` round trip (`from_config` and
   `keras.layers.serialize`/`deserialize`), the clone giving identical
   outputs with the original's weights;
2. save to and load from a `.keras` file inside a functional model, with the
   same predictions and the same layer config;
3. train with `model.fit(..., jit_compile=True)`: finite loss and weights,
   and the routing metrics (`moe_tf.metrics.RoutingMetrics`) in the history;
4. ignore padding: with a Keras mask, the real tokens' outputs do not depend
   on what the padding positions hold, and padding outputs exactly 0;
5. run under `mixed_float16`: float16 outputs, float32 router logits and
   losses, finite gradients;
6. reject bad arguments with a `ValueError` that names the argument.

Layer-specific behaviour (the papers' maths, capacity, causality, costs)
stays in the per-layer test files.
"""

import json
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import rand
from keras import ops

from moe_tf.layers import (
    ExpertChoiceMoE,
    ExpertChoiceRouter,
    LinearExpertsMoE,
    MixtureOfExperts,
    MoELayer,
    SharedExpertsMoE,
    SoftMoE,
    SoftRouter,
    TopKRouter,
)
from moe_tf.transformer import TransformerBlock

B, L, D, E, H = 4, 6, 8, 4, 8  # batch, sequence, width, experts, expert units
LENGTHS = (6, 4, 1, 3)  # real tokens per sequence in the padding tests: one full, one a single token
METRICS = ("max_load", "dropped", "entropy", "balance_loss", "z_loss")  # RoutingMetrics' keys, after `<name>_`


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture
def mixed_float16():
    """Sets the global `mixed_float16` policy for one test, restoring float32."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# -- the configurations -----------------------------------------------------------------------------------


class Config(NamedTuple):
    make: Callable  # () -> a fresh layer named "moe" (the block: "block", its MoE "moe")
    rank: int = 3  # input [B, L, D] (3) or [B, D] (2)
    masks: bool = True  # takes a Keras mask
    pads_zero: bool = True  # padding positions output exactly 0
    has_losses: bool = True  # adds at least one auxiliary loss
    moe: Callable = lambda layer: layer  # the MoELayer inside (its routing_plan, its metrics' name)


def _topk(**kwargs):
    return lambda: MixtureOfExperts(E, H, name="moe", **kwargs)


def _block():
    ffn = MixtureOfExperts(E, H, k=1, capacity_factor=1.25, z_loss_weight=1e-3, name="moe")
    return TransformerBlock(num_heads=2, ffn=ffn, dropout=0.1, name="block")


CONFIGS = {
    "dense-mixture": Config(_topk(k=None)),
    "top2-capacity-gather": Config(_topk(k=2, capacity_factor=1.25, dispatch="gather")),
    "top2-einsum": Config(_topk(k=2, capacity_factor=1.25, dispatch="einsum")),
    "top2-dropless": Config(_topk(k=2, dispatch="dropless")),
    "switch-jitter": Config(_topk(k=1, capacity_factor=1.25, noise="jitter", noise_epsilon=0.1, z_loss_weight=1e-3)),
    "top2-gaussian-shazeer": Config(_topk(k=2, capacity_factor=2.0, noise="gaussian", balance_loss="shazeer")),
    "aux-free-bias": Config(_topk(k=2, bias_update_rate=1e-3, balance_loss=None, z_loss_weight=1e-3)),
    "shared-experts": Config(
        lambda: SharedExpertsMoE(E, H, k=2, num_shared_experts=1, capacity_factor=1.5, name="moe")
    ),
    "expert-choice": Config(lambda: ExpertChoiceMoE(E, H, capacity_factor=2.0, name="moe"), has_losses=False),
    "soft-moe": Config(lambda: SoftMoE(E, H, slots_per_expert=2, name="moe"), has_losses=False),
    "soft-moe-normalized": Config(lambda: SoftMoE(E, H, normalize=True, name="moe"), has_losses=False),
    "moe-layer-topk": Config(lambda: MoELayer(TopKRouter(E, k=2), expert_units=H, capacity_factor=1.5, name="moe")),
    "moe-layer-expert-choice": Config(
        lambda: MoELayer(
            ExpertChoiceRouter(E, capacity_factor=2.0),
            expert_units=H,
            balance_loss=None,
            z_loss_weight=1e-3,
            name="moe",
        )
    ),
    "moe-layer-soft": Config(
        lambda: MoELayer(
            SoftRouter(E, slots_per_expert=2),
            expert_units=H,
            balance_loss=None,
            z_loss_weight=1e-3,
            num_shared_experts=1,
            name="moe",
        )
    ),
    "linear-experts": Config(
        lambda: LinearExpertsMoE(E, 3, k=2, capacity_factor=1.5, seed=0, name="moe"), rank=2, masks=False
    ),
    "transformer-block-switch": Config(_block, pads_zero=False, moe=lambda block: block.ffn),
}


def _configs(which=lambda config: True):
    return pytest.mark.parametrize("config", [pytest.param(c, id=i) for i, c in CONFIGS.items() if which(c)])


ALL = _configs()
MASKED = _configs(lambda config: config.masks)


def _x(config, batch=B, seed=0):
    return rand(batch, L, D, seed=seed) if config.rank == 3 else rand(batch, D, seed=seed)


def _input(config):
    return keras.Input((L, D) if config.rank == 3 else (D,))


def _json(config):
    return json.loads(json.dumps(config))


def _np(t):
    return ops.convert_to_numpy(t)


# -- 1. get_config round trip ------------------------------------------------------------------------------


@ALL
def test_config_round_trip_and_same_outputs_with_the_same_weights(config):
    layer = config.make()
    x = _x(config)
    expected = _np(layer(x, training=False))
    layer_config = layer.get_config()
    clones = {
        "from_config": type(layer).from_config(layer_config),
        "deserialize": keras.layers.deserialize(keras.layers.serialize(layer)),
    }
    for how, clone in clones.items():
        assert type(clone) is type(layer), how
        assert clone.get_config() == layer_config, f"{how}: the config changed"
        clone(x, training=False)  # builds it
        clone.set_weights(layer.get_weights())
        np.testing.assert_array_equal(_np(clone(x, training=False)), expected, err_msg=how)


# -- 2. .keras file ----------------------------------------------------------------------------------------


@ALL
def test_keras_file_round_trip(config, tmp_path):
    inputs = _input(config)
    layer = config.make()
    model = keras.Model(inputs, layer(inputs))
    x = _x(config, seed=1)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_np(loaded(x, training=False)), _np(model(x, training=False)), rtol=1e-6, atol=1e-6)
    assert type(loaded.get_layer(layer.name)) is type(layer)
    # as the file stores it (JSON: a nested layer's build_config shape comes back a list, not a tuple)
    assert _json(loaded.get_layer(layer.name).get_config()) == _json(layer.get_config())


# -- 3. fit under XLA --------------------------------------------------------------------------------------


@ALL
def test_fit_under_jit_compile_logs_routing_metrics(config):
    inputs = _input(config)
    layer = config.make()
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(1e-2), "mse", jit_compile=True)  # SGD: Adam doubles the compile time
    x = _x(config, batch=16, seed=2)
    y = rand(*model.output.shape[1:], seed=3)[None].repeat(16, axis=0)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all(), history["loss"]
    assert all(np.isfinite(_np(w)).all() for w in model.weights), "a training step wrote a non-finite weight"
    prefix = config.moe(layer).routing_metrics.name
    assert prefix == config.moe(layer).name, "routing metrics are logged under the MoE layer's name"
    for key in (f"{prefix}_{m}" for m in METRICS):
        assert key in history, f"{key} missing from the history: {sorted(history)}"
        assert np.isfinite(history[key]).all(), (key, history[key])


# -- 4. padding --------------------------------------------------------------------------------------------


@MASKED
def test_padding_changes_no_real_output_and_outputs_zero(config):
    layer = config.make()
    x = _x(config, seed=4)
    mask = np.arange(L)[None, :] < np.array(LENGTHS)[:, None]  # [B, L]
    garbage = np.where(mask[..., None], x, rand(B, L, D, seed=5, low=-1e3, high=1e3))
    y = _np(layer(x, mask=mask, training=False))
    y_garbage = _np(layer(garbage, mask=mask, training=False))
    np.testing.assert_allclose(
        y_garbage[mask],
        y[mask],
        rtol=1e-5,
        atol=1e-5,
        err_msg="a real token's output depends on what the padding holds",
    )
    if config.pads_zero:
        assert np.all(y[~mask] == 0.0) and np.all(y_garbage[~mask] == 0.0), "padding must output exactly 0"
    else:  # the Transformer block: padding queries still attend and pass LayerNorm, by design
        assert np.isfinite(y_garbage).all()


# -- 5. mixed precision ------------------------------------------------------------------------------------


@ALL
def test_mixed_float16(config, mixed_float16):
    layer = config.make()
    x = _x(config, seed=6)
    kwargs = {}
    if config.masks:
        kwargs["mask"] = np.arange(L)[None, :] < np.array(LENGTHS)[:, None]
    with tf.GradientTape() as tape:
        y = layer(x, training=True, **kwargs)
        loss = ops.sum(ops.cast(y, "float32") ** 2) + ops.sum(layer.losses)
    assert y.dtype == tf.float16, f"output should be float16 under mixed_float16, got {y.dtype}"
    assert np.isfinite(_np(y)).all()
    if config.has_losses:
        assert layer.losses, "this configuration adds an auxiliary loss"
    assert all(v.dtype == tf.float32 for v in layer.losses), [v.dtype for v in layer.losses]
    moe = config.moe(layer)
    router_input = ops.cast(x if moe is layer else rand(B, L, D, seed=7), "float16")
    assert moe.routing_plan(router_input).logits.dtype == tf.float32, "router logits should be float32"
    grads = tape.gradient(loss, layer.trainable_weights)
    names = [w.path for w in layer.trainable_weights]
    missing = [n for n, g in zip(names, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, g in zip(names, grads) if not np.isfinite(_np(g)).all()]
    assert not bad, f"non-finite gradients for {bad}"


# -- 6. bad arguments --------------------------------------------------------------------------------------


BAD_ARGUMENTS = {
    "MixtureOfExperts-num_experts": (lambda: MixtureOfExperts(0, H, k=1), "num_experts"),
    "MixtureOfExperts-expert_units": (lambda: MixtureOfExperts(E, 0, k=1), "expert_units"),
    "MixtureOfExperts-k": (lambda: MixtureOfExperts(E, H, k=E + 1), "k"),
    "MixtureOfExperts-capacity_factor": (lambda: MixtureOfExperts(E, H, k=2, capacity_factor=-1.0), "capacity_factor"),
    "MixtureOfExperts-dispatch": (lambda: MixtureOfExperts(E, H, k=2, dispatch="scatter"), "dispatch"),
    "MixtureOfExperts-noise": (lambda: MixtureOfExperts(E, H, k=2, noise="uniform"), "noise"),
    "MixtureOfExperts-balance_loss": (lambda: MixtureOfExperts(E, H, k=2, balance_loss="gshard"), "balance_loss"),
    "MixtureOfExperts-bias_update_rate": (
        lambda: MixtureOfExperts(E, H, k=None, bias_update_rate=1e-3),
        "bias_update_rate",
    ),
    "SharedExpertsMoE-k": (lambda: SharedExpertsMoE(E, H, k=E + 1), "k"),
    "SharedExpertsMoE-num_shared_experts": (
        lambda: SharedExpertsMoE(E, H, k=2, num_shared_experts=-1),
        "num_shared_experts",
    ),
    "ExpertChoiceMoE-num_experts": (lambda: ExpertChoiceMoE(0, H), "num_experts"),
    "ExpertChoiceMoE-capacity_factor": (lambda: ExpertChoiceMoE(E, H, capacity_factor=-1.0), "capacity_factor"),
    "SoftMoE-expert_units": (lambda: SoftMoE(E, 0), "expert_units"),
    "SoftMoE-slots_per_expert": (lambda: SoftMoE(E, H, slots_per_expert=0), "slots_per_expert"),
    "MoELayer-router": (lambda: MoELayer("top2", expert_units=H), "router"),
    "MoELayer-expert_units": (lambda: MoELayer(TopKRouter(E, k=2), expert_units=0), "expert_units"),
    "MoELayer-capacity_factor": (
        lambda: MoELayer(ExpertChoiceRouter(E), expert_units=H, capacity_factor=1.0, balance_loss=None),
        "capacity_factor",
    ),
    "MoELayer-balance_loss": (lambda: MoELayer(SoftRouter(E), expert_units=H, balance_loss="switch"), "balance_loss"),
    "MoELayer-num_shared_experts": (
        lambda: MoELayer(TopKRouter(E, k=2), expert_units=H, num_shared_experts=-1),
        "num_shared_experts",
    ),
    "TopKRouter-k": (lambda: TopKRouter(E, k=0), "k"),
    "ExpertChoiceRouter-capacity_factor": (lambda: ExpertChoiceRouter(E, capacity_factor=0.0), "capacity_factor"),
    "SoftRouter-slots_per_expert": (lambda: SoftRouter(E, slots_per_expert=0), "slots_per_expert"),
    "LinearExpertsMoE-output_units": (lambda: LinearExpertsMoE(E, 0), "output_units"),
    "LinearExpertsMoE-k": (lambda: LinearExpertsMoE(E, 3, k=E + 1), "k"),
    "LinearExpertsMoE-capacity_factor": (lambda: LinearExpertsMoE(E, 3, k=2, capacity_factor=-1.0), "capacity_factor"),
    "TransformerBlock-num_heads": (lambda: TransformerBlock(num_heads=0, ffn_units=H), "num_heads"),
    "TransformerBlock-dropout": (lambda: TransformerBlock(num_heads=2, ffn_units=H, dropout=1.0), "dropout"),
}


@pytest.mark.parametrize("make, argument", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_bad_argument_is_a_value_error_naming_it(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make()
