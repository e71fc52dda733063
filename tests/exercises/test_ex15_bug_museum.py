"""Grades exercise 15: the bug museum. Each test shows one exhibit's symptom; its message says what went wrong."""

import keras
import numpy as np
import pytest
import tensorflow as tf

EXERCISE = "ex15_bug_museum"


def _rng(seed=0):
    return np.random.default_rng(seed)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mix(outputs, gates):
    """Reference mixture: outputs is a list of E arrays [B, d], gates [B, E]."""
    return np.einsum("be,ebd->bd", gates, np.stack(outputs))


# -- A: the selector ----------------------------------------------------------------


@pytest.mark.points(1)
def test_A_selector_outputs_a_distribution_over_experts(ex):
    """Exhibit A: softmax over a single unit is always 1; the selector must score every expert."""
    x = _rng(0).normal(size=(6, 5)).astype("float32")
    gates = np.asarray(ex.make_selector(3)(x))
    assert gates.shape == (6, 3), (
        f"the selector returned shape {gates.shape}, expected (6, 3): Dense(1, softmax) outputs 1.0 "
        "for every input, so it never chooses between experts"
    )
    np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-5, err_msg="gate rows must sum to 1")
    assert gates.std(axis=0).max() > 1e-4, "the gates do not depend on the input"


# -- B: fusion -----------------------------------------------------------------------


@pytest.mark.points(1)
def test_B_fusion_with_the_seeds_shapes_gives_the_weighted_sum(ex):
    """Exhibit B: with B = d = E = 2 the seed's fusion runs silently and mixes along the wrong axes."""
    outputs = [np.array([[1.0, 2.0], [3.0, 4.0]], "float32"), np.array([[10.0, 20.0], [30.0, 40.0]], "float32")]
    weights = np.array([[0.9, 0.1], [0.2, 0.8]], "float32")
    got = np.asarray(ex.fusion([tf.constant(o) for o in outputs], tf.constant(weights)))
    np.testing.assert_allclose(
        got,
        _mix(outputs, weights),
        rtol=1e-5,
        err_msg=(
            "fusion must return y[b] = sum_e weights[b, e] * outputs[e][b]; multiplying [E, B, d] by [B, E] "
            "broadcasts the weights over the feature axis instead"
        ),
    )


@pytest.mark.points(1)
def test_B_fusion_works_for_any_shape(ex):
    """Exhibit B: B=5 tokens, E=3 experts, d=4 features (the broken version crashes)."""
    rng = _rng(1)
    outputs = [rng.normal(size=(5, 4)).astype("float32") for _ in range(3)]
    weights = _softmax(rng.normal(size=(5, 3))).astype("float32")
    got = np.asarray(ex.fusion([tf.constant(o) for o in outputs], tf.constant(weights)))
    np.testing.assert_allclose(got, _mix(outputs, weights), rtol=1e-4, atol=1e-6)


# -- C: seed 001's concat + mean -----------------------------------------------------


@pytest.mark.points(1)
def test_C_seed001_output_is_a_softmax_gated_mixture(ex):
    """Exhibit C: concat * gate + mean-over-batch is not a mixture; softmax the logits and mix."""
    rng = _rng(2)
    outputs = [rng.normal(size=(4, 3)).astype("float32") for _ in range(2)]
    logits = rng.normal(size=(4, 2)).astype("float32")
    got = np.asarray(ex.seed001_moe_output([tf.constant(o) for o in outputs], tf.constant(logits)))
    assert got.shape == (4, 3), f"expected one mixed output per example, shape (4, 3); got {got.shape}"
    np.testing.assert_allclose(got, _mix(outputs, _softmax(logits)), rtol=1e-4, atol=1e-6)
    peaked = np.array([[50.0, 0.0]] * 4, "float32")  # the gate picks expert 0 for everyone
    got = np.asarray(ex.seed001_moe_output([tf.constant(o) for o in outputs], tf.constant(peaked)))
    np.testing.assert_allclose(got, outputs[0], atol=1e-5, err_msg="a confident gate must select its expert")


# -- D: seed 003's gateless classifier -----------------------------------------------


@pytest.mark.points(2)
def test_D_classifier_has_a_working_gate(ex):
    """Exhibit D: an input-dependent gate decides which expert the head sees."""
    model = ex.build_two_expert_classifier(input_dim=6, num_classes=3, units=8)
    names = [layer.name for layer in model.layers]
    assert "gate" in names, (
        f"no layer named 'gate' (layers: {names}): averaging the experts with fixed weights is an "
        "ensemble, not a mixture of experts"
    )
    x = _rng(3).normal(size=(5, 6)).astype("float32")
    gate, head = model.get_layer("gate"), model.get_layer("head")
    assert tuple(gate(x).shape) == (5, 2), "the gate must output one weight per expert"
    kernel = np.zeros_like(gate.get_weights()[0])
    for chosen, bias in [(0, [30.0, -30.0]), (1, [-30.0, 30.0])]:
        gate.set_weights([kernel, np.array(bias, "float32")])
        expected = np.asarray(head(model.get_layer(f"expert_{chosen}")(x)))
        np.testing.assert_allclose(
            np.asarray(model(x)),
            expected,
            atol=1e-5,
            err_msg=(f"with the gate forced onto expert_{chosen}, the model must equal head(expert_{chosen}(x))"),
        )


