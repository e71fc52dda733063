"""`layer.cost()` of every library layer, and `model_cost` over models made of them.

The parameter counts are checked against Keras's own count of the weights;
the FLOPs against formulas written out by hand here, and against the table
notebook 07 printed (its cost cell derived those numbers by hand and checked
them against Keras's parameter count).
"""

import math

import keras
import numpy as np
import pytest

from moe_tf.cost import model_cost
from moe_tf.layers import (
    ExpertChoiceMoE,
    LayerCost,
    LinearExpertsMoE,
    MixtureOfExperts,
    SharedExpertsMoE,
    SoftMoE,
)
from moe_tf.transformer import TokenAndPositionEmbedding, TransformerBlock


def trainable(layer):
    return sum(math.prod(w.shape) for w in layer.trainable_weights)


def built(layer, shape):
    layer.build(shape)
    return layer


D, H, L = 12, 16, 10  # width, expert hidden units, sequence length

LAYERS = {
    "dense mixture": lambda: built(MixtureOfExperts(4, H), (None, D)),
    "top-2 + gaussian noise": lambda: built(MixtureOfExperts(4, H, k=2, noise="gaussian"), (None, D)),
    "top-1, no bias, out 5": lambda: built(MixtureOfExperts(4, H, k=1, use_bias=False, output_units=5), (None, D)),
    "aux-free bias": lambda: built(MixtureOfExperts(4, H, k=2, bias_update_rate=1e-3), (None, D)),
    "linear experts": lambda: built(LinearExpertsMoE(4, 3, k=2), (None, D)),
    "expert choice": lambda: built(ExpertChoiceMoE(4, H, capacity_factor=2.0), (None, L, D)),
    "soft moe": lambda: built(SoftMoE(4, H, slots_per_expert=2), (None, L, D)),
    "soft moe, normalized": lambda: built(SoftMoE(4, H, slots_per_expert=2, normalize=True), (None, L, D)),
    "shared experts": lambda: built(SharedExpertsMoE(8, H, k=2, num_shared_experts=2), (None, L, D)),
    "transformer, dense ffn": lambda: built(TransformerBlock(2, ffn_units=H), (None, L, D)),
    "transformer, moe ffn": lambda: built(TransformerBlock(2, ffn=MixtureOfExperts(4, H, k=2)), (None, L, D)),
    "embedding": lambda: built(TokenAndPositionEmbedding(50, L, D), (None, L)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_total_params_are_the_trainable_weights(name):
    layer = LAYERS[name]()
    cost = layer.cost()
    assert isinstance(cost, LayerCost)
    assert cost.total_params == trainable(layer), f"{name}: cost() counts {cost.total_params}, Keras {trainable(layer)}"
    assert 0 < cost.active_params <= cost.total_params and cost.flops_per_token >= 0


def test_moe_cost_by_hand():
    expert = D * H + H + H * D + D
    dense, top2 = LAYERS["dense mixture"](), LAYERS["top-2 + gaussian noise"]()
    assert dense.cost() == (D * 4 + 4 * expert, D * 4 + 4 * expert, 2 * (D * 4 + 4 * 2 * D * H))
    # The noise kernel is a parameter that inference does not use.
    assert top2.cost() == (2 * D * 4 + 4 * expert, D * 4 + 2 * expert, 2 * (D * 4 + 2 * 2 * D * H))


def test_expert_choice_gives_a_token_E_c_over_n_experts():
    layer = LAYERS["expert choice"]()
    c = layer.capacity(L)  # ceil(10 * 2 / 4) = 5 tokens per expert
    paths = 4 * c / L  # 2.0 experts per token on average
    expert = D * H + H + H * D + D
    assert layer.cost() == (D * 4 + 4 * expert, D * 4 + paths * expert, 2 * (D * 4 + paths * 2 * D * H))
    assert layer.cost(group_size=20).active_params == D * 4 + 4 * layer.capacity(20) / 20 * expert


def test_transformer_block_by_hand():
    block = LAYERS["transformer, dense ffn"]()
    attention = 4 * (D * D + D)  # query, key, value and output projections with biases (2 heads of 6)
    norms = 2 * 2 * D
    ffn = D * H + H + H * D + D
    flops = 2 * 4 * D * D + 2 * 2 * L * D + 2 * 2 * D * H
    assert block.cost() == (attention + norms + ffn, attention + norms + ffn, flops)
    assert block.cost(sequence_length=2 * L).flops_per_token == flops + 2 * 2 * L * D


def test_a_length_is_needed_for_sequence_layers():
    block = built(TransformerBlock(2, ffn_units=H), (None, None, D))
    with pytest.raises(ValueError, match="sequence_length"):
        block.cost()
    assert block.cost(sequence_length=L).flops_per_token > 0


def _imdb_transformer(kind):
    """Notebook 07's classifier: 20,000-token vocabulary, 128 tokens, d = 32, 2 heads, FFN 128."""
    inputs = keras.Input((128,), dtype="int32")
    h = TokenAndPositionEmbedding(20_000, 128, 32)(inputs)
    ffn = {
        "dense": dict(ffn_units=128),
        "switch": dict(ffn=MixtureOfExperts(8, 128, k=1, capacity_factor=1.25, noise="jitter")),
        "top2": dict(ffn=MixtureOfExperts(16, 64, k=2, capacity_factor=1.25)),
    }[kind]
    h = TransformerBlock(2, **ffn)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


@pytest.mark.parametrize(
    "kind, total, active, flops",
    [
        ("dense", 656_866, 656_866, 5_243_008),
        ("switch", 715_586, 657_122, 5_308_544),
        ("top2", 716_098, 657_410, 5_374_080),
    ],
)
def test_model_cost_of_notebook_07s_models(kind, total, active, flops):
    """The numbers notebook 07 printed from its own hand count, now from `model_cost` alone."""
    model = _imdb_transformer(kind)
    assert model_cost(model) == {"total_params": total, "active_params": active, "active_flops": flops}
    assert model.count_params() == total


def test_model_cost_rounds_fractional_active_params():
    inputs = keras.Input((L, D))
    model = keras.Model(inputs, ExpertChoiceMoE(4, H, capacity_factor=1.0)(inputs))  # c = 3: 1.2 experts per token
    cost = model.layers[-1].cost()
    assert cost.active_params != int(cost.active_params)
    assert model_cost(model)["active_params"] == round(cost.active_params)
    assert model_cost(model)["active_flops"] == round(cost.flops_per_token * L)
    np.testing.assert_allclose(model.layers[-1].active_flops_per_token(), cost.flops_per_token)
