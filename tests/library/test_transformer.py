"""`moe_tf.transformer`: token + position embedding and the (MoE) Transformer block, padding-aware."""

import keras
import numpy as np
import pytest
from _helpers import rand
from keras import ops

from moe_tf import MixtureOfExperts
from moe_tf.transformer import TokenAndPositionEmbedding, TransformerBlock

VOCAB, MAX_LEN, D = 50, 12, 8


def _moe(k=1, capacity_factor=None, seed=0):
    return MixtureOfExperts(
        num_experts=4,
        expert_units=16,
        k=k,
        capacity_factor=capacity_factor,
        seed=seed,
        kernel_initializer=keras.initializers.GlorotUniform(seed),
        name="moe",
    )


FFNS = [lambda: {"ffn_units": 16}, lambda: {"ffn": _moe(k=1)}, lambda: {"ffn": _moe(k=2)}]


def _classifier(ffn, length=MAX_LEN):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((length,), dtype="int32")
    h = TokenAndPositionEmbedding(VOCAB, MAX_LEN, D, name="embed")(inputs)
    h = TransformerBlock(num_heads=2, dropout=0.1, name="block", **ffn)(h)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h))


def _tokens():
    x = np.zeros((3, 7), np.int32)
    x[0, :7] = [5, 6, 7, 8, 9, 10, 11]
    x[1, :4] = [3, 4, 5, 6]
    x[2, :2] = [40, 41]
    return x


def test_embedding_shape_mask_and_positions():
    emb = TokenAndPositionEmbedding(VOCAB, MAX_LEN, D)
    x = _tokens()
    y = emb(x)
    assert tuple(y.shape) == (3, 7, D)
    np.testing.assert_array_equal(ops.convert_to_numpy(emb.compute_mask(x)), x != 0)
    tok = ops.convert_to_numpy(emb.token_embedding.embeddings)
    pos = ops.convert_to_numpy(emb.position_embedding.embeddings)
    np.testing.assert_allclose(ops.convert_to_numpy(y), tok[x] + pos[None, :7], rtol=1e-6, atol=1e-6)
    assert TokenAndPositionEmbedding(VOCAB, MAX_LEN, D, mask_zero=False).compute_mask(x) is None


def test_embedding_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`vocabulary_size` must be a positive integer"):
        TokenAndPositionEmbedding(0, MAX_LEN, D)
    with pytest.raises(ValueError, match="`mask_zero` must be True or False"):
        TokenAndPositionEmbedding(VOCAB, MAX_LEN, D, mask_zero=1)
    with pytest.raises(ValueError, match="longer than `sequence_length`=12"):
        TokenAndPositionEmbedding(VOCAB, MAX_LEN, D)(np.ones((1, 13), np.int32))


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of `ffn_units`"):
        TransformerBlock(num_heads=2)
    with pytest.raises(ValueError, match="exactly one of `ffn_units`"):
        TransformerBlock(num_heads=2, ffn_units=8, ffn=_moe())
    with pytest.raises(ValueError, match="`ffn` must be a keras.layers.Layer"):
        TransformerBlock(num_heads=2, ffn="moe")
    with pytest.raises(ValueError, match=r"`dropout` must be a number in \[0, 1\)"):
        TransformerBlock(num_heads=2, ffn_units=8, dropout=1.0)
    with pytest.raises(ValueError, match=r"inputs \[batch, length, d\]"):
        TransformerBlock(num_heads=2, ffn_units=8)(rand(2, 8))


@pytest.mark.parametrize(
    "ffn",
    [lambda: {"ffn_units": 16}, lambda: {"ffn": _moe(k=1)}, lambda: {"ffn": _moe(k=2, capacity_factor=4.0)}],
    ids=["dense", "switch", "top2"],
)
def test_block_shape_and_mask_carried(ffn):
    block = TransformerBlock(num_heads=2, **ffn())
    x = rand(3, 7, D)
    mask = _tokens() != 0
    y = block(x, mask=mask)
    assert tuple(y.shape) == (3, 7, D)
    np.testing.assert_array_equal(ops.convert_to_numpy(block.compute_mask(x, mask)), mask)


