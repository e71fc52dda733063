"""Tests of `ExpertChoiceMoE` (Zhou et al. 2022): every expert picks exactly c tokens.

The layer is checked against an independent NumPy (float64) forward pass of
the paper's equations, for balance by construction, for the variable number
of experts per token, for the causality leak that rules it out for
autoregressive decoding, for masks, saving and XLA.
"""

import keras
import numpy as np
import pytest
from _helpers import np_softmax, rand

from moe_tf import ExpertChoiceMoE, MixtureOfExperts
from moe_tf.layers import expert_choice_capacity


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


def np_experts(experts, x):
    """Every expert on every token: `[n, d] -> [E, n, o]` (relu, biases)."""
    hidden = np.maximum(
        np.einsum("nd,edh->enh", x, experts.hidden_kernel.numpy()) + experts.hidden_bias.numpy()[:, None], 0
    )
    return np.einsum("enh,eho->eno", hidden, experts.output_kernel.numpy()) + experts.output_bias.numpy()[:, None]


def reference(layer, x):
    """NumPy expert choice on `[B, n, d]`: S = softmax(XW), I = top-c tokens per expert, y = sum G * FFN."""
    x = np.asarray(x, np.float64)
    out = []
    for group in x:
        scores = np_softmax(group @ layer.router.kernel.numpy())  # [n, E]
        c = layer.capacity(group.shape[0])
        idx = np.argsort(-scores.T, axis=-1, kind="stable")[:, :c]  # [E, c]
        expert_out = np_experts(layer.experts, group)  # [E, n, o]
        y = np.zeros((group.shape[0], expert_out.shape[-1]))
        for e in range(layer.num_experts):
            for t in idx[e]:
                y[t] += scores[t, e] * expert_out[e, t]
        out.append(y)
    return np.stack(out)


@pytest.mark.parametrize(
    "n, e, k, c", [(8, 4, 2, 4), (6, 4, 1, 2), (4, 2, 4, 4), (16, 8, 2, 4), (10, 4, 1.25, 4), (0, 4, 2, 0)]
)
def test_capacity_is_ceil_n_k_over_e_capped_at_n(n, e, k, c):
    assert expert_choice_capacity(n, e, k) == c


def test_matches_numpy_reference_rank3_and_rank2():
    layer = ExpertChoiceMoE(num_experts=4, expert_units=8, capacity_factor=2.0)
    x = rand(3, 10, 6, seed=1)
    np.testing.assert_allclose(layer(x).numpy(), reference(layer, x), rtol=1e-4, atol=1e-5)
    # A rank-2 input is one routing group of all its tokens.
    np.testing.assert_allclose(layer(x[0]).numpy(), reference(layer, x[:1])[0], rtol=1e-4, atol=1e-5)


def test_every_expert_takes_exactly_c_distinct_tokens():
    layer = ExpertChoiceMoE(num_experts=8, expert_units=8, capacity_factor=2.0)
    x = rand(5, 16, 6, seed=2)
    route = layer.route(x)
    idx = route["indices"].numpy()
    assert idx.shape == (5, 8, 4)  # c = 16 * 2 / 8
    for b in range(5):
        for e in range(8):
            assert len(set(idx[b, e])) == 4, "an expert picks c distinct tokens"
    per_token = route["experts_per_token"].numpy()
    np.testing.assert_array_equal(per_token.sum(axis=1), 8 * 4)  # E * c assignments per group
    np.testing.assert_allclose(route["probs"].numpy().sum(-1), 1.0, rtol=1e-5)
    gates = route["gates"].numpy()
    assert np.all(np.diff(gates, axis=-1) <= 1e-7), "each expert's tokens come best first"


def test_variable_experts_per_token_some_get_none():
    layer = ExpertChoiceMoE(num_experts=4, expert_units=8, capacity_factor=1.0)
    x = rand(1, 16, 6, seed=3)
    # A router that makes every token prefer expert 0 by a margin growing with the token's first feature.
    kernel = np.zeros((6, 4), "float32")
    kernel[0, 0] = 5.0
    layer(x)
    layer.router.kernel.assign(kernel)
    x = x.copy()
    x[0, :, 0] = np.linspace(-1, 1, 16)
    per_token = layer.route(x)["experts_per_token"].numpy()[0]
    assert per_token.max() > 1 and per_token.min() == 0, per_token
    y = layer(x).numpy()[0]
    np.testing.assert_array_equal(y[per_token == 0], 0.0)  # no expert: exactly 0


