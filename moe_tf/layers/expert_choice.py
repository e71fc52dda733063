"""`ExpertChoiceMoE`: every expert picks its top-c tokens (Zhou et al. 2022)."""

import keras
from keras import ops

from moe_tf import _checks
from moe_tf.layers._cost import expert_sizes, routed_cost
from moe_tf.layers.experts import Experts, apply_per_group
from moe_tf.layers.router import TopKRouter
from moe_tf.routing import expert_capacity


def expert_choice_capacity(num_tokens, num_experts, capacity_factor):
    """Tokens per expert of expert-choice routing, `c = ceil(n * capacity_factor / e)`, capped at n.

    Zhou et al. (2022) write `c = n * k / e`, where the capacity factor `k` is
    the average number of experts per token. The ceiling is exact (rational
    arithmetic, as `moe_tf.routing.expert_capacity`).

    Args:
        num_tokens: n, tokens in the routing group (a Python int >= 0).
        num_experts: e.
        capacity_factor: k, a float > 0 (e.g. 1 or 2).

    Returns:
        c, a Python int in `[0, n]`.

    Example:
    >>> expert_choice_capacity(8, 4, 2), expert_choice_capacity(6, 4, 1), expert_choice_capacity(4, 2, 4)
    (4, 2, 4)
    """
    if not _checks.is_int(num_tokens) or num_tokens < 0:
        raise ValueError(f"`num_tokens` must be an integer >= 0; received num_tokens={num_tokens!r}.")
    num_experts = _checks.positive_int("num_experts", num_experts)
    capacity = expert_capacity(int(num_tokens), num_experts, 1, capacity_factor)
    return int(min(capacity, num_tokens))


