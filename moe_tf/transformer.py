"""A small Transformer encoder whose feed-forward block can be a Mixture of Experts.

Two layers, enough for a text classifier (notebook 07):

    tokens [B, L] -> TokenAndPositionEmbedding -> [B, L, d]   (mask: tokens != 0)
                  -> TransformerBlock(ffn=...)  -> [B, L, d]   (mask carried on)
                  -> keras.layers.GlobalAveragePooling1D()      (masked mean over real tokens)
                  -> Dense(num_classes)

`TransformerBlock` is the post-LayerNorm encoder block of Vaswani et al.
(2017), as in the Switch Transformer's keras-io example:

    x = LayerNorm(x + Dropout(MultiHeadAttention(x, x, attention_mask)))
    x = LayerNorm(x + Dropout(FFN(x)))

where FFN is either the dense `d -> ffn_units -> d` network (`ffn_units=...`)
or any layer mapping `[B, L, d]` to `[B, L, d]` (`ffn=...`), typically a
`moe_tf.MixtureOfExperts` applied per token (Switch / GShard). The padding
mask is used everywhere it matters: no query attends to a padding key, and
the mask is passed to the FFN layer, so a `MixtureOfExperts` routes no
padding token, gives it no capacity slot and leaves it out of its balance
loss and statistics. The residual connection around the FFN also carries a
token whose expert was over capacity (the MoE outputs 0 for it).
"""

import inspect
import math

import keras
from keras import ops

from moe_tf import _checks
from moe_tf.layers._cost import LayerCost, dense_sizes
from moe_tf.layers.dropout import Dropout


class _MultiHeadAttention(keras.layers.MultiHeadAttention):
    """Keras's attention whose attention-probability dropout is `moe_tf.layers.Dropout` (fast under XLA on CPU)."""

    def _build_attention(self, rank):
        super()._build_attention(rank)
        self._dropout_layer = Dropout(rate=self._dropout, dtype=self.dtype_policy, seed=self.seed)


