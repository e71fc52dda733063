"""Tests of the Keras layers: `Experts`, `TopKRouter` and `MixtureOfExperts`.

Most numerical checks compare the layers with an independent NumPy (float64)
reimplementation of the documented maths (`reference_moe` below): router
softmax, top-k on the logits (ties to the lower index), renormalised or raw
gates, capacity `ceil(cf * k * T / E)` filled first choices first and then in
token order, and E independent two-layer MLPs.
"""

import math
import re
from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import np_softmax, rand
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

from moe_tf import Experts, MixtureOfExperts, TopKRouter

PROPERTY = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- fixtures and helpers ---------------------------------------------------------


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


def np_experts(experts, tokens):
    """Every expert of an `Experts` layer on every token: `[T, d] -> [E, T, out]`."""
    w1 = experts.hidden_kernel.numpy().astype(np.float64)
    w2 = experts.output_kernel.numpy().astype(np.float64)
    hidden = np.einsum("td,edh->eth", tokens, w1)
    if experts.use_bias:
        hidden = hidden + experts.hidden_bias.numpy()[:, None, :]
    hidden = np.maximum(hidden, 0.0)  # relu, the default activation
    out = np.einsum("eth,eho->eto", hidden, w2)
    if experts.use_bias:
        out = out + experts.output_bias.numpy()[:, None, :]
    return out


def reference_capacity(num_tokens, num_experts, k, capacity_factor):
    if capacity_factor is None:
        return num_tokens
    # The tests use capacity factors with at most two decimals, which the library reads exactly.
    exact = Fraction(repr(float(capacity_factor))) * k * num_tokens / num_experts
    return max(1, min(num_tokens, math.ceil(exact)))


def reference_keep(indices, num_experts, capacity, token_mask=None):
    """Slots go to all first choices (in token order), then all second choices..."""
    num_tokens, k = indices.shape
    keep = np.zeros((num_tokens, k))
    used = np.zeros(num_experts, dtype=int)
    for j in range(k):
        for t in range(num_tokens):
            if token_mask is not None and not token_mask[t]:
                continue
            e = indices[t, j]
            if used[e] < capacity:
                keep[t, j] = 1.0
                used[e] += 1
    return keep


def reference_route(layer, tokens):
    logits = tokens @ layer.router.kernel.numpy().astype(np.float64)
    probs = np_softmax(logits)
    if layer.k is None:
        return logits, probs, None, None
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, : layer.k]
    if layer.router.renormalize:
        top_gates = np_softmax(np.take_along_axis(logits, indices, axis=-1))
    else:
        top_gates = np.take_along_axis(probs, indices, axis=-1)
    return logits, probs, indices, top_gates


def reference_moe(layer, x, mask=None):
    """NumPy float64 forward pass of a built `MixtureOfExperts` (no noise)."""
    x = np.asarray(x, np.float64)
    tokens = x.reshape(-1, x.shape[-1])
    num_tokens = tokens.shape[0]
    token_mask = None if mask is None else np.asarray(mask).reshape(-1).astype(bool)
    _, probs, indices, top_gates = reference_route(layer, tokens)
    expert_out = np_experts(layer.experts, tokens)  # [E, T, out]
    if layer.k is None:
        gates = probs if token_mask is None else probs * token_mask[:, None]
        y = np.einsum("te,eto->to", gates, expert_out)
    else:
        capacity = reference_capacity(num_tokens, layer.num_experts, layer.k, layer.capacity_factor)
        keep = reference_keep(indices, layer.num_experts, capacity, token_mask)
        y = np.zeros((num_tokens, expert_out.shape[-1]))
        for j in range(layer.k):
            chosen = expert_out[indices[:, j], np.arange(num_tokens)]  # [T, out]
            y += (keep[:, j] * top_gates[:, j])[:, None] * chosen
    return y.reshape(x.shape[:-1] + (expert_out.shape[-1],))


def reference_dropped(layer, tokens):
    """Assignments over capacity: sum_e max(0, n_e - C)."""
    _, _, indices, _ = reference_route(layer, tokens)
    counts = np.bincount(indices.reshape(-1), minlength=layer.num_experts)
    capacity = reference_capacity(tokens.shape[0], layer.num_experts, layer.k, layer.capacity_factor)
    return int(np.maximum(counts - capacity, 0).sum())


def set_collapsed_router(layer, dim, first=0, second=1):
    """Router kernel making every positive token pick `first`, then `second`."""
    kernel = np.zeros((dim, layer.num_experts), "float32")
    kernel[:, first] = 3.0
    kernel[:, second] = 2.0
    layer.router.kernel.assign(kernel)


def loss_values(layer):
    return [float(ops.convert_to_numpy(v)) for v in layer.losses]


def cv_squared(v):
    v = np.asarray(v, np.float64)
    return v.var() / (v.mean() ** 2 + 1e-10)


# -- Experts -----------------------------------------------------------------------


@pytest.mark.parametrize("output_units", [None, 3])
def test_experts_output_shape(output_units):
    layer = Experts(num_experts=4, units=6, output_units=output_units)
    y = layer(rand(4, 7, 5))
    out = 5 if output_units is None else output_units
    assert tuple(y.shape) == (4, 7, out), f"expected [E, N, out] = (4, 7, {out}), got {tuple(y.shape)}"
    assert layer.compute_output_shape((4, 7, 5)) == (4, 7, out)