@pytest.mark.parametrize("ffn", FFNS, ids=["dense", "switch", "top2"])
def test_real_positions_ignore_what_padding_holds(ffn):
    """Attention masks padding keys and the MoE routes no padding: garbage at padding changes nothing."""
    block = TransformerBlock(num_heads=2, **ffn())
    x = rand(3, 7, D, seed=1)
    mask = _tokens() != 0
    garbage = np.where(mask[..., None], x, rand(3, 7, D, seed=2) * 10)
    y = ops.convert_to_numpy(block(x, mask=mask))
    y_garbage = ops.convert_to_numpy(block(garbage, mask=mask))
    np.testing.assert_allclose(y[mask], y_garbage[mask], rtol=1e-5, atol=1e-5)
    # Without the mask the same change does reach the real positions: the test can fail.
    y_unmasked = ops.convert_to_numpy(block(x))
    y_unmasked_garbage = ops.convert_to_numpy(block(garbage))
    assert np.abs(y_unmasked[mask] - y_unmasked_garbage[mask]).max() > 1e-3


@pytest.mark.parametrize("ffn", FFNS, ids=["dense", "switch", "top2"])
def test_appending_padding_does_not_change_the_classifier(ffn):
    model = _classifier(ffn(), length=None)
    x = _tokens()  # [3, 7]
    longer = np.concatenate([x, np.zeros((3, 5), np.int32)], axis=1)  # [3, 12]: five more padding tokens
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(x)), ops.convert_to_numpy(model(longer)), rtol=1e-5, atol=1e-5
    )


def test_moe_sees_the_mask_padding_takes_no_capacity_and_no_statistics():
    moe = _moe(k=1, capacity_factor=1.0)
    model = _classifier({"ffn": moe})
    x = np.zeros((3, MAX_LEN), np.int32)
    x[:, :7] = _tokens()
    model(x)
    metrics = moe.routing_metrics
    real = int((x != 0).sum())
    assert float(ops.convert_to_numpy(metrics.tokens)) == real  # statistics count real tokens only
    assert float(ops.convert_to_numpy(ops.sum(metrics.counts))) == real  # k=1: one assignment per real token


def test_attention_ignores_padding_keys():
    """The attention weights a real query gives to padding keys are exactly 0."""
    block = TransformerBlock(num_heads=2, ffn_units=8)
    x = rand(3, 7, D, seed=3)
    mask = _tokens() != 0
    block(x, mask=mask)
    attention_mask = ops.logical_and(mask[:, None, :], np.ones((3, 7, 1), bool))
    _, scores = block.attention(x, x, attention_mask=attention_mask, return_attention_scores=True)
    scores = ops.convert_to_numpy(scores)  # [B, heads, query, key]
    for b in range(3):
        assert np.all(scores[b][:, mask[b]][:, :, ~mask[b]] == 0)
        np.testing.assert_allclose(scores[b][:, mask[b]].sum(-1), 1.0, rtol=1e-5)


def test_config_and_keras_round_trip(tmp_path):
    model = _classifier({"ffn": _moe(k=2, capacity_factor=1.25)})
    x = np.zeros((3, MAX_LEN), np.int32)
    x[:, :7] = _tokens()
    before = ops.convert_to_numpy(model(x))
    block = model.get_layer("block")
    clone = TransformerBlock.from_config(block.get_config())
    assert isinstance(clone.ffn, MixtureOfExperts) and clone.ffn.k == 2 and clone.ffn.capacity_factor == 1.25
    assert clone.get_config() == block.get_config()
    path = tmp_path / "moe_transformer.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), before, rtol=1e-6, atol=1e-6)
    dense = _classifier({"ffn_units": 16})
    dense.save(tmp_path / "dense.keras")
    np.testing.assert_allclose(
        ops.convert_to_numpy(keras.models.load_model(tmp_path / "dense.keras")(x)),
        ops.convert_to_numpy(dense(x)),
        rtol=1e-6,
        atol=1e-6,
    )
