"""The one MoE pipeline: routers write plans, `MoELayer` runs any router, the named layers are MoELayer.

See docs/architecture.md. Per-layer maths is tested in the layers' own files;
here: the plans' fields, that the routers are plug-ins (a `MoELayer` given a
router equals the named layer with the same weights), that every router's
layer logs routing statistics that mean what they say, and the errors of
arguments that do not fit the router.
"""

import keras
import numpy as np
import pytest

from moe_tf.layers import (
    ExpertChoiceMoE,
    ExpertChoiceRouter,
    Experts,
    MixtureOfExperts,
    MoELayer,
    Router,
    SharedExpertsMoE,
    SoftMoE,
    SoftRouter,
    TopKRouter,
)
from moe_tf.plan import MaskPlan, SlotPlan


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# -- plans ---------------------------------------------------------------------------------------


def test_top_k_router_writes_a_slot_plan_with_capacity_slots():
    router = TopKRouter(4, k=2)
    plan = router(rand(10, 6), capacity=3)
    assert isinstance(plan, SlotPlan) and plan.num_experts == 4 and plan.capacity == 3
    indices, positions, keep = (np.asarray(v) for v in (plan.indices, plan.positions, plan.keep))
    assert indices.shape == positions.shape == keep.shape == (10, 2)
    slots = {(e, p) for e, p, k in zip(indices.ravel(), positions.ravel(), keep.ravel()) if k}
    assert len(slots) == keep.sum(), "two kept assignments never share a slot"
    assert all(p < 3 for _, p in slots)
    assert (np.bincount(indices[keep > 0], minlength=4) <= 3).all(), "no expert holds more than C"
    np.testing.assert_array_equal(np.asarray(plan.combine_weights), np.asarray(plan.gates) * keep)
    dense = np.asarray(plan.dense_gates())
    assert dense.shape == (10, 4) and ((dense > 0).sum(-1) == 2).all()


def test_dense_plan_has_every_expert_and_top1_choices_for_statistics():
    plan = TopKRouter(4)(rand(7, 5), token_mask=np.array([1, 1, 1, 1, 1, 0, 0], "float32"))
    assert plan.indices is None and plan.positions is None and plan.capacity is None
    np.testing.assert_array_equal(np.asarray(plan.dense_gates()), np.asarray(plan.probs))
    choices = np.asarray(plan.choices())  # [T, 1, E]
    assert choices.shape == (7, 1, 4) and choices[:5].sum() == 5 and choices[5:].sum() == 0


def test_mask_plans_of_expert_choice_and_soft_moe():
    x = rand(2, 8, 6)
    ec = ExpertChoiceRouter(4, capacity_factor=2.0)(x)  # c = 8 * 2 / 4 = 4
    assert isinstance(ec, MaskPlan) and ec.dispatch.shape == (2, 8, 4, 4) and ec.num_experts == 4
    d = np.asarray(ec.dispatch)
    assert set(np.unique(d)) <= {0.0, 1.0} and (d.sum(axis=1) == 1).all(), "each slot holds exactly one token"
    np.testing.assert_allclose(np.asarray(ec.combine), d * np.asarray(ec.combine).max(axis=1, keepdims=True))
    soft = SoftRouter(4, slots_per_expert=2)(x)
    np.testing.assert_allclose(np.asarray(soft.dispatch).sum(axis=1), 1.0, rtol=1e-5)  # each slot: over tokens
    np.testing.assert_allclose(np.asarray(soft.combine).sum(axis=(2, 3)), 1.0, rtol=1e-5)  # each token: over slots
    np.testing.assert_allclose(np.asarray(soft.probs).sum(-1), 1.0, rtol=1e-5)


# -- routers are plug-ins ------------------------------------------------------------------------


def _same_weights(a, b, x):
    a(x), b(x)
    b.set_weights(a.get_weights())
    return np.asarray(a(x)), np.asarray(b(x))


@pytest.mark.parametrize(
    "named, router",
    [
        (lambda: MixtureOfExperts(4, 8, k=2, capacity_factor=1.0), lambda: TopKRouter(4, k=2)),
        (lambda: MixtureOfExperts(4, 8), lambda: TopKRouter(4)),
        (lambda: ExpertChoiceMoE(4, 8, capacity_factor=2.0), lambda: ExpertChoiceRouter(4, capacity_factor=2.0)),
        (lambda: SoftMoE(4, 8, slots_per_expert=2), lambda: SoftRouter(4, slots_per_expert=2)),
    ],
    ids=["top2-capacity", "dense", "expert-choice", "soft"],
)
def test_moe_layer_with_a_router_is_the_named_layer(named, router):
    layer = named()
    assert isinstance(layer, MoELayer)
    r = router()
    kwargs = {"capacity_factor": layer.capacity_factor} if r.plan_kind == "slot" else {}
    generic = MoELayer(r, expert_units=8, balance_loss=layer.balance_loss, **kwargs)
    got, want = _same_weights(layer, generic, rand(3, 8, 6, seed=1))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_shared_experts_are_mixture_of_experts_plus_an_ungated_expert_on_every_token():
    x = rand(10, 6, seed=2)
    layer = SharedExpertsMoE(4, 8, k=2, num_shared_experts=1)
    assert isinstance(layer, MixtureOfExperts)
    y = np.asarray(layer(x))
    routed = MixtureOfExperts(4, 8, k=2, renormalize=False)
    routed(x)
    routed.set_weights(layer.get_weights()[: len(routed.get_weights())])
    shared = np.asarray(layer.shared(x))[0]  # [T, d]: the shared expert on every token
    np.testing.assert_allclose(y, np.asarray(routed(x)) + shared, rtol=1e-5, atol=1e-6)