def test_experts_match_reference_and_are_independent():
    E, N, d, h = 3, 5, 4, 6
    layer = Experts(E, h, kernel_initializer=keras.initializers.GlorotUniform(seed=3), bias_initializer="random_normal")
    x = rand(E, N, d, seed=1)
    y0 = ops.convert_to_numpy(layer(x))
    for e in range(E):
        expected = np_experts(layer, x[e])[e]
        np.testing.assert_allclose(y0[e], expected, rtol=1e-5, atol=1e-5, err_msg=f"expert {e} != its own MLP")

    # Changing expert 0's weights changes expert 0's outputs only.
    layer.hidden_kernel.assign(layer.hidden_kernel.numpy() + np.eye(E)[:, :1, None] * 0.5)
    layer.output_bias.assign(layer.output_bias.numpy() + np.eye(E)[:, :1] * 0.25)
    y1 = ops.convert_to_numpy(layer(x))
    assert np.abs(y1[0] - y0[0]).max() > 1e-3, "changing expert 0's weights should change expert 0's outputs"
    np.testing.assert_array_equal(y1[1:], y0[1:], err_msg="other experts' outputs must not change")

    # Changing expert 2's input changes expert 2's outputs only.
    x2 = x.copy()
    x2[2] += 1.0
    y2 = ops.convert_to_numpy(layer(x2))
    np.testing.assert_array_equal(y2[:2], y1[:2], err_msg="expert 2's input leaked into other experts")
    assert np.abs(y2[2] - y1[2]).max() > 1e-3


@pytest.mark.parametrize("initializer", ["glorot_uniform", keras.initializers.GlorotUniform(seed=11)])
def test_experts_initialisation_scale_is_per_expert(initializer):
    E, d, h = 8, 64, 96
    layer = Experts(E, h, kernel_initializer=initializer)
    layer.build((E, None, d))
    expected = math.sqrt(2.0 / (d + h))  # Glorot on one expert's [d, h]; not sqrt(2 / (E*d + h))
    for name in ("hidden_kernel", "output_kernel"):
        stds = getattr(layer, name).numpy().reshape(E, -1).std(axis=1)
        np.testing.assert_allclose(
            stds, expected, rtol=0.05, err_msg=f"{name}: each expert's std should be sqrt(2/(d+h)) = {expected:.4f}"
        )


def test_experts_seeded_initializer_gives_distinct_reproducible_experts():
    E, d, h = 4, 5, 6
    make = lambda: Experts(E, h, kernel_initializer=keras.initializers.GlorotUniform(seed=7))  # noqa: E731
    a, b = make(), make()
    a.build((E, None, d))
    b.build((E, None, d))
    kernel = a.hidden_kernel.numpy()
    for i in range(E):
        for j in range(i + 1, E):
            assert np.abs(kernel[i] - kernel[j]).max() > 1e-3, f"experts {i} and {j} got identical initial kernels"
    np.testing.assert_array_equal(kernel, b.hidden_kernel.numpy(), err_msg="same seed should give the same weights")


def test_experts_default_initializer_gives_distinct_experts():
    layer = Experts(4, 6)  # kernel_initializer="glorot_uniform", no seed
    layer.build((4, None, 5))
    kernel = layer.hidden_kernel.numpy()
    assert np.abs(kernel[0] - kernel[1]).max() > 1e-3, "experts 0 and 1 start with identical kernels"


@pytest.mark.parametrize(
    "E,d,h,output_units,use_bias",
    [(3, 5, 7, None, True), (2, 4, 8, 3, True), (5, 6, 2, 9, False), (1, 3, 3, None, True)],
)
def test_experts_parameter_count(E, d, h, output_units, use_bias):
    layer = Experts(E, h, output_units=output_units, use_bias=use_bias)
    layer.build((E, None, d))
    o = d if output_units is None else output_units
    expected = E * (d * h + h * o + ((h + o) if use_bias else 0))
    assert layer.count_params() == expected, f"expected E*(d*h + h + h*o + o) = {expected} parameters"


# -- TopKRouter ----------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 6])
def test_router_topk_gates_sparse_and_renormalised(k):
    E = 6
    router = TopKRouter(E, k=k)
    x = rand(10, 5, seed=2)
    out = router(x)
    logits = ops.convert_to_numpy(out.logits)
    gates = ops.convert_to_numpy(out.dense_gates())
    indices = ops.convert_to_numpy(out.indices)
    np.testing.assert_allclose(logits, x @ router.kernel.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(indices, np.argsort(-logits, axis=-1, kind="stable")[:, :k])
    chosen = np.zeros_like(gates, dtype=bool)
    np.put_along_axis(chosen, indices, True, axis=-1)
    assert np.all(gates[~chosen] == 0.0), "gates must be exactly 0 outside the top k"
    np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-6, err_msg="top-k gates (k>=2) should sum to 1")
    np.testing.assert_allclose(
        np.take_along_axis(gates, indices, -1), np_softmax(np.take_along_axis(logits, indices, -1)), rtol=1e-5
    )
    assert router.renormalize is True


def test_router_top1_keeps_raw_probability_by_default():
    router = TopKRouter(5, k=1)
    out = router(rand(8, 4, seed=3) * 3)
    assert router.renormalize is False, "k=1 should default to renormalize=False (Switch)"
    gates, probs = ops.convert_to_numpy(out.dense_gates()), ops.convert_to_numpy(out.probs)
    np.testing.assert_allclose(gates.max(-1), probs.max(-1), rtol=1e-6, err_msg="top-1 gate should be max prob")
    assert np.all(gates.sum(-1) < 1.0), "a top-1 gate must be the full softmax probability p < 1"
    assert np.all((gates > 0).sum(-1) == 1)

    renorm = TopKRouter(5, k=1, renormalize=True)
    g = ops.convert_to_numpy(renorm(rand(8, 4, seed=3)).dense_gates())
    np.testing.assert_allclose(g.sum(-1), 1.0, atol=1e-6, err_msg="renormalised top-1 gate should be 1")


def test_router_dense_returns_softmax_probs():
    router = TopKRouter(4, k=None)
    x = rand(7, 3, seed=4)
    out = router(x)
    expected = np_softmax(x.astype(np.float64) @ router.kernel.numpy())
    np.testing.assert_allclose(ops.convert_to_numpy(out.dense_gates()), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ops.convert_to_numpy(out.dense_gates()), ops.convert_to_numpy(out.probs))
    assert out.indices is None