@keras.saving.register_keras_serializable(package="moe_tf")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding, with a padding mask.

    `output[b, t] = token_embedding[tokens[b, t]] + position_embedding[t]`.
    With `mask_zero=True` (default) token id 0 is padding: the layer emits the
    Keras mask `tokens != 0`, which the following layers receive as `mask`.

    Args:
        vocabulary_size: number of token ids (ids are in `[0, vocabulary_size)`).
        sequence_length: the longest sequence; positions are `0 .. sequence_length - 1`.
        output_dim: embedding width d.
        mask_zero: token id 0 is padding and is masked.
        embeddings_initializer: initializer of both tables.

    Input shape:
        `[batch, length]` integer token ids, `length <= sequence_length`.

    Output shape:
        `[batch, length, output_dim]`; mask `[batch, length]` (with `mask_zero`).

    Example:
    >>> emb = TokenAndPositionEmbedding(vocabulary_size=100, sequence_length=8, output_dim=4)
    >>> x = np.array([[5, 7, 0, 0]])
    >>> tuple(emb(x).shape), emb.compute_mask(x).numpy().tolist()
    ((1, 4, 4), [[True, True, False, False]])
    """

    def __init__(
        self, vocabulary_size, sequence_length, output_dim, mask_zero=True, embeddings_initializer="uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = _checks.positive_int("vocabulary_size", vocabulary_size)
        self.sequence_length = _checks.positive_int("sequence_length", sequence_length)
        self.output_dim = _checks.positive_int("output_dim", output_dim)
        if not isinstance(mask_zero, bool):
            raise ValueError(f"`mask_zero` must be True or False; received mask_zero={mask_zero!r}.")  # noqa: TRY004
        self.mask_zero = mask_zero
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = mask_zero
        self.token_embedding = keras.layers.Embedding(
            self.vocabulary_size,
            self.output_dim,
            embeddings_initializer=self.embeddings_initializer,
            name="token_embedding",
        )
        self.position_embedding = keras.layers.Embedding(
            self.sequence_length,
            self.output_dim,
            embeddings_initializer=self.embeddings_initializer,
            name="position_embedding",
        )

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"`TokenAndPositionEmbedding` expects token ids of rank 2 [batch, length]; received input of "
                f"shape {tuple(input_shape)}."
            )
        length = input_shape[-1]
        if length is not None and length > self.sequence_length:
            raise ValueError(
                f"Input length {length} is longer than `sequence_length`={self.sequence_length}; "
                f"build the layer with sequence_length >= {length}."
            )
        self.token_embedding.build(input_shape)
        self.position_embedding.build((input_shape[-1],))

    def call(self, inputs):
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, dtype="int32")  # [L]
        return self.token_embedding(inputs) + self.position_embedding(positions)[None]  # [B, L, d]

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def cost(self):
        """Parameters and FLOPs (`moe_tf.layers.LayerCost`): both tables count as active (as the MoE papers count
        embeddings); a lookup does no multiply-adds."""
        total = (self.vocabulary_size + self.sequence_length) * self.output_dim
        return LayerCost(total, total, 0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "output_dim": self.output_dim,
                "mask_zero": self.mask_zero,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="moe_tf")
class TransformerBlock(keras.layers.Layer):
    """Post-LayerNorm Transformer encoder block with a dense or Mixture-of-Experts FFN.

        h = LayerNorm(x + Dropout(MultiHeadAttention(x, x, attention_mask)))
        y = LayerNorm(h + Dropout(FFN(h, mask)))

    Give exactly one of `ffn_units` (the dense FFN `d -> ffn_units -> d`,
    ReLU) or `ffn` (a layer `[B, L, d] -> [B, L, d]`, e.g.
    `MixtureOfExperts(num_experts=8, expert_units=64, k=1, capacity_factor=1.25)`).
    A dense FFN of `k * expert_units` hidden units has the same matmul FLOPs
    per token as a top-k MoE of experts with `expert_units` (router aside).

    Padding: with a mask (`[B, L]`, True = real token, received from the
    previous layer or passed as `mask=`), attention gets
    `attention_mask[b, i, j] = mask[b, j]`: no token attends to a padding
    key. The mask is passed on to `ffn` when its `call` accepts `mask` (as
    `MixtureOfExperts` does: padding routes nowhere and takes no capacity).
    Outputs at real positions do not depend on what the padding positions
    hold or on how many there are (for an MoE with a capacity factor, as long
    as no assignment is dropped: capacity is sized from all `B * L` slots).
    The output carries the mask on, so a `GlobalAveragePooling1D` after the
    block averages the real tokens only.

    Args:
        num_heads: attention heads.
        key_dim: width of each head; None means `d // num_heads`.
        ffn_units: hidden units of the dense FFN (None when `ffn` is given).
        ffn: a Keras layer used as the FFN (None for the dense FFN).
        dropout: dropout rate on the attention and FFN outputs (before each residual add).
        attention_dropout: dropout rate on the attention probabilities.
        epsilon: LayerNorm epsilon.
        kernel_initializer: initializer of the attention and dense-FFN kernels.
        seed: seed of the dropouts.

    Input shape:
        `[batch, length, d]`; optional mask `[batch, length]`.

    Output shape:
        `[batch, length, d]`, with the input mask.

    Example:
    >>> from moe_tf.layers import MixtureOfExperts
    >>> block = TransformerBlock(num_heads=2, ffn=MixtureOfExperts(num_experts=4, expert_units=16, k=1))
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(block(x, mask=np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        ffn_units=None,
        ffn=None,
        dropout=0.1,
        attention_dropout=0.0,
        epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        self.key_dim = _checks.positive_int("key_dim", key_dim, allow_none=True)
        if (ffn_units is None) == (ffn is None):
            raise ValueError(
                f"Pass exactly one of `ffn_units` (a dense FFN) or `ffn` (a layer, e.g. a MixtureOfExperts); "
                f"received ffn_units={ffn_units!r} and ffn={ffn!r}."
            )
        self.ffn_units = _checks.positive_int("ffn_units", ffn_units, allow_none=True)
        if isinstance(ffn, dict):  # from get_config
            ffn = keras.saving.deserialize_keras_object(ffn)
        if ffn is not None and not isinstance(ffn, keras.layers.Layer):
            raise ValueError(f"`ffn` must be a keras.layers.Layer or None; received ffn={ffn!r}.")
        for name, rate in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not _checks.is_number(rate) or not 0 <= rate < 1:
                raise ValueError(f"`{name}` must be a number in [0, 1); received {name}={rate!r}.")
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.epsilon = _checks.number("epsilon", epsilon, strict=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.supports_masking = True
        self.ffn = ffn
        self.attention = None
        self.sequence_length = None
        self._ffn_takes_mask = ffn is not None and "mask" in inspect.signature(ffn.call).parameters
        self.attention_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="attention_norm")
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="ffn_norm")
        self.attention_output_dropout = Dropout(self.dropout, seed=seed, name="attention_output_dropout")
        self.ffn_output_dropout = Dropout(
            self.dropout, seed=None if seed is None else seed + 1, name="ffn_output_dropout"
        )

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"`TransformerBlock` expects inputs [batch, length, d] with a known d; received input of shape "
                f"{tuple(input_shape)}."
            )
        d = input_shape[-1]
        self.sequence_length = input_shape[-2]  # L, for cost(); None when the length varies
        key_dim = self.key_dim or d // self.num_heads
        if key_dim < 1:
            raise ValueError(f"`key_dim` is d // num_heads = {d} // {self.num_heads} = 0; pass key_dim or fewer heads.")
        self.attention = _MultiHeadAttention(
            self.num_heads,
            key_dim,
            dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer,
            seed=self.seed,
            name="attention",
        )
        self.attention.build(input_shape, input_shape)
        if self.ffn is None:
            self.ffn = keras.Sequential(
                [
                    keras.layers.Dense(
                        self.ffn_units, activation="relu", kernel_initializer=self.kernel_initializer, name="ffn_hidden"
                    ),
                    keras.layers.Dense(d, kernel_initializer=self.kernel_initializer, name="ffn_output"),
                ],
                name="ffn",
            )
        if not self.ffn.built:  # a deserialized MixtureOfExperts arrives built
            self.ffn.build(input_shape)
        self.attention_norm.build(input_shape)
        self.ffn_norm.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        attention_mask = None
        if mask is not None:
            mask = ops.cast(mask, "bool")  # [B, L]
            ones = ops.ones_like(mask)
            attention_mask = ops.logical_and(mask[:, None, :], ones[:, :, None])  # [B, L(query), L(key)]
        attended = self.attention(inputs, inputs, attention_mask=attention_mask, training=training)  # [B, L, d]
        h = self.attention_norm(inputs + self.attention_output_dropout(attended, training=training))
        if self._ffn_takes_mask and mask is not None:
            update = self.ffn(h, mask=mask, training=training)  # [B, L, d]
        else:
            update = self.ffn(h, training=training)
        return self.ffn_norm(h + self.ffn_output_dropout(ops.cast(update, h.dtype), training=training))

    def cost(self, sequence_length=None):
        """Parameters and FLOPs per token (`moe_tf.layers.LayerCost`) of attention, FFN and norms.

        Attention projects each token to queries, keys and values and back
        (`4 * d * H * d_k` multiply-adds) and, for each of the L positions it
        attends to, scores it and adds its value (`2 * L * H * d_k`). The FFN's
        cost is its own (`MixtureOfExperts.cost()`, or the dense FFN's two
        matmuls); the two layer norms are active parameters without matmuls.

        Args:
            sequence_length: L; defaults to the length the block was built with.
        """
        L = sequence_length or self.sequence_length
        if L is None:
            raise ValueError("`sequence_length` is needed: the block was not built on inputs with a known length.")
        d = self.attention_norm.gamma.shape[0]
        inner = self.attention.num_heads * self.attention.key_dim  # H * d_k
        attention = sum(math.prod(w.shape) for w in self.attention.weights)
        norms = sum(math.prod(w.shape) for w in (*self.attention_norm.weights, *self.ffn_norm.weights))
        if hasattr(self.ffn, "cost"):
            ffn = self.ffn.cost()
        else:  # the dense FFN: a Sequential of Dense layers
            sizes = [dense_sizes(layer) for layer in self.ffn.layers]
            params = sum(p for p, _ in sizes)
            ffn = LayerCost(params, params, 2 * sum(m for _, m in sizes))
        flops = 2 * (3 * d * inner + inner * d) + 2 * 2 * L * inner + ffn.flops_per_token
        return LayerCost(attention + norms + ffn.total_params, attention + norms + ffn.active_params, flops)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        custom_ffn = self.ffn_units is None
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "ffn_units": self.ffn_units,
                "ffn": keras.saving.serialize_keras_object(self.ffn) if custom_ffn else None,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "epsilon": self.epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