# -- E: seed 004's torch.mean ---------------------------------------------------------


@pytest.mark.points(1)
def test_E_seed004_uses_the_gates(ex):
    """Exhibit E: a mean over the experts ignores the router; the output must be gate-weighted."""
    rng = _rng(4)
    outputs = [rng.normal(size=(6, 1)).astype("float32") for _ in range(5)]
    gates = _softmax(3 * rng.normal(size=(6, 5))).astype("float32")
    got = np.asarray(ex.seed004_forward([tf.constant(o) for o in outputs], tf.constant(gates)))
    np.testing.assert_allclose(
        got,
        _mix(outputs, gates),
        rtol=1e-4,
        atol=1e-6,
        err_msg=("the output must be sum_e gates[:, e] * outputs[e], not the plain mean of the experts"),
    )


@pytest.mark.points(1)
def test_E_router_gets_a_gradient(ex):
    """Exhibit E: if the gates are not used, the router never learns (its gradient is None)."""
    outputs = [tf.constant(_rng(5).normal(size=(3, 1)).astype("float32")) for _ in range(4)]
    gates = tf.Variable(np.full((3, 4), 0.25, "float32"))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(ex.seed004_forward(outputs, gates))
    grad = tape.gradient(y, gates)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, "no gradient reaches the gates"


# -- F: the inclusive cumsum ----------------------------------------------------------


@pytest.mark.points(1)
def test_F_an_expert_keeps_exactly_capacity_tokens(ex):
    """Exhibit F: 6 tokens all on expert 0 with capacity 3: slots 0, 1, 2 are used, 3 tokens kept."""
    positions, keep = ex.capacity_positions(tf.constant([0, 0, 0, 0, 0, 0]), 2, 3)
    positions, keep = np.asarray(positions), np.asarray(keep)
    np.testing.assert_array_equal(
        positions,
        [0, 1, 2, 3, 4, 5],
        err_msg=("the first token sent to an expert must get slot 0 (an inclusive cumsum starts at 1)"),
    )
    np.testing.assert_array_equal(
        keep,
        [1, 1, 1, 0, 0, 0],
        err_msg=(f"capacity 3 must keep exactly 3 tokens, kept {int(keep.sum())}: one slot per expert is lost"),
    )


@pytest.mark.points(1)
def test_F_balanced_routing_at_capacity_drops_nothing(ex):
    """Exhibit F: 8 tokens, 4 experts, 2 each, capacity 2 (capacity factor 1): nothing may be dropped."""
    _, keep = ex.capacity_positions(tf.constant([0, 1, 2, 3, 3, 2, 1, 0]), 4, 2)
    assert float(np.sum(keep)) == 8, (
        f"balanced routing at capacity factor 1 dropped {8 - float(np.sum(keep)):.0f} tokens"
    )


# -- G: gates in the dispatch tensor ----------------------------------------------------


def _g_inputs():
    expert_index = tf.constant([0, 1, 0, 1])
    gate = tf.constant([0.9, 0.6, 0.3, 0.8])
    positions = tf.constant([0, 0, 1, 1])
    keep = tf.constant([1.0, 1.0, 1.0, 0.0])  # token 3 is dropped
    return expert_index, gate, positions, keep


@pytest.mark.points(1)
def test_G_dispatch_tensor_is_binary(ex):
    """Exhibit G: dispatch says where a token goes (0/1); combine carries the gate."""
    dispatch, combine = ex.dispatch_and_combine(*_g_inputs(), num_experts=2, capacity=2)
    dispatch, combine = np.asarray(dispatch), np.asarray(combine)
    assert set(np.unique(dispatch)) <= {0.0, 1.0}, (
        f"dispatch holds {sorted(set(np.unique(dispatch)))}: gate values in the dispatch tensor scale each expert's input"
    )
    assert dispatch.sum() == 3, "three tokens are kept, so dispatch must hold three ones"
    np.testing.assert_allclose(combine.sum(axis=(1, 2)), [0.9, 0.6, 0.3, 0.0], atol=1e-6)