def test_router_gaussian_noise_only_in_training():
    router = TopKRouter(6, k=2, noise="gaussian", noise_epsilon=1e-2, seed=5)
    x = rand(12, 4, seed=5)
    inf1, inf2 = router(x, training=False), router(x, training=False)
    clean = x @ router.kernel.numpy()
    np.testing.assert_array_equal(ops.convert_to_numpy(inf1.logits), ops.convert_to_numpy(inf2.logits))
    np.testing.assert_allclose(ops.convert_to_numpy(inf1.logits), clean, rtol=1e-5, atol=1e-6)
    assert inf1.noise_stddev is None, "no noise scale in inference"

    tr1, tr2 = router(x, training=True), router(x, training=True)
    l1, l2 = ops.convert_to_numpy(tr1.logits), ops.convert_to_numpy(tr2.logits)
    assert np.abs(l1 - l2).max() > 1e-3, "training-time noise should differ between calls"
    assert np.abs(l1 - clean).max() > 1e-3, "training logits should carry noise"
    np.testing.assert_allclose(ops.convert_to_numpy(tr1.clean_logits), clean, rtol=1e-5, atol=1e-6)
    stddev = tr1.noise_stddev
    assert stddev is not None and tuple(stddev.shape) == (12, 6), "noise_stddev [T, E] expected in training"
    # W_noise starts at zero: stddev = softplus(0) + noise_epsilon.
    np.testing.assert_allclose(ops.convert_to_numpy(stddev), math.log(2.0) + 1e-2, rtol=1e-5)


def test_router_jitter_changes_logits_only_in_training():
    router = TopKRouter(6, k=2, noise="jitter", noise_epsilon=0.1)
    x = rand(12, 4, seed=6)
    inf = ops.convert_to_numpy(router(x, training=False).logits)
    clean = x @ router.kernel.numpy()
    np.testing.assert_allclose(inf, clean, rtol=1e-5, atol=1e-6, err_msg="no jitter in inference")
    tr1 = router(x, training=True)
    tr2 = router(x, training=True)
    l1, l2 = ops.convert_to_numpy(tr1.logits), ops.convert_to_numpy(tr2.logits)
    assert np.abs(l1 - clean).max() > 1e-4, "jitter should change training logits"
    assert np.abs(l1 - l2).max() > 1e-4, "jitter should differ between training calls"
    assert tr1.noise_stddev is None


def test_router_jitter_clean_logits_are_noise_free():
    router = TopKRouter(6, k=2, noise="jitter", noise_epsilon=0.1)
    x = rand(12, 4, seed=6)
    out = router(x, training=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out.clean_logits),
        x @ router.kernel.numpy(),
        rtol=1e-5,
        atol=1e-6,
        err_msg="clean_logits should be x @ W without the jitter",
    )


def test_router_is_float32_under_mixed_float16(mixed_float16):
    router = TopKRouter(4, k=2, noise="gaussian")
    out = router(rand(6, 3).astype("float16"), training=True)
    assert router.kernel.dtype == "float32" and router.noise_kernel.dtype == "float32"
    assert router.compute_dtype == "float32", f"router should compute in float32, got {router.compute_dtype}"
    for key in ("logits", "clean_logits", "noise_stddev", "probs", "gates"):
        value = getattr(out, key)
        assert value.dtype == tf.float32, f"router output {key} should be float32, got {value.dtype}"
    moe = MixtureOfExperts(4, 8, k=2)
    moe(rand(2, 3, 5))
    assert moe.router.kernel.dtype == "float32" and moe.router.compute_dtype == "float32"
    assert moe.compute_dtype == "float16" and moe.experts.compute_dtype == "float16"


# -- MixtureOfExperts: equivalences ---------------------------------------------------


@pytest.mark.parametrize("shape", [(9, 5), (3, 4, 5)])
@pytest.mark.parametrize("dispatch", ["gather", "einsum"])
def test_topk_with_k_equal_E_equals_dense_mixture(shape, dispatch):
    E = 4
    x = rand(*shape, seed=7)
    dense = MixtureOfExperts(E, 8, k=None)
    sparse = MixtureOfExperts(E, 8, k=E, capacity_factor=None, dispatch=dispatch)
    y_dense = ops.convert_to_numpy(dense(x))
    sparse(x)
    sparse.set_weights(dense.get_weights())
    y_sparse = ops.convert_to_numpy(sparse(x))
    assert y_dense.shape == shape
    np.testing.assert_allclose(
        y_dense, reference_moe(dense, x), rtol=1e-5, atol=1e-5, err_msg="dense != sum_i p_i(x) f_i(x)"
    )
    np.testing.assert_allclose(y_sparse, y_dense, rtol=1e-5, atol=1e-5, err_msg="top-E without capacity != dense")


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")  # E = 1
@PROPERTY
@given(
    batch=st.integers(1, 3),
    seq=st.one_of(st.none(), st.integers(1, 4)),
    num_experts=st.integers(1, 5),
    k_frac=st.floats(0.0, 1.0),
    capacity_factor=st.one_of(st.none(), st.integers(50, 125).map(lambda c: c / 100)),
    seed=st.integers(0, 2**16),
)
def test_einsum_and_gather_agree_with_reference(batch, seq, num_experts, k_frac, capacity_factor, seed):
    k = min(num_experts, 1 + int(k_frac * num_experts))
    d = 3
    shape = (batch, d) if seq is None else (batch, seq, d)
    x = rand(*shape, seed=seed) * 2.0
    layers = {}
    for dispatch in ("gather", "einsum"):
        layers[dispatch] = MixtureOfExperts(num_experts, 5, k=k, capacity_factor=capacity_factor, dispatch=dispatch)
        layers[dispatch](x)
    layers["einsum"].set_weights(layers["gather"].get_weights())

    outputs, grads = {}, {}
    x_var = tf.constant(x)
    for name, layer in layers.items():
        layer.routing_metrics.reset_state()
        with tf.GradientTape() as tape:
            tape.watch(x_var)
            y = layer(x_var)
            loss = ops.sum(ops.square(y)) + ops.sum(y)
        outputs[name] = ops.convert_to_numpy(y)
        grads[name] = [ops.convert_to_numpy(g) for g in tape.gradient(loss, [x_var] + layer.trainable_weights)]
        assert float(layer.routing_metrics.dropped.numpy()) == reference_dropped(layer, x.reshape(-1, d)), (
            f"{name}: dropped assignments should be sum_e max(0, n_e - C)"
        )

    expected = reference_moe(layers["gather"], x)
    np.testing.assert_allclose(outputs["gather"], expected, rtol=1e-4, atol=1e-5, err_msg="gather != reference")
    np.testing.assert_allclose(outputs["einsum"], expected, rtol=1e-4, atol=1e-5, err_msg="einsum != reference")
    np.testing.assert_allclose(outputs["einsum"], outputs["gather"], rtol=1e-5, atol=1e-6)
    for g_einsum, g_gather in zip(grads["einsum"], grads["gather"]):
        np.testing.assert_allclose(g_einsum, g_gather, rtol=1e-4, atol=1e-5, err_msg="gradients differ by dispatch")


