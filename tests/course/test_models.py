"""Model builders of the training comparison, and their parameter / FLOP accounting.

Costs are checked against numbers computed by hand for a tiny configuration
(input 6 -> width d=4, experts d -> h=5 -> d, E=3, 3 classes) and against
`model.count_params()`.
"""

import keras
import numpy as np
import pytest

from moe_tf import MixtureOfExperts, RoutingStats
from moe_tf.cost import model_cost
from moe_tf.course.models import MODELS, build_model, moe_layers

N_IN, D, H, E, CLASSES = 6, 4, 5, 3, 3

EMBED = N_IN * D + D  # 28 parameters, 2*6*4 = 48 FLOPs
HEAD = D * CLASSES + CLASSES  # 15 parameters, 2*4*3 = 24 FLOPs
EXPERT = D * H + H + H * D + D  # one expert d->h->d with biases: 49 parameters
ROUTER = D * E  # the router has no bias: 12 parameters
EXPERT_FLOPS = 2 * (D * H + H * D)  # 80
ROUTER_FLOPS = 2 * D * E  # 24

# (total params, active params, active FLOPs), by hand.
EXPECTED = {
    "dense": (EMBED + EXPERT + HEAD, EMBED + EXPERT + HEAD, 48 + EXPERT_FLOPS + 24),
    "dense-moe": (
        EMBED + ROUTER + E * EXPERT + HEAD,
        EMBED + ROUTER + E * EXPERT + HEAD,
        48 + ROUTER_FLOPS + E * EXPERT_FLOPS + 24,
    ),
    # Gaussian noisy top-2: the noise kernel (d*E) exists but is not used at inference.
    "topk-moe": (
        EMBED + 2 * ROUTER + E * EXPERT + HEAD,
        EMBED + ROUTER + 2 * EXPERT + HEAD,
        48 + ROUTER_FLOPS + 2 * EXPERT_FLOPS + 24,
    ),
    "switch": (
        EMBED + ROUTER + E * EXPERT + HEAD,
        EMBED + ROUTER + EXPERT + HEAD,
        48 + ROUTER_FLOPS + EXPERT_FLOPS + 24,
    ),
}


def tiny(model, **kwargs):
    kwargs = {"width": D, "expert_units": H, "num_experts": E, "k": 2, "dropout": 0.1, **kwargs}
    return build_model(model, N_IN, CLASSES, **kwargs)


def test_hand_computed_numbers():
    # The formula of the brief, written out: E experts of d->h->d plus a d*E router.
    assert E * (2 * D * H + H + D) + D * E == E * EXPERT + ROUTER == 159
    assert EXPECTED["topk-moe"] == (214, 153, 256)
    assert EXPECTED["dense"] == (92, 92, 152)


@pytest.mark.parametrize("name", MODELS)
def test_cost_matches_hand_count_and_count_params(name):
    model = tiny(name)
    cost = model_cost(model)
    assert (cost["total_params"], cost["active_params"], cost["active_flops"]) == EXPECTED[name]
    assert cost["total_params"] == model.count_params()


def test_dense_matches_one_expert_path():
    """The dense baseline is one expert path: Switch's FLOPs minus the router's."""
    dense, switch = model_cost(tiny("dense")), model_cost(tiny("switch"))
    assert switch["active_flops"] - dense["active_flops"] == ROUTER_FLOPS
    assert switch["active_params"] - dense["active_params"] == ROUTER


@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_active_cost_grows_with_k_only(k):
    cost = model_cost(tiny("topk-moe", k=k, noise="jitter"))
    assert cost["active_params"] == EMBED + ROUTER + k * EXPERT + HEAD
    assert cost["active_flops"] == 48 + ROUTER_FLOPS + k * EXPERT_FLOPS + 24
    assert cost["total_params"] == EMBED + ROUTER + E * EXPERT + HEAD  # jitter adds no weights


def test_realistic_mnist_config_against_count_params():
    for name in MODELS:
        model = build_model(name, 784, 10, width=256, expert_units=256, num_experts=8, k=2)
        cost = model_cost(model)
        assert cost["total_params"] == model.count_params()
        assert cost["active_params"] <= cost["total_params"]
    top2 = model_cost(build_model("topk-moe", 784, 10, noise="none"))
    per_expert = 2 * 256 * 256 + 256 + 256
    assert top2["active_params"] == (784 * 256 + 256) + 256 * 8 + 2 * per_expert + (256 * 10 + 10)
    assert top2["active_flops"] == 2 * (784 * 256 + 256 * 8 + 2 * 2 * 256 * 256 + 256 * 10)


def test_sequence_inputs_count_flops_per_token():
    seq, dim, units, experts = 7, 4, 6, 4
    inputs = keras.Input((seq, dim))
    h = MixtureOfExperts(experts, units, k=1, name="moe")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    cost = model_cost(model)
    moe_flops = 2 * (dim * experts + dim * units + units * dim)
    assert cost["active_flops"] == seq * (moe_flops + 2 * dim * 2)
    assert cost["total_params"] == model.count_params()


def test_unsupported_layer_is_named():
    inputs = keras.Input((8, 3))
    model = keras.Model(inputs, keras.layers.Conv1D(2, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match=r"layer 'conv' of type Conv1D"):
        model_cost(model)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"`model` must be one of .*received model='mlp'"):
        build_model("mlp", 784, 10)
    with pytest.raises(ValueError, match=r"`k` must satisfy 1 <= k <= num_experts=3; received k=4"):
        tiny("topk-moe", k=4)
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\); received dropout=1.0"):
        tiny("dense", dropout=1.0)
    with pytest.raises(ValueError, match=r"`balance_loss` must be one of"):
        tiny("topk-moe", balance_loss="gshard")


def test_model_structure():
    model = tiny("topk-moe", capacity_factor=1.5, balance_loss="shazeer", noise="gaussian")
    (moe,) = moe_layers(model)
    assert (moe.name, moe.k, moe.capacity_factor, moe.balance_loss, moe.router.noise) == (
        "moe",
        2,
        1.5,
        "shazeer",
        "gaussian",
    )
    (switch,) = moe_layers(tiny("switch", capacity_factor=1.25))
    assert (switch.k, switch.capacity_factor, switch.balance_loss, switch.balance_loss_weight) == (
        1,
        1.25,
        "switch",
        0.01,
    )
    assert switch.router.noise == "jitter" and not switch.router.renormalize
    (dense_moe,) = moe_layers(tiny("dense-moe"))
    assert dense_moe.k is None and dense_moe.capacity_factor is None
    assert moe_layers(tiny("dense")) == []
    # Residual: the classifier reads embed + block output.
    assert model.get_layer("residual").__class__.__name__ == "Add"


@pytest.mark.parametrize("name", MODELS)
def test_each_model_trains_a_step(name):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, N_IN)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    model = tiny(name, num_experts=4, seed=1)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    before = [w.copy() for w in model.get_weights()]
    moe = name != "dense"
    stats = RoutingStats() if moe else None
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[stats] if moe else [])
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    if moe:
        assert {"moe_dropped", "moe_max_load", "moe_entropy", "moe_balance_loss"} <= set(history.history)
        load = stats.history["moe"]
        assert load.shape == (2, 4)
        np.testing.assert_allclose(load.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert not any(key.startswith("moe") for key in history.history)