@pytest.mark.points(1)
def test_G_nonlinear_expert_sees_the_raw_token(ex):
    """Exhibit G: with an expert f(z) = z**2, each kept token must come back as gate * f(x), not gate * f(gate * x)."""
    x = tf.constant([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [2.0, 2.0]])
    dispatch, combine = ex.dispatch_and_combine(*_g_inputs(), num_experts=2, capacity=2)
    expert_in = tf.einsum("tec,td->ecd", tf.cast(dispatch, tf.float32), x)
    y = np.asarray(tf.einsum("tec,ecd->td", tf.cast(combine, tf.float32), tf.square(expert_in)))
    gate = np.array([0.9, 0.6, 0.3, 0.0], "float32")[:, None]
    np.testing.assert_allclose(
        y,
        gate * np.square(np.asarray(x)),
        rtol=1e-5,
        err_msg=("the experts received gate * x: the gate is applied twice"),
    )


# -- H: dropped tokens -----------------------------------------------------------------


@pytest.mark.points(1)
def test_H_dropped_tokens_output_zero(ex):
    """Exhibit H: dropped tokens output exactly 0, so the residual x + moe(x) passes them on unchanged."""
    tokens = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    expert_outputs = tf.constant([[10.0, 10.0], [99.0, 99.0], [20.0, 20.0]])  # row 1 is garbage: dropped
    gate = tf.constant([0.5, 0.7, 0.25])
    keep = tf.constant([1.0, 0.0, 1.0])
    y = np.asarray(ex.combine_top1(tokens, expert_outputs, gate, keep))
    np.testing.assert_allclose(y[[0, 2]], [[5.0, 5.0], [5.0, 5.0]], err_msg="kept tokens: gate * expert output")
    np.testing.assert_array_equal(
        y[1],
        [0.0, 0.0],
        err_msg=(
            f"a dropped token returned {y[1]} (gate * x?); after the residual it becomes (1 + gate) * x instead of x"
        ),
    )


# -- I: the forgotten add_loss ----------------------------------------------------------


def _collapsed_router(ex, alpha):
    """A router that sends all 64 tokens to expert 0 (feature 0 is a constant 1 with a large weight on expert 0)."""
    layer = ex.BalancedRouter(4, alpha=alpha)
    layer.build((None, 8))
    kernel = 0.3 * _rng(7).normal(size=(8, 4)).astype("float32")
    kernel[0] = [3.0, 0.0, 0.0, 0.0]
    layer.set_weights([kernel])
    x = _rng(6).normal(size=(64, 8)).astype("float32")
    x[:, 0] = 1.0
    return layer, tf.constant(x)


@pytest.mark.points(1)
def test_I_balance_loss_is_in_layer_losses(ex):
    """Exhibit I: the loss must be handed to Keras with add_loss, or no optimiser ever sees it."""
    layer, x = _collapsed_router(ex, alpha=0.01)
    probs = np.asarray(layer(x))
    assert len(layer.losses) == 1, (
        f"layer.losses has {len(layer.losses)} entries after a call: the balance loss was computed, never added"
    )
    f = np.bincount(probs.argmax(-1), minlength=4) / len(probs)
    np.testing.assert_allclose(float(layer.losses[0]), 0.01 * 4 * np.sum(f * probs.mean(0)), rtol=1e-5)


@pytest.mark.points(1)
def test_I_training_on_the_losses_rebalances_a_collapsed_router(ex):
    """Exhibit I: minimising layer.losses moves tokens off the overloaded expert (nothing happens if it is empty)."""
    layer, x = _collapsed_router(ex, alpha=1.0)
    assert np.asarray(layer(x)).argmax(-1).tolist() == [0] * 64  # collapsed to start with
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    for _ in range(20):
        with tf.GradientTape() as tape:
            layer(x)
            loss = tf.add_n(layer.losses) if layer.losses else tf.zeros(())
        grads = tape.gradient(loss, layer.trainable_weights)
        if all(g is None for g in grads):
            break
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
    top_load = np.bincount(np.asarray(layer(x)).argmax(-1), minlength=4).max() / 64
    assert top_load < 0.5, f"after training, the busiest expert still takes {top_load:.0%} of the tokens"


# -- further symptoms: each exhibit fixed at its cause, not at the symptom the first tests show ---------------


@pytest.mark.points(1)
def test_B_fusion_uses_the_weights_as_given(ex):
    """Exhibit B: y[b] = sum_e weights[b, e] * outputs[e][b] for any weights, normalised or not (B=3, E=2, d=4)."""
    rng = _rng(11)
    outputs = [rng.normal(size=(3, 4)).astype("float32") for _ in range(2)]
    weights = np.array([[2.0, 0.5], [0.0, 3.0], [1.0, 1.0]], "float32")  # rows do not sum to 1
    got = np.asarray(ex.fusion([tf.constant(o) for o in outputs], tf.constant(weights)))
    np.testing.assert_allclose(
        got,
        _mix(outputs, weights),
        rtol=1e-5,
        atol=1e-6,
        err_msg=(
            "fusion must compute sum_e weights[b, e] * outputs[e][b] with the weights exactly as given (the docstring's "
            "formula): normalising or softmaxing them inside fusion changes the answer"
        ),
    )