@pytest.mark.parametrize("dispatch", ["gather", "einsum"])
def test_dispatch_agree_with_drops(dispatch):
    """A forced case with many drops: each dispatch equals the reference and drops happen."""
    E, k, T, d = 4, 2, 12, 3
    layer = MixtureOfExperts(E, 6, k=k, capacity_factor=0.5, dispatch=dispatch)
    x = rand(T, d, seed=8, low=0.1, high=1.0)
    layer(x)
    set_collapsed_router(layer, d)
    layer.routing_metrics.reset_state()
    y = ops.convert_to_numpy(layer(x))
    capacity = reference_capacity(T, E, k, 0.5)  # ceil(0.5 * 2 * 12 / 4) = 3
    assert capacity == 3
    assert float(layer.routing_metrics.dropped.numpy()) == 2 * (T - capacity), "expected 2*(T-C) drops"
    np.testing.assert_allclose(y, reference_moe(layer, x), rtol=1e-5, atol=1e-6)


# -- capacity and dropped tokens -------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["gather", "einsum"])
@pytest.mark.parametrize("capacity_factor", [0.25, 0.5, 1.0])
def test_fully_dropped_tokens_output_exactly_zero(dispatch, capacity_factor):
    E, k, T, d = 4, 2, 16, 5
    layer = MixtureOfExperts(E, 8, k=k, capacity_factor=capacity_factor, dispatch=dispatch)
    x = rand(T, d, seed=9, low=0.1, high=1.0)
    layer(x)
    set_collapsed_router(layer, d)  # every token: expert 0 first, expert 1 second
    y = ops.convert_to_numpy(layer(x))
    capacity = reference_capacity(T, E, k, capacity_factor)
    assert capacity < T, "the test needs drops"
    assert np.all(y[capacity:] == 0.0), f"tokens {capacity}.. lose both choices and must output exactly 0.0"
    assert np.all(np.abs(y[:capacity]).sum(-1) > 0), "kept tokens should have a nonzero output"


@PROPERTY
@given(
    num_experts=st.integers(2, 5),
    k_frac=st.floats(0.0, 1.0),
    tokens=st.integers(2, 14),
    capacity_factor=st.integers(30, 150).map(lambda c: c / 100),
    dispatch=st.sampled_from(["gather", "einsum"]),
    seed=st.integers(0, 2**16),
)
def test_kept_assignments_respect_capacity_and_priority(num_experts, k_frac, tokens, capacity_factor, dispatch, seed):
    """Experts that output the unit vector e_e reveal exactly which (token, expert) pairs were kept."""
    E = num_experts
    k = min(E, 1 + int(k_frac * E))
    layer = MixtureOfExperts(E, 4, k=k, capacity_factor=capacity_factor, output_units=E, dispatch=dispatch)
    x = rand(tokens, 3, seed=seed) * 3.0
    layer(x)
    layer.experts.output_kernel.assign(np.zeros(layer.experts.output_kernel.shape, "float32"))
    layer.experts.output_bias.assign(np.eye(E, dtype="float32"))
    y = ops.convert_to_numpy(layer(x))  # y[t, e] = gate(t, e) if (t, e) kept else 0

    _, _, indices, _ = reference_route(layer, x.astype(np.float64))
    capacity = reference_capacity(tokens, E, k, capacity_factor)
    keep = reference_keep(indices, E, capacity)
    expected_kept = np.zeros((tokens, E), bool)
    for j in range(k):
        expected_kept[np.arange(tokens)[keep[:, j] > 0], indices[keep[:, j] > 0, j]] = True
    kept = y > 0
    assert np.all(y[~kept] == 0.0)
    assert np.all(kept.sum(axis=0) <= capacity), f"an expert kept more than C={capacity} tokens: {kept.sum(0)}"
    np.testing.assert_array_equal(kept, expected_kept, err_msg="kept assignments differ from first-choice-first order")
    fully_dropped = ~expected_kept.any(axis=1)
    assert np.all(y[fully_dropped] == 0.0)


