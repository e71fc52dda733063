"""`Experts`: E independent feed-forward networks with stacked weights."""

import keras
from keras import ops

from moe_tf import _checks


def _per_expert_initializer(initializer, num_experts):
    """Initialises a `[E, fan_in, fan_out]` kernel one expert at a time.

    Calling e.g. Glorot on the 3-D shape would compute its fans over all
    experts (`fan_in = E * d`) and shrink every expert's weights by ~sqrt(E).
    Each expert gets a fresh copy of the initializer, so experts differ: an
    unseeded Keras initializer repeats its values on every call, and a seeded
    one gets seed + e for expert e (reproducible, and still distinct).
    """
    initializer = keras.initializers.get(initializer)

    def init(shape, dtype=None):
        config = initializer.get_config()
        seed = config.get("seed")
        parts = []
        for e in range(num_experts):
            if _checks.is_int(seed):
                config = {**config, "seed": seed + e}
            one = initializer.__class__.from_config(config)
            parts.append(one(shape[1:], dtype=dtype))
        return ops.stack(parts, axis=0)

    return init


def _take_rows(weights, ids):
    """`weights[ids]` whose gradient is a dense `[E, ...]` tensor, not TensorFlow's `IndexedSlices`.

    The default gradient of a gather is sparse (`IndexedSlices`): user code that
    reads an expert kernel's gradient (`abs`, `numpy`) breaks on it, and
    outside XLA converting it back to dense is slow. A segment sum over the
    expert ids is the same gradient, dense.
    """
    num_experts = weights.shape[0]

    @ops.custom_gradient
    def take(w):
        def grad(upstream, variables=None):  # TensorFlow may pass the variables it saw read inside
            dense = ops.segment_sum(upstream, ids, num_segments=num_experts)  # [E, ...]
            return dense if variables is None else (dense, [None] * len(variables))

        return ops.take(w, ids, axis=0), grad

    return take(ops.convert_to_tensor(weights))  # a tensor, so the gradient flows on to the variable


@keras.saving.register_keras_serializable(package="moe_tf")
class Experts(keras.layers.Layer):
    """A stack of E independent two-layer MLP experts: `d -> units -> output`.

    Expert e computes `act(x @ W1[e] + b1[e]) @ W2[e] + b2[e]`. All experts'
    weights live in one `[E, ...]` tensor so a single batched matmul runs
    them all; nothing is shared between experts. With biases, each expert
    has `d*units + units + units*d_out + d_out` parameters.

    Args:
        num_experts: E, number of experts.
        units: hidden width of each expert.
        output_units: output width; defaults to the input width `d`.
        activation: hidden activation (name or callable).
        use_bias: whether the two projections have biases.
        kernel_initializer: applied to each expert's kernels separately.
        bias_initializer: initializer of the biases.

    Call arguments:
        inputs: `[E, N, d]`: for each expert, the N tokens it processes; or
            `[N, d]`: the same N tokens for every expert (the dense mixture,
            shared experts), read once rather than copied E times.
        expert_ids: optional `[G]` int expert of each group; then `inputs`
            is `[G, N, d]` and group g runs through expert `expert_ids[g]`
            (several groups may share an expert; used by the dropless
            dispatch, whose blocks of rows each belong to one expert).

    Input shape:
        `[E, N, d]`, `[N, d]` (shared), or `[G, N, d]` with `expert_ids`.

    Output shape:
        `[E, N, output_units]` (or `[G, N, output_units]`).

    Example:
    >>> experts = Experts(num_experts=4, units=32)
    >>> tuple(experts(np.zeros((4, 10, 8))).shape)
    (4, 10, 8)
    >>> tuple(experts(np.zeros((10, 8))).shape)  # every expert on the same 10 tokens
    (4, 10, 8)
    """

    def __init__(
        self,
        num_experts,
        units,
        output_units=None,
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.units = _checks.positive_int("units", units)
        self.output_units = _checks.positive_int("output_units", output_units, allow_none=True)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"`Experts` expects inputs of shape [num_experts, tokens, dim] (or [tokens, dim], shared by every "
                f"expert); received input_shape={tuple(input_shape)}."
            )
        dim = input_shape[-1]
        out = self.output_units or dim
        init = _per_expert_initializer(self.kernel_initializer, self.num_experts)
        E = self.num_experts
        self.hidden_kernel = self.add_weight(shape=(E, dim, self.units), initializer=init, name="hidden_kernel")
        self.output_kernel = self.add_weight(shape=(E, self.units, out), initializer=init, name="output_kernel")
        if self.use_bias:
            self.hidden_bias = self.add_weight(
                shape=(E, self.units), initializer=self.bias_initializer, name="hidden_bias"
            )
            self.output_bias = self.add_weight(shape=(E, out), initializer=self.bias_initializer, name="output_bias")

    def call(self, inputs, expert_ids=None):
        if expert_ids is None:  # group e of the input goes to expert e
            w1, w2 = self.hidden_kernel, self.output_kernel  # [E, d, units], [E, units, out]
            b1, b2 = (self.hidden_bias, self.output_bias) if self.use_bias else (None, None)
        else:  # group g goes to expert expert_ids[g] (the dropless dispatch's blocks)
            take = lambda w: _take_rows(w, expert_ids)  # noqa: E731  [G, ...]
            w1, w2 = take(self.hidden_kernel), take(self.output_kernel)
            b1, b2 = (take(self.hidden_bias), take(self.output_bias)) if self.use_bias else (None, None)
        if len(inputs.shape) == 2:  # [N, d], shared: one read of the tokens for all E experts
            hidden = ops.einsum("nd,edh->enh", inputs, w1)  # [E, N, units]
        else:
            hidden = ops.einsum("end,edh->enh", inputs, w1)  # [G, N, units]
        if b1 is not None:
            hidden = hidden + b1[:, None, :]
        hidden = self.activation(hidden)
        outputs = ops.einsum("enh,eho->eno", hidden, w2)  # [G, N, out]
        if b2 is not None:
            outputs = outputs + b2[:, None, :]
        return outputs

    def compute_output_shape(self, input_shape):
        lead = tuple(input_shape[:-1]) if len(input_shape) == 3 else (self.num_experts, input_shape[0])
        return lead + (self.output_units or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "units": self.units,
                "output_units": self.output_units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