@pytest.mark.points(1)
def test_C_extreme_logits_select_their_expert(ex):
    """Exhibit C: softmax of logits like 200 or 1000 must not overflow (exp(200) is inf in float32)."""
    rng = _rng(12)
    outputs = [rng.normal(size=(3, 2)).astype("float32") for _ in range(2)]
    logits = np.array([[200.0, 0.0], [0.0, -200.0], [-1000.0, 1000.0]], "float32")
    got = np.asarray(ex.seed001_moe_output([tf.constant(o) for o in outputs], tf.constant(logits)))
    expected = np.stack([outputs[0][0], outputs[0][1], outputs[1][2]])
    assert np.all(np.isfinite(got)), (
        f"large logits gave {got.tolist()}: exp(200) overflows float32, and inf / inf is NaN; use a stable softmax "
        "(tf.nn.softmax subtracts the row maximum)"
    )
    np.testing.assert_allclose(
        got,
        expected,
        atol=1e-6,
        err_msg=("logits (200, 0), (0, -200), (-1000, 1000) put all the weight on experts 0, 0, 1"),
    )


@pytest.mark.points(1)
def test_F_positions_count_per_expert(ex):
    """Exhibit F: each expert numbers its own tokens from 0; positions are int32, keep is float32 0/1."""
    positions, keep = ex.capacity_positions(tf.constant([1, 0, 1, 1, 0, 2]), 3, 2)
    assert tf.as_dtype(positions.dtype) == tf.int32 and tf.as_dtype(keep.dtype) == tf.float32, (
        f"positions must be int32 and keep float32 (as documented); got {positions.dtype} and {keep.dtype}"
    )
    np.testing.assert_array_equal(
        np.asarray(positions),
        [0, 0, 1, 2, 1, 0],
        err_msg=(
            "expert_index [1, 0, 1, 1, 0, 2]: expert 1 gets tokens 0, 2, 3 (slots 0, 1, 2), expert 0 tokens 1, 4 "
            "(slots 0, 1), expert 2 token 5 (slot 0)"
        ),
    )
    np.testing.assert_array_equal(
        np.asarray(keep), [1, 1, 1, 0, 1, 1], err_msg=("capacity 2: only token 3 (slot 2 of expert 1) is dropped")
    )


@pytest.mark.points(2)
def test_H_garbage_in_dropped_rows_does_not_leak(ex):
    """Exhibit H: a dropped row's expert output is garbage (inf, NaN): the output is exactly 0 there, never NaN."""
    tokens = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    expert_outputs = tf.constant([[10.0, 10.0], [np.inf, -np.inf], [20.0, 20.0], [np.nan, np.nan]])
    gate = tf.constant([0.5, 0.7, 0.25, 0.9])
    keep = tf.constant([1.0, 0.0, 1.0, 0.0])
    y = np.asarray(ex.combine_top1(tokens, expert_outputs, gate, keep))
    np.testing.assert_array_equal(
        y[[1, 3]],
        np.zeros((2, 2)),
        err_msg=(
            f"dropped tokens whose expert rows hold inf and NaN returned {y[[1, 3]].tolist()}: multiplying garbage by "
            "keep = 0 gives NaN (0 * inf); select the kept rows (tf.where) so nothing from a dropped row leaks"
        ),
    )
    np.testing.assert_allclose(y[[0, 2]], [[5.0, 5.0], [5.0, 5.0]], err_msg="kept tokens: gate * expert output")
    # With finite garbage: a dropped token gives the router no gradient, and the tokens none at all.
    expert_outputs = tf.constant([[10.0, 10.0], [99.0, -99.0], [20.0, 20.0], [5.0, 5.0]])
    gate = tf.Variable([0.5, 0.7, 0.25, 0.9])
    tokens = tf.Variable(tokens)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(ex.combine_top1(tokens, expert_outputs, gate, keep))
    grad_gate, grad_tokens = tape.gradient(total, [gate, tokens])
    np.testing.assert_allclose(
        np.asarray(grad_gate),
        [20.0, 0.0, 40.0, 0.0],
        err_msg=(
            "d(sum y)/d gate must be the expert output's sum for kept tokens and 0 for dropped ones: no expert processed "
            "a dropped token, so the router must not learn from it"
        ),
    )
    assert grad_tokens is None or np.allclose(np.asarray(grad_tokens), 0.0), (
        "the layer's output must not depend on the tokens directly (the residual around the layer carries them)"
    )