def test_capacity_is_the_same_in_eager_and_dynamic_batch_graph():
    """Regression: the dynamic-batch capacity was once float32 ceil(cf*k*T/E - 1e-6), 37 here instead of 36."""
    E, k, T, d, cf = 3, 2, 45, 4, 1.2
    layer = MixtureOfExperts(E, 4, k=k, capacity_factor=cf)
    x = rand(T, d, seed=10, low=0.1, high=1.0)
    layer(x)
    set_collapsed_router(layer, d)
    eager = ops.convert_to_numpy(layer(x))
    graph_fn = tf.function(lambda t: layer(t), input_signature=[tf.TensorSpec((None, d), tf.float32)])
    graph = ops.convert_to_numpy(graph_fn(tf.constant(x)))
    expected_zero_rows = T - reference_capacity(T, E, k, cf)  # 45 - 36 = 9
    assert int(np.sum(np.all(eager == 0, axis=1))) == expected_zero_rows
    assert int(np.sum(np.all(graph == 0, axis=1))) == expected_zero_rows, (
        f"with a dynamic batch, C should still be 36 and {expected_zero_rows} tokens fully dropped"
    )


# -- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("k,dispatch", [(1, "gather"), (1, "einsum"), (2, "gather"), (2, "einsum"), (None, "gather")])
def test_router_gets_gradient_through_gates(k, dispatch):
    # Seeded initializer, so this checks the gate path alone (the default initializer is tested below).
    layer = MixtureOfExperts(
        4,
        8,
        k=k,
        capacity_factor=None,
        balance_loss=None,
        z_loss_weight=0.0,
        dispatch=dispatch,
        kernel_initializer=keras.initializers.GlorotUniform(seed=0),
    )
    x = rand(10, 5, seed=11)
    layer(x)
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = ops.sum(ops.square(y))
    assert layer.losses == [], "balance_loss=None and z_loss_weight=0 must add no auxiliary loss"
    grad = tape.gradient(loss, layer.router.kernel)
    assert grad is not None, "router kernel is disconnected from the output"
    assert np.abs(ops.convert_to_numpy(grad)).max() > 1e-6, "router kernel got no gradient through the gates"


@pytest.mark.parametrize("k", [2, None])
def test_router_gets_gradient_with_default_initializer(k):
    layer = MixtureOfExperts(4, 8, k=k, capacity_factor=None, balance_loss=None)
    x = rand(10, 5, seed=11)
    layer(x)
    with tf.GradientTape() as tape:
        loss = ops.sum(ops.square(layer(x)))
    grad = ops.convert_to_numpy(tape.gradient(loss, layer.router.kernel))
    assert np.abs(grad).max() > 1e-4, f"router gradient at initialisation is ~0 (max |g| = {np.abs(grad).max():.2e})"


def test_renormalised_top1_gives_router_no_output_gradient():
    """Contrast with the Switch convention: a renormalised single gate is always 1."""
    layer = MixtureOfExperts(4, 8, k=1, renormalize=True, balance_loss=None)
    x = rand(10, 5, seed=11)
    layer(x)
    with tf.GradientTape() as tape:
        loss = ops.sum(ops.square(layer(x)))
    grad = tape.gradient(loss, layer.router.kernel)
    assert grad is None or np.abs(ops.convert_to_numpy(grad)).max() == 0.0


# -- masks -------------------------------------------------------------------------------------


def _padded_batch(seed=12, lengths=(5, 2, 4), seq=6, d=4):
    x = rand(len(lengths), seq, d, seed=seed) * 2
    mask = np.arange(seq)[None, :] < np.array(lengths)[:, None]
    return x, mask


@pytest.mark.parametrize("k,capacity_factor", [(None, None), (2, None), (1, 1.0), (2, 0.5)])
def test_masked_padding_outputs_exactly_zero_and_mask_propagates(k, capacity_factor):
    x, mask = _padded_batch()
    layer = MixtureOfExperts(4, 8, k=k, capacity_factor=capacity_factor)
    y = ops.convert_to_numpy(layer(x, mask=mask))
    assert np.all(y[~mask] == 0.0), "padding tokens must output exactly 0"
    np.testing.assert_allclose(y, reference_moe(layer, x, mask), rtol=1e-4, atol=1e-5)
    out_mask = layer.compute_mask(x, ops.convert_to_tensor(mask))
    np.testing.assert_array_equal(ops.convert_to_numpy(out_mask), mask, err_msg="the mask should pass through")


@pytest.mark.parametrize("k", [None, 1, 2])
def test_real_tokens_unaffected_by_padding(k):
    x, mask = _padded_batch()
    layer = MixtureOfExperts(4, 8, k=k, capacity_factor=None)
    y = ops.convert_to_numpy(layer(x, mask=mask))
    for b, length in enumerate(mask.sum(1)):
        alone = ops.convert_to_numpy(layer(x[b : b + 1, :length]))[0]
        np.testing.assert_allclose(y[b, :length], alone, rtol=1e-5, atol=1e-6, err_msg=f"sequence {b} changed")


@pytest.mark.parametrize("dispatch", ["gather", "einsum"])
def test_padding_takes_no_capacity(dispatch):
    """Same T, so same C: padding before the real tokens must not take their slots."""
    E, d, S = 4, 3, 8
    layer = MixtureOfExperts(E, 6, k=1, capacity_factor=1.0, dispatch=dispatch)  # C = ceil(8/4) = 2
    real = rand(4, d, seed=13, low=0.1, high=1.0)
    pad = rand(4, d, seed=14, low=0.1, high=1.0)  # would route to expert 0 too if it were not masked
    x_back = np.concatenate([real, pad])[None]
    x_front = np.concatenate([pad, real])[None]
    m_back = np.arange(S)[None] < 4
    m_front = ~m_back
    layer(x_back)
    set_collapsed_router(layer, d)
    y_back = ops.convert_to_numpy(layer(x_back, mask=m_back))[0, :4]
    y_front = ops.convert_to_numpy(layer(x_front, mask=m_front))[0, 4:]
    assert np.all(np.abs(y_back[:2]).sum(-1) > 0) and np.all(y_back[2:] == 0), "C=2: two real tokens kept"
    np.testing.assert_allclose(y_front, y_back, rtol=1e-6, atol=1e-7, err_msg="padding took capacity slots")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=2, capacity_factor=1.0, balance_loss="switch", z_loss_weight=1e-2),
        dict(k=2, capacity_factor=None, balance_loss="shazeer", z_loss_weight=1e-2),
        dict(k=None, balance_loss="switch", z_loss_weight=1e-2),
        dict(k=None, balance_loss="shazeer", z_loss_weight=1e-2),
    ],
)
def test_auxiliary_losses_ignore_padding(kwargs):
    real = rand(7, 4, seed=15) * 2
    pad = rand(5, 4, seed=16) * 5  # different values: they would change every statistic
    tokens = np.concatenate([real[:3], pad[:2], real[3:], pad[2:]])
    mask = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0], bool)
    layer = MixtureOfExperts(4, 8, **kwargs)
    layer(tokens, mask=mask)
    with_padding = loss_values(layer)
    layer(real)
    without = loss_values(layer)
    assert len(with_padding) == 2
    np.testing.assert_allclose(with_padding, without, rtol=1e-5, atol=1e-7, err_msg="padding changed the aux losses")