def test_causality_leak_a_later_token_changes_an_earlier_output():
    layer = ExpertChoiceMoE(num_experts=4, expert_units=8, capacity_factor=1.0)
    x = rand(1, 8, 6, seed=4)
    y = layer(x).numpy()
    route = layer.route(x)
    idx, probs = route["indices"].numpy()[0], route["probs"].numpy()[0]  # [E, c], [n, E]
    # Make the last token the best candidate of an expert whose picks it was not among: it evicts an earlier token.
    e = next(e for e in range(4) if 7 not in idx[e])
    changed = x.copy()
    changed[0, 7] = 0.0
    kernel = layer.router.kernel.numpy()
    changed[0, 7] = 20.0 * kernel[:, e] / np.linalg.norm(kernel[:, e])  # aligned with expert e's router column
    assert layer.route(changed)["probs"].numpy()[0, 7, e] > probs[:, e].max()
    y2 = layer(changed).numpy()
    assert np.abs(y2[0, :7] - y[0, :7]).max() > 1e-6, (
        "expert choice is not causal: earlier outputs depend on a later token"
    )
    # A token-choice MoE without capacity limit is per-token, hence causal.
    topk = MixtureOfExperts(num_experts=4, expert_units=8, k=2)
    np.testing.assert_allclose(topk(changed).numpy()[0, :7], topk(x).numpy()[0, :7], rtol=1e-6, atol=1e-7)


def test_one_token_at_a_time_every_expert_picks_it():
    layer = ExpertChoiceMoE(num_experts=8, expert_units=8, capacity_factor=2.0)
    route = layer.route(rand(3, 1, 6, seed=5))  # decoding: groups of one token
    np.testing.assert_array_equal(route["experts_per_token"].numpy(), 8.0)


def test_mask_padding_is_never_picked_and_outputs_zero():
    layer = ExpertChoiceMoE(num_experts=4, expert_units=8, capacity_factor=1.0)
    x = rand(2, 8, 6, seed=6)
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3], bool)
    y = layer(x, mask=mask).numpy()
    np.testing.assert_array_equal(y[1, 5:], 0.0)
    route = layer.route(x, mask=mask)
    per_token = route["experts_per_token"].numpy()
    np.testing.assert_array_equal(per_token[1, 5:], 0.0)
    noisy = x.copy()
    noisy[1, 5:] = 100.0
    np.testing.assert_allclose(layer(noisy, mask=mask).numpy(), y, rtol=1e-5, atol=1e-6)


def test_trains_under_jit_compile():
    inputs = keras.Input((8, 6))
    h = ExpertChoiceMoE(num_experts=4, expert_units=8)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    x, y = rand(32, 8, 6, seed=8), np.arange(32) % 2
    before = model.get_layer(index=1).router.kernel.numpy().copy()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.abs(model.get_layer(index=1).router.kernel.numpy() - before).max() > 0, "the router gets a gradient"


def test_active_flops_per_token():
    layer = ExpertChoiceMoE(num_experts=8, expert_units=32, capacity_factor=2.0)
    layer.build((None, 16, 10))
    # router 10*8, plus E*c/n = 8*4/16 = 2 expert paths of 10*32 + 32*10
    assert layer.active_flops_per_token() == 2 * (10 * 8 + 2 * (10 * 32 + 32 * 10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 0, "expert_units": 4}, "num_experts"),
        ({"num_experts": 4, "expert_units": 0}, "expert_units"),
        ({"num_experts": 4, "expert_units": 4, "capacity_factor": 0}, "capacity_factor"),
        ({"num_experts": 4, "expert_units": 4, "capacity_factor": None}, "capacity_factor"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExpertChoiceMoE(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rank 2 \[batch, dim\] or 3 \[batch, seq, dim\].*\(rank 4\)"):
        ExpertChoiceMoE(4, 4)(np.zeros((1, 2, 3, 4), "float32"))
    with pytest.raises(ValueError, match="num_tokens"):
        expert_choice_capacity(-1, 4, 1.0)