def test_experts_read_a_shared_input_once_as_if_each_had_its_copy():
    experts = Experts(3, 5)
    x = rand(7, 4, seed=3)
    np.testing.assert_allclose(
        np.asarray(experts(x)), np.asarray(experts(np.broadcast_to(x, (3, 7, 4)))), rtol=1e-5, atol=1e-6
    )


# -- every router's layer logs statistics that mean what they say -----------------------------------


def test_expert_choice_logs_the_tokens_no_expert_took_as_dropped():
    layer = ExpertChoiceMoE(4, 8, capacity_factor=1.0, name="ec")
    x = rand(3, 8, 6, seed=4)
    layer(x)
    per_token = np.asarray(layer.route(x)["experts_per_token"])  # [3, 8]
    stats = {k: float(v) for k, v in layer.routing_metrics.result().items()}
    slots = 3 * 4 * 2  # groups * experts * c (c = 8 * 1 / 4)
    assert stats["ec_dropped"] == pytest.approx((per_token == 0).sum() / slots)
    assert stats["ec_max_load"] == pytest.approx(1.0), "every expert fills its c slots: balanced by construction"


def test_soft_moe_drops_nothing_and_logs_its_combine_entropy():
    layer = SoftMoE(4, 8, slots_per_expert=2, name="soft")
    x = rand(2, 8, 6, seed=5)
    layer(x)
    stats = {k: float(v) for k, v in layer.routing_metrics.result().items()}
    assert stats["soft_dropped"] == 0.0 and stats["soft_max_load"] == pytest.approx(1.0)
    probs = np.asarray(layer.routing_plan(x).probs).reshape(-1, 4)
    entropy = -(probs * np.log(probs)).sum(-1).mean()
    assert stats["soft_entropy"] == pytest.approx(entropy, rel=1e-5)


@pytest.mark.parametrize(
    "make", [lambda: ExpertChoiceMoE(4, 8, name="m"), lambda: SoftMoE(4, 8, name="m")], ids=["expert-choice", "soft"]
)
def test_mask_routed_layers_log_routing_metrics_in_fit(make):
    inputs = keras.Input((8, 6))
    model = keras.Model(inputs, make()(inputs))
    model.compile("adam", "mse")
    history = model.fit(rand(8, 8, 6), rand(8, 8, 6), epochs=1, verbose=0)
    assert {"m_max_load", "m_dropped", "m_entropy", "m_z_loss"} <= set(history.history)


# -- arguments that do not fit the router ------------------------------------------------------------


@pytest.mark.parametrize(
    "router, kwargs, match",
    [
        (lambda: "top-2", {}, "`router` must be a moe_tf.layers.Router"),
        (lambda: ExpertChoiceRouter(4), {"capacity_factor": 1.25}, "`capacity_factor` of a MoELayer"),
        (lambda: SoftRouter(4), {"dispatch": "gather"}, "`dispatch` chooses how token-choice routing"),
        (lambda: SoftRouter(4), {"balance_loss": "switch"}, "`balance_loss` balances token-choice routing"),
        (lambda: TopKRouter(4, k=2), {"dispatch": "scatter"}, "`dispatch` must be one of"),
        (lambda: TopKRouter(4, k=2), {"expert_units": 0}, "`expert_units` must be a positive integer"),
    ],
)
def test_arguments_that_do_not_fit_the_router_are_clear_errors(router, kwargs, match):
    kwargs = {"expert_units": 8, "balance_loss": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        MoELayer(router(), **kwargs)


def test_a_router_without_a_cost_says_so():
    class Fixed(Router):  # routes every token to expert 0: enough to run, no cost formula
        def call(self, inputs, training=None, token_mask=None, capacity=None):
            from keras import ops

            T = ops.shape(inputs)[0]
            probs = ops.one_hot(ops.zeros((T,), "int32"), self.num_experts)
            return SlotPlan(
                indices=ops.zeros((T, 1), "int32"),
                gates=ops.ones((T, 1)),
                keep=ops.ones((T, 1)),
                positions=None,
                capacity=None,
                probs=probs,
                logits=probs,
            )

    router = Fixed(3)
    router.k = 1
    layer = MoELayer(router, expert_units=4, balance_loss=None)
    assert layer(rand(5, 6)).shape == (5, 6)
    with pytest.raises(NotImplementedError, match="layer_cost"):
        layer.cost()


@pytest.mark.parametrize("make", [ExpertChoiceMoE, SoftMoE], ids=["expert-choice", "soft"])
def test_base_options_of_mask_routed_layers_survive_their_config(make):
    layer = make(4, 8, z_loss_weight=1e-3, num_shared_experts=1, shared_units=6)
    x = rand(2, 8, 6, seed=6)
    layer(x)
    clone = make.from_config(layer.get_config())
    clone(x)
    assert len(clone.losses) == len(layer.losses) == 1 and len(clone.weights) == len(layer.weights)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), rtol=1e-6)