def test_mask_in_functional_model_after_embedding():
    vocab, d = 20, 6
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, d, mask_zero=True)(inp)
    moe = MixtureOfExperts(4, 8, k=2, capacity_factor=None, name="moe")
    h = moe(h)
    assert getattr(h, "_keras_mask", None) is not None, "MoE output should carry the embedding mask"
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out)
    ids = np.array([[3, 5, 7, 0, 0], [2, 9, 0, 0, 0]], "int32")
    padded = ops.convert_to_numpy(model(ids))
    short = np.concatenate([ops.convert_to_numpy(model(ids[i : i + 1, : 5 - (ids[i] == 0).sum()])) for i in range(2)])
    np.testing.assert_allclose(padded, short, rtol=1e-5, atol=1e-6, err_msg="padding changed the pooled output")
    seq = ops.convert_to_numpy(keras.Model(inp, h)(ids))
    assert np.all(seq[ids == 0] == 0.0), "padding positions must output exactly 0"


# -- losses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 1, 2])
def test_switch_balance_loss_value(k):
    E, weight = 4, 0.05
    x = rand(20, 5, seed=17) * 2
    layer = MixtureOfExperts(
        E, 8, k=k, capacity_factor=None if k is None else 1.0, balance_loss="switch", balance_loss_weight=weight
    )
    layer(x)
    values = loss_values(layer)
    assert len(values) == 1, f"expected exactly one (balance) loss, got {values}"
    logits, probs, indices, _ = reference_route(layer, x.astype(np.float64))
    chosen = np.argmax(logits, -1)[:, None] if k is None else indices  # dense: top-1 for statistics
    f = np.bincount(chosen.reshape(-1), minlength=E) / chosen.size
    expected = weight * E * np.sum(f * probs.mean(0))
    np.testing.assert_allclose(values[0], expected, rtol=1e-5, err_msg="expected weight * E * sum_i f_i P_i")


@pytest.mark.parametrize("k", [None, 2])
def test_shazeer_balance_loss_value(k):
    E, weight = 4, 0.1
    x = rand(20, 5, seed=18) * 2
    layer = MixtureOfExperts(E, 8, k=k, balance_loss="shazeer", balance_loss_weight=weight)
    layer(x)
    values = loss_values(layer)
    assert len(values) == 1
    _, probs, indices, top_gates = reference_route(layer, x.astype(np.float64))
    if k is None:
        expected = cv_squared(probs.sum(0))
    else:
        gates = np.zeros_like(probs)
        np.put_along_axis(gates, indices, top_gates, axis=-1)
        expected = cv_squared(gates.sum(0)) + cv_squared(np.bincount(indices.reshape(-1), minlength=E))
    np.testing.assert_allclose(values[0], weight * expected, rtol=1e-4, err_msg="expected w * (importance + load)")


def test_no_balance_loss_and_z_loss():
    x = rand(20, 5, seed=19) * 2
    none = MixtureOfExperts(4, 8, k=2, balance_loss=None)
    none(x)
    assert none.losses == [], "balance_loss=None and no z-loss should add no loss"

    zw = 0.3
    with_z = MixtureOfExperts(4, 8, k=2, balance_loss=None, z_loss_weight=zw)
    with_z(x)
    values = loss_values(with_z)
    assert len(values) == 1
    logits = x.astype(np.float64) @ with_z.router.kernel.numpy()
    lse = np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(values[0], zw * np.mean(lse**2), rtol=1e-5, err_msg="expected w * mean(logsumexp^2)")

    both = MixtureOfExperts(4, 8, k=2, balance_loss="switch", z_loss_weight=zw)
    both(x)
    assert len(both.losses) == 2


def test_aux_loss_is_part_of_the_fit_loss():
    E, w, zw = 4, 0.5, 0.1
    inp = keras.Input((3, 5))
    moe = MixtureOfExperts(
        E, 8, k=2, capacity_factor=1.0, balance_loss="switch", balance_loss_weight=w, z_loss_weight=zw, name="moe"
    )
    model = keras.Model(inp, keras.layers.Dense(1)(moe(inp)))
    x = rand(16, 3, 5, seed=20)
    model(x)
    assert len(model.losses) == 2, "the model should collect the balance and z losses"

    def zero_loss(y_true, y_pred):
        return 0.0 * ops.mean(ops.square(y_true - y_pred), axis=-1)

    model.compile(keras.optimizers.SGD(0.0), zero_loss)
    hist = model.fit(x, np.zeros((16, 3, 1), "float32"), batch_size=8, epochs=1, shuffle=False, verbose=0).history
    expected = w * hist["moe_balance_loss"][0] + zw * hist["moe_z_loss"][0]
    assert hist["loss"][0] > 0
    np.testing.assert_allclose(
        hist["loss"][0], expected, rtol=1e-4, err_msg="fit loss should be the weighted aux losses"
    )


