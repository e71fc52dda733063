"""Dropless top-k (`dispatch="dropless"`): nothing dropped, the same outputs as the slot dispatches, sparse cost."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _helpers import rand
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

from moe_tf import MixtureOfExperts
from moe_tf.dispatch import DISPATCH_OPTIONS, dropless_block_size, dropless_layout
from moe_tf.layers import Experts

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def twins(num_experts, k, dim, **kwargs):
    """A dropless layer and a gather layer with capacity T (nothing dropped either), sharing weights."""
    dropless = MixtureOfExperts(num_experts, 6, k=k, capacity_factor=None, **kwargs)
    gather = MixtureOfExperts(num_experts, 6, k=k, capacity_factor=None, dispatch="gather", **kwargs)
    dropless.build((None, dim))
    gather.build((None, dim))
    gather.set_weights(dropless.get_weights())
    return dropless, gather


def outputs_and_grads(layer, x, mask=None):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=mask)
        loss = ops.sum(ops.square(y)) + ops.sum(y)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return ops.convert_to_numpy(y), [ops.convert_to_numpy(g) for g in grads]


# -- the layer ----------------------------------------------------------------------------------


def test_dropless_is_the_default_without_a_capacity_and_gather_with_one():
    assert MixtureOfExperts(4, 8, k=2).dispatch == "dropless"
    assert MixtureOfExperts(4, 8, k=2, capacity_factor=1.25).dispatch == "gather"
    assert MixtureOfExperts(4, 8, k=2, capacity_factor=None, dispatch="gather").dispatch == "gather"
    assert set(DISPATCH_OPTIONS) == {"gather", "einsum", "dropless"}


def test_dropless_with_a_capacity_is_a_clear_error():
    with pytest.raises(ValueError, match=r"dispatch='dropless'.*received capacity_factor=1\.25.*capacity_factor=None"):
        MixtureOfExperts(4, 8, k=2, capacity_factor=1.25, dispatch="dropless")


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")  # E = 1
@PROPERTY
@given(
    tokens=st.integers(1, 40),
    num_experts=st.integers(1, 9),
    k_frac=st.floats(0.0, 1.0),
    collapsed=st.booleans(),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_dropless_equals_gather_without_drops(tokens, num_experts, k_frac, collapsed, masked, seed):
    """Outputs and every gradient equal the capacity-T gather dispatch; nothing is dropped, even when collapsed."""
    k = min(num_experts, 1 + int(k_frac * num_experts))
    dim = 3
    dropless, gather = twins(num_experts, k, dim)
    if collapsed:  # every token picks expert 0 first: one expert gets all T tokens
        kernel = np.zeros((dim, num_experts), "float32")
        kernel[:, 0] = 3.0
        for layer in (dropless, gather):
            layer.router.kernel.assign(kernel)
    x = rand(tokens, dim, seed=seed, low=0.1, high=1.0)
    mask = None
    if masked:
        mask = (np.random.default_rng(seed).random(tokens) > 0.3).astype("float32")
    y_drop, g_drop = outputs_and_grads(dropless, x, mask)
    y_gather, g_gather = outputs_and_grads(gather, x, mask)
    np.testing.assert_allclose(y_drop, y_gather, rtol=1e-5, atol=1e-6, err_msg="dropless != gather with C = T")
    for a, b in zip(g_drop, g_gather):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg="gradients differ between dispatches")
    assert float(dropless.routing_metrics.dropped.numpy()) == 0.0, "the dropless dispatch must drop nothing"
    if mask is not None:
        assert np.all(y_drop[mask == 0] == 0.0), "padding tokens output exactly 0"


def test_dropless_keeps_what_capacity_drops():
    """A collapsed router: capacity 1.0 drops most tokens, dropless keeps every one (nonzero output)."""
    E, T, d = 4, 16, 3
    dropless, _ = twins(E, 2, d)
    capped = MixtureOfExperts(E, 6, k=2, capacity_factor=1.0)
    capped.build((None, d))
    capped.set_weights(dropless.get_weights())
    kernel = np.zeros((d, E), "float32")
    kernel[:, 0], kernel[:, 1] = 3.0, 2.0
    for layer in (dropless, capped):
        layer.router.kernel.assign(kernel)
    x = rand(T, d, seed=3, low=0.1, high=1.0)
    y_capped, y_drop = ops.convert_to_numpy(capped(x)), ops.convert_to_numpy(dropless(x))
    assert np.sum(np.all(y_capped == 0, axis=-1)) == T - 8, "capacity 8 keeps 8 of 16 tokens (both choices)"
    assert np.all(np.abs(y_drop).sum(-1) > 0), "dropless: every token has an output"
    np.testing.assert_allclose(y_drop[:8], y_capped[:8], rtol=1e-5, atol=1e-6, err_msg="kept tokens agree")


@pytest.mark.parametrize("jit", [False, True])
def test_dropless_in_a_graph_with_unknown_batch_size(jit):
    """Keras `fit` retraces with batch None; XLA must still size the buffer (shapes fold to constants)."""
    dropless, gather = twins(8, 2, 5)
    fn = tf.function(lambda x: dropless(x), jit_compile=jit, input_signature=[tf.TensorSpec((None, 5), "float32")])
    for tokens in (37, 5, 1):
        x = rand(tokens, 5, seed=tokens)
        np.testing.assert_allclose(ops.convert_to_numpy(fn(x)), ops.convert_to_numpy(gather(x)), rtol=1e-5, atol=1e-6)


def test_dropless_fit_under_jit_with_a_partial_last_batch_and_sequences():
    inp = keras.Input((4, 6))
    moe = MixtureOfExperts(4, 8, k=2, z_loss_weight=1e-3, noise="jitter", name="moe")
    model = keras.Model(inp, keras.layers.Dense(1)(moe(inp)))
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
    x, y = rand(13, 4, 6, seed=27), rand(13, 4, 1, seed=28)
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, y, batch_size=5, epochs=1, verbose=0).history  # batches of 5, 5 and 3
    assert np.isfinite(hist["loss"][0]) and hist["moe_dropped"][0] == 0.0
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "every weight trains"


def test_dropless_config_round_trip_and_keras_file(tmp_path):
    layer = MixtureOfExperts(4, 8, k=2, name="moe")
    assert layer.get_config()["dispatch"] == "dropless"
    inp = keras.Input((5,))
    model = keras.Model(inp, layer(inp))
    x = rand(6, 5, seed=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("moe").dispatch == "dropless"
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), rtol=1e-6)


# -- the layout ---------------------------------------------------------------------------------


@PROPERTY
@given(
    tokens=st.integers(1, 60),
    num_experts=st.integers(1, 8),
    k=st.integers(1, 3),
    block=st.sampled_from([1, 2, 4, 8]),
    skew=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layout_blocks_hold_one_expert_and_rows_are_unique(tokens, num_experts, k, block, skew, seed):
    k = min(k, num_experts)
    rng = np.random.default_rng(seed)
    scores = rng.random((tokens, num_experts)) + (np.arange(num_experts) == 0) * 2 * skew
    indices = np.argsort(-scores, axis=-1)[:, :k].astype("int32")  # distinct experts per token
    keep = (rng.random((tokens, 1)) > 0.2).astype("float32") * np.ones((1, k), "float32")
    rows, block_experts, num_rows = dropless_layout(indices, keep, num_experts, block)
    rows, block_experts = np.asarray(rows), np.asarray(block_experts)
    assert num_rows == max(1, (tokens * k + num_experts * (block - 1)) // block) * block
    assert num_rows <= tokens * k + num_experts * block, "buffer <= k*T + E*block rows"
    kept = keep > 0
    assert np.all(rows[~kept] == num_rows), "padding goes to the trash row"
    kept_rows = rows[kept]
    assert len(set(kept_rows.tolist())) == kept_rows.size, "each assignment gets its own row"
    assert np.all(kept_rows < num_rows)
    np.testing.assert_array_equal(
        block_experts[kept_rows // block], indices[kept], err_msg="a row's block is its expert's"
    )
    # Within an expert, rows follow the queue: all first choices, then second choices, in token order.
    for e in range(num_experts):
        queue = [(j, t) for j in range(k) for t in range(tokens) if kept[t, j] and indices[t, j] == e]
        assert [rows[t, j] for j, t in queue] == sorted(rows[t, j] for j, t in queue)


def test_block_size_rule_and_its_tensor_twin():
    assert dropless_block_size(8192, 64) == 64
    assert dropless_block_size(8192, 16) == 128
    assert dropless_block_size(256, 8) == 32
    assert dropless_block_size(1, 64) == 8
    assert dropless_block_size(10**7, 2) == 128
    for a, e in [(8192, 64), (256, 8), (3, 5), (10**6, 8)]:
        assert int(dropless_block_size(tf.constant(a), e)) == dropless_block_size(a, e)


def test_experts_with_expert_ids_run_each_group_through_its_expert():
    experts = Experts(3, 4, output_units=2)
    experts.build((3, None, 5))
    x = rand(4, 6, 5, seed=2)  # 4 groups
    ids = np.array([2, 0, 0, 1], "int32")
    y = ops.convert_to_numpy(experts(x, expert_ids=ids))
    per_expert = ops.convert_to_numpy(experts(np.stack([x[1], x[3], x[0]])))  # groups laid out as experts 0, 1, 2
    np.testing.assert_allclose(y[[1, 3, 0]], per_expert, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[2], ops.convert_to_numpy(experts(np.stack([x[2], x[3], x[0]])))[0], rtol=1e-6)


def test_dropless_computes_about_k_T_rows_not_E_T():
    """The experts see at most k*T + E*block rows: a large E runs far fewer rows than E*T slots."""
    seen = []
    layer = MixtureOfExperts(64, 8, k=2)
    layer.build((None, 4))
    call = layer.experts.call

    def spy(inputs, expert_ids=None):
        seen.append(tuple(inputs.shape))
        return call(inputs, expert_ids=expert_ids)

    layer.experts.call = spy
    layer(rand(512, 4, seed=0))
    ((blocks, block, _),) = seen
    assert blocks * block <= 2 * 512 + 64 * block < 64 * 512 / 8, f"dropless ran {blocks * block} rows for k*T = 1024"


def test_expert_gradients_are_dense_tensors_in_eager_mode():
    """The blocks gather expert weights; their gradient must still be a plain `[E, ...]` tensor, not IndexedSlices."""
    layer = MixtureOfExperts(4, 8, k=2)
    x = rand(16, 5, seed=4)
    layer(x)
    with tf.GradientTape() as tape:
        loss = ops.sum(ops.square(layer(x)))
    grads = tape.gradient(loss, layer.experts.trainable_variables)
    for g, v in zip(grads, layer.experts.trainable_variables):
        assert isinstance(g, tf.Tensor) and not isinstance(g, tf.IndexedSlices), type(g)
        assert tuple(g.shape) == tuple(v.shape)