@keras.saving.register_keras_serializable(package="moe_tf")
class ExpertChoiceMoE(keras.layers.Layer):
    """Expert-choice Mixture of Experts: experts choose tokens (Zhou et al. 2022).

    Token-choice top-k lets each token pick k experts, so some experts
    overflow (tokens dropped) while others idle, and a balance loss is needed.
    Expert choice turns the assignment around. In each routing group of n
    tokens,

        S = softmax(X W_g)          [n, E]  affinities, softmax over experts
        G, I = TopK(S^T, c)         [E, c]  each expert's c best tokens and their scores
        y_t = sum_{(i, j): I[i, j] = t} G[i, j] * FFN_i(x_t)

    with `c = ceil(n * capacity_factor / E)`. Every expert processes exactly c
    tokens: perfect load balance by construction, no auxiliary loss. A token
    is processed by a variable number of experts, from 0 (its output is
    exactly 0: put a residual connection around the layer) to E; on average
    `E * c / n ~= capacity_factor`.

    **Not causal.** Whether expert i picks token t depends on the scores of
    all other tokens of the group, later tokens included, so a change to a
    later token can change an earlier token's output; and a group of one
    token (autoregressive decoding, one step at a time) has `c = 1`: every
    expert picks that token. Use it for encoders and classifiers, not as-is
    for decoders.

    Routing groups: an input `[batch, seq, dim]` routes each sequence on its
    own (n = seq, which must be known when the layer is called); an input
    `[tokens, dim]` is one group of all its tokens. To route over a whole
    batch as the paper does, reshape to `[1, batch * seq, dim]`; note that
    a prediction then depends on the other examples of the batch.

    Keras masks are honoured: padding tokens are never preferred over real
    ones, get gate 0 and output 0. The capacity is computed from the padded
    length n.

    Args:
        num_experts: E.
        expert_units: hidden width of each expert.
        capacity_factor: average experts per token (the paper's k; 2 in
            most of its experiments), a float > 0.
        output_units: output width; defaults to the input width.
        activation: experts' hidden activation.
        use_bias: experts use biases.
        kernel_initializer: experts' kernel initializer.
        router_kernel_initializer: router's; None = Switch's default
            (see `TopKRouter`).

    Input shape:
        `[batch, seq, dim]` or `[tokens, dim]`; optional mask `[batch, seq]`
        or `[tokens]` (1/True = real token).

    Output shape:
        `[batch, seq, output_units]` or `[tokens, output_units]`.

    Example:
    >>> moe = ExpertChoiceMoE(num_experts=8, expert_units=64, capacity_factor=2.0)
    >>> y = moe(np.random.rand(4, 16, 32).astype("float32"))  # c = 16 * 2 / 8 = 4 tokens per expert
    >>> y.shape, moe.route(np.random.rand(4, 16, 32).astype("float32"))["indices"].shape
    ((4, 16, 32), (4, 8, 4))
    """

    def __init__(
        self,
        num_experts,
        expert_units,
        capacity_factor=2.0,
        output_units=None,
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        router_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.expert_units = _checks.positive_int("expert_units", expert_units)
        self.capacity_factor = _checks.number("capacity_factor", capacity_factor, strict=True)
        self.output_units = _checks.positive_int("output_units", output_units, allow_none=True)
        self.supports_masking = True
        self.router = TopKRouter(self.num_experts, k=None, kernel_initializer=router_kernel_initializer, name="router")
        self.experts = Experts(
            self.num_experts,
            self.expert_units,
            output_units=self.output_units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            dtype=self.dtype_policy,
            name="experts",
        )
        self.group_size = None  # n, known after build for [batch, seq, dim] inputs

    def build(self, input_shape):
        dim = _checks.token_input_dim("ExpertChoiceMoE", input_shape)
        self.group_size = input_shape[-2]
        self.router.build((None, dim))
        self.experts.build((self.num_experts, None, dim))

    def capacity(self, num_tokens):
        """c, the tokens each expert picks in a group of `num_tokens`."""
        return expert_choice_capacity(num_tokens, self.num_experts, self.capacity_factor)

    def _groups(self, inputs, mask):
        """`[B, n, d]` groups (and `[B, n]` float mask) from a rank-2 or rank-3 input."""
        x = inputs if len(inputs.shape) == 3 else inputs[None]
        n = x.shape[1]
        if n is None:
            raise ValueError(
                "`ExpertChoiceMoE` needs the number of tokens per routing group when it is called, to set the "
                f"capacity c; received input of shape {tuple(inputs.shape)}. Give the sequence axis a fixed "
                "length (e.g. keras.Input((seq, dim)))."
            )
        token_mask = None
        if mask is not None:
            token_mask = ops.reshape(ops.cast(mask, "float32"), ops.shape(x)[:2])
        return x, token_mask

    def route(self, inputs, mask=None, training=None):
        """The routing decision, for inspection.

        Returns:
            A dict: `probs` `[B, n, E]` (softmax over experts), `indices`
            `[B, E, c]` int32 (expert i's tokens, best first), `gates`
            `[B, E, c]` (their scores, 0 for padding) and `experts_per_token`
            `[B, n]` (how many experts picked each token). `B` is 1 for a
            rank-2 input.
        """
        x, token_mask = self._groups(ops.convert_to_tensor(inputs), mask)
        return self._route(x, token_mask, training)

    def _route(self, x, token_mask, training):
        n = x.shape[1]
        c = self.capacity(n)
        probs = self.router(x, training=training)["probs"]  # [B, n, E] float32
        scores = probs if token_mask is None else ops.where(token_mask[..., None] > 0, probs, -1.0)
        gates, indices = ops.top_k(ops.transpose(scores, (0, 2, 1)), k=c)  # [B, E, c], [B, E, c]
        gates = ops.maximum(gates, 0.0)  # a padding token (score -1) picked when c > real tokens: gate 0
        indices = ops.cast(indices, "int32")
        picked = ops.one_hot(indices, n, dtype="float32")  # [B, E, c, n]
        if token_mask is not None:
            picked = picked * token_mask[:, None, None, :]
        return {
            "probs": probs,
            "indices": indices,
            "gates": gates,
            "experts_per_token": ops.sum(picked, axis=(1, 2)),  # [B, n]
            "dispatch": picked,
        }

    def call(self, inputs, mask=None, training=None):
        x, token_mask = self._groups(inputs, mask)
        route = self._route(x, token_mask, training)
        dispatch, gates = route["dispatch"], route["gates"]  # [B, E, c, n], [B, E, c]
        # Gather each expert's c tokens (a one-hot matmul, as in the paper's pseudo-code).
        expert_inputs = ops.einsum("becn,bnd->becd", ops.cast(dispatch, x.dtype), x)  # [B, E, c, d]
        expert_outputs = apply_per_group(self.experts, expert_inputs)  # [B, E, c, o]
        # Scatter back, weighted by the gates; a token no expert picked gets exactly 0.
        outputs = ops.einsum("becn,bec,beco->bno", dispatch, gates, expert_outputs)  # [B, n, o]
        if len(inputs.shape) == 2:
            outputs = outputs[0]
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def compute_mask(self, inputs, mask=None):
        return mask

    def active_flops_per_token(self, group_size=None):
        """Average inference FLOPs per token (2 x matmul multiply-adds), as `moe_tf.models.model_cost` counts.

        Router `d * E`, plus `E * c / n` expert paths of `d * h + h * o` on
        average (about `capacity_factor` of them). The one-hot gather and
        scatter move data and are not counted (a gather-based
        implementation does no arithmetic there).

        Args:
            group_size: n; defaults to the sequence length the layer was built with.

        Returns:
            A float (the average number of experts per token is `E * c / n`).
        """
        return self.cost(group_size).flops_per_token

    def cost(self, group_size=None):
        """Parameters and FLOPs (`moe_tf.layers.LayerCost`): the router plus `E * c / n` experts per token on average.

        Args:
            group_size: n; defaults to the sequence length the layer was built with.
        """
        n = group_size or self.group_size
        if n is None:
            raise ValueError("`group_size` is needed: the layer was not built on inputs with a known sequence length.")
        d, E = self.router.kernel.shape
        return routed_cost(self.router, *expert_sizes(self.experts, d), E * self.capacity(n) / n)

    def get_config(self):
        config = super().get_config()
        experts = self.experts
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": self.expert_units,
                "capacity_factor": self.capacity_factor,
                "output_units": self.output_units,
                "activation": keras.activations.serialize(experts.activation),
                "use_bias": experts.use_bias,
                "kernel_initializer": keras.initializers.serialize(experts.kernel_initializer),
                "router_kernel_initializer": keras.initializers.serialize(self.router.kernel_initializer),
            }
        )
        return config