def test_fit_on_the_switch_loss_alone_rebalances_a_collapsed_router():
    E, d = 4, 5
    inp = keras.Input((d,))
    moe = MixtureOfExperts(E, 8, k=1, balance_loss="switch", balance_loss_weight=1.0, name="moe")
    model = keras.Model(inp, moe(inp))
    x = rand(32, d, seed=21, low=0.1, high=1.0)
    model(x)
    set_collapsed_router(moe, d)
    model.compile(keras.optimizers.Adam(0.05), lambda y_true, y_pred: 0.0 * ops.mean(y_pred, axis=-1))
    hist = model.fit(x, np.zeros((32, d)), batch_size=32, epochs=8, verbose=0).history
    first, last = hist["moe_balance_loss"][0], hist["moe_balance_loss"][-1]
    assert first > 0.9 * E, f"collapsed router should start near E={E}, got {first}"
    assert last < 0.8 * first, f"training on the balance loss should reduce it: {first} -> {last}"


# -- robustness -------------------------------------------------------------------------------


def _all_finite(layer, y):
    assert np.all(np.isfinite(ops.convert_to_numpy(y))), "non-finite output"
    assert all(np.isfinite(v) for v in loss_values(layer)), f"non-finite aux loss: {loss_values(layer)}"
    for key, value in layer.routing_metrics.result().items():
        assert np.isfinite(float(value)), f"non-finite routing metric {key}"


def _assert_finite_step(layer, x, training):
    """One forward + backward pass: outputs, losses, metrics and gradients all finite."""
    with tf.GradientTape() as tape:
        y = layer(x, training=training)
        loss = ops.sum(ops.square(y)) + ops.sum(layer.losses)
    _all_finite(layer, y)
    for g in tape.gradient(loss, layer.trainable_weights):
        assert g is None or np.all(np.isfinite(ops.convert_to_numpy(g))), "non-finite gradient"


ROBUST_CONFIGS = [
    dict(k=None, balance_loss="switch"),
    dict(k=None, balance_loss="shazeer"),
    dict(k=1, capacity_factor=1.0, dispatch="einsum", balance_loss="switch"),
    dict(k=2, capacity_factor=1.0, balance_loss="shazeer", noise="gaussian"),
]


@pytest.mark.parametrize("kwargs", ROBUST_CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_equal_router_logits_are_finite(kwargs, training):
    layer = MixtureOfExperts(4, 8, z_loss_weight=1e-3, **kwargs)
    x = rand(2, 6, 5, seed=22)
    layer(x)
    layer.router.kernel.assign(np.zeros(layer.router.kernel.shape, "float32"))
    _assert_finite_step(layer, x, training)


@pytest.mark.parametrize("kwargs", ROBUST_CONFIGS)
def test_huge_router_logits_are_finite(kwargs):
    layer = MixtureOfExperts(4, 8, z_loss_weight=1e-3, **kwargs)
    x = rand(2, 6, 5, seed=23)
    layer(x)
    layer.router.kernel.assign(np.random.default_rng(0).normal(size=layer.router.kernel.shape).astype("float32") * 1e4)
    logits = ops.convert_to_numpy(layer.router(x.reshape(-1, 5)).logits)
    assert np.abs(logits).max() > 5e3, "test setup should give logits ~ 1e4"
    _assert_finite_step(layer, x, training=True)


@pytest.mark.parametrize("kwargs", ROBUST_CONFIGS)
def test_all_padding_batch(kwargs):
    layer = MixtureOfExperts(4, 8, z_loss_weight=1e-3, **kwargs)
    x = rand(2, 5, 3, seed=24)
    y = layer(x, mask=np.zeros((2, 5), bool), training=True)
    assert np.all(ops.convert_to_numpy(y) == 0.0), "an all-padding batch must output all zeros"
    _all_finite(layer, y)


@pytest.mark.parametrize(
    "kwargs", [dict(k=None), dict(k=2, capacity_factor=1.0), dict(k=1, capacity_factor=1.0, dispatch="einsum")]
)
def test_mixed_float16_forward_and_backward(mixed_float16, kwargs):
    layer = MixtureOfExperts(4, 8, z_loss_weight=1e-3, **kwargs)
    x = rand(2, 6, 5, seed=25)
    mask = np.ones((2, 6), bool)
    mask[1, 4:] = False
    with tf.GradientTape() as tape:
        y = layer(x, mask=mask, training=True)
        loss = ops.sum(ops.cast(y, "float32") ** 2) + ops.sum(layer.losses)
    assert y.dtype == tf.float16, f"expected float16 output under mixed_float16, got {y.dtype}"
    _all_finite(layer, y)
    assert all(v.dtype == tf.float32 for v in layer.losses), "aux losses should be float32"
    route = layer.router(ops.reshape(ops.cast(x, "float16"), (-1, 5)))
    assert route.logits.dtype == tf.float32, "router logits should be float32"
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(ops.convert_to_numpy(g))) for g in grads)
    np.testing.assert_allclose(
        ops.convert_to_numpy(y).astype(np.float64), reference_moe(layer, x, mask), rtol=2e-2, atol=2e-2
    )


# -- serialisation ------------------------------------------------------------------------------


def _roundtrip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config, "from_config(get_config()) should give the same config"
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is type(layer) and revived.get_config() == config
    return clone


def _assert_clone_matches(layer, x, select=lambda out: out):
    """Config round trip, then the clone with the layer's weights gives identical outputs."""
    expected = ops.convert_to_numpy(select(layer(x)))
    clone = _roundtrip(layer)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(ops.convert_to_numpy(select(clone(x))), expected)
    return clone


def test_experts_config_roundtrip():
    layer = Experts(
        3, 5, output_units=2, activation="gelu", use_bias=False, kernel_initializer=keras.initializers.HeNormal(seed=3)
    )
    _assert_clone_matches(layer, rand(3, 4, 6))


def test_router_config_roundtrip():
    layer = TopKRouter(5, k=2, noise="gaussian", noise_epsilon=0.05, renormalize=False, use_bias=True, seed=4)
    clone = _assert_clone_matches(layer, rand(6, 3), select=lambda out: out.dense_gates())
    assert clone.dtype_policy.name == "float32"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=None, balance_loss="shazeer"),
        dict(k=2, capacity_factor=1.25, dispatch="einsum", output_units=3, activation="gelu", z_loss_weight=1e-3),
        dict(k=1, noise="gaussian", seed=3, renormalize=True, balance_loss=None, use_bias=False),
    ],
)
def test_moe_config_roundtrip(kwargs):
    _assert_clone_matches(MixtureOfExperts(4, 6, name="my_moe", **kwargs), rand(2, 3, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=None),
        dict(k=2, capacity_factor=1.0, dispatch="gather"),
        dict(k=1, capacity_factor=1.25, dispatch="einsum", noise="gaussian", seed=3),
    ],
    ids=["dense", "top2-gather", "top1-einsum-gaussian"],
)
def test_save_and_load_keras_file(tmp_path, kwargs):
    inp = keras.Input((5, 6))
    h = MixtureOfExperts(4, 8, name="moe", **kwargs)(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    x = rand(4, 5, 6, seed=26)
    # Move the weights away from their initial values (noise kernel included).
    model.set_weights([w + np.asarray(0.01 * (i + 1), w.dtype) for i, w in enumerate(model.get_weights())])
    before = ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "moe.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = ops.convert_to_numpy(loaded(x, training=False))
    np.testing.assert_array_equal(after, before, err_msg="loaded model predicts differently")
    assert loaded.get_layer("moe").get_config() == model.get_layer("moe").get_config()


# -- jit_compile ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=2, capacity_factor=1.0, dispatch="gather"),
        dict(k=1, capacity_factor=1.25, dispatch="einsum"),
        dict(k=None),
    ],
    ids=["top2-gather", "top1-einsum", "dense"],
)
def test_jit_compile_fit_with_dynamic_last_batch(kwargs):
    inp = keras.Input((4, 6))
    moe = MixtureOfExperts(4, 8, z_loss_weight=1e-3, name="moe", **kwargs)
    model = keras.Model(inp, keras.layers.Dense(1)(moe(inp)))
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
    x, y = rand(13, 4, 6, seed=27), rand(13, 4, 1, seed=28)
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, y, batch_size=5, epochs=1, verbose=0).history  # batches of 5, 5 and 3
    assert np.isfinite(hist["loss"][0]), f"jit-compiled training gave a non-finite loss: {hist['loss']}"
    assert np.isfinite(hist["moe_balance_loss"][0])
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert all(changed), "every weight (router and experts included) should have been updated"


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(k=0), r"`k`.*received k=0\b"),
        (dict(k=5), r"`k`.*received k=5\b"),
        (dict(k=1.5), r"`k`.*received k=1\.5"),
        (dict(k=2, capacity_factor=0), r"`capacity_factor`.*received capacity_factor=0\b"),
        (dict(k=2, capacity_factor=-1), r"`capacity_factor`.*received capacity_factor=-1\b"),
        (dict(noise="foo"), r"`noise`.*received noise='foo'"),
        (dict(balance_loss="foo"), r"`balance_loss`.*received balance_loss='foo'"),
        (dict(dispatch="foo"), r"`dispatch`.*received dispatch='foo'"),
        (dict(balance_loss_weight=-1.0), r"`balance_loss_weight`.*received balance_loss_weight=-1"),
        (dict(z_loss_weight=-0.5), r"`z_loss_weight`.*received z_loss_weight=-0\.5"),
        (dict(num_experts=0), r"`num_experts`.*received num_experts=0\b"),
        (dict(k=True), r"`k`.*received k=True"),
        (dict(k=2, capacity_factor=float("nan")), r"`capacity_factor`.*received capacity_factor=nan"),
        (dict(k=None, capacity_factor=1.25), r"`capacity_factor`.*sparse.*received capacity_factor=1\.25 with k=None"),
        (dict(expert_units=0), r"`expert_units`.*received expert_units=0\b"),
        (dict(output_units=-3), r"`output_units`.*received output_units=-3\b"),
    ],
)
def test_moe_rejects_bad_arguments(kwargs, pattern):
    kwargs = {"num_experts": 4, "expert_units": 8, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        MixtureOfExperts(**kwargs)


@pytest.mark.parametrize(
    "cls,kwargs,pattern",
    [
        (TopKRouter, dict(num_experts=4, k=0), r"received k=0\b"),
        (TopKRouter, dict(num_experts=0), r"received num_experts=0\b"),
        (TopKRouter, dict(num_experts=4, noise="foo"), r"received noise='foo'"),
        (Experts, dict(num_experts=0, units=4), r"received num_experts=0\b"),
        (Experts, dict(num_experts=2, units=0), r"received units=0\b"),
    ],
)
def test_router_and_experts_reject_bad_arguments(cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(**kwargs)


@pytest.mark.parametrize("shape", [(8,), (2, 3, 4, 5)])
def test_moe_rejects_wrong_input_rank(shape):
    layer = MixtureOfExperts(4, 8, k=2)
    with pytest.raises(ValueError, match=rf"inputs of rank 2 .* or 3 .*received input of shape.*\(rank {len(shape)}\)"):
        layer(np.zeros(shape, "float32"))


@pytest.mark.parametrize("mask_shape", [(2, 7), (2,), (2, 6, 1)])
def test_moe_rejects_mismatched_mask(mask_shape):
    layer = MixtureOfExperts(4, 8, k=2)
    with pytest.raises(ValueError, match=rf"`mask`.*received mask of shape {re.escape(str(mask_shape))}"):
        layer(rand(2, 6, 5), mask=np.ones(mask_shape, bool))
