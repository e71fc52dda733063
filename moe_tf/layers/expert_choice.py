"""`ExpertChoiceMoE`: every expert picks its top-c tokens (Zhou et al. 2022)."""

import keras
from keras import ops

from moe_tf import _checks
from moe_tf.layers._cost import expert_sizes, routed_cost
from moe_tf.layers.base import MoELayer
from moe_tf.layers.router import Router, default_router_initializer
from moe_tf.plan import MaskPlan
from moe_tf.routing import expert_capacity, softmax_gates


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
class ExpertChoiceRouter(Router):
    """Expert choice (Zhou et al. 2022): every expert picks its c best tokens of each group.

        S = softmax(X W_g)          [n, E]  affinities, softmax over experts
        G, I = TopK(S^T, c)         [E, c]  each expert's c best tokens and their scores

    with `c = ceil(n * capacity_factor / E)` (`expert_choice_capacity`). The
    plan is a `MaskPlan`: a one-hot `dispatch[g, t, e, j]` (token t is expert
    e's j-th pick) and `combine = dispatch * G`. Padding tokens are never
    preferred over real ones and get gate 0.

    Args:
        num_experts: E.
        capacity_factor: average experts per token (the paper's k), a float > 0.
        kernel_initializer: of the `[d, E]` kernel; None = Switch's default.

    Call arguments:
        inputs: `[G, n, d]` groups of tokens.
        token_mask: optional `[G, n]`, 1 for real tokens.

    Output:
        A `moe_tf.plan.MaskPlan` with `[G, n, E, c]` dispatch and combine.

    Example:
    >>> router = ExpertChoiceRouter(num_experts=4, capacity_factor=2.0)
    >>> tuple(router(np.random.rand(2, 8, 16).astype("float32")).dispatch.shape)  # c = 8 * 2 / 4
    (2, 8, 4, 4)
    """

    plan_kind = "mask"
    per_group = True

    def __init__(self, num_experts, capacity_factor=2.0, kernel_initializer=None, **kwargs):
        super().__init__(num_experts, **kwargs)
        self.capacity_factor = _checks.number("capacity_factor", capacity_factor, strict=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or default_router_initializer())

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.num_experts), initializer=self.kernel_initializer, name="kernel"
        )

    def capacity(self, num_tokens):
        """c, the tokens each expert picks in a group of `num_tokens`."""
        return expert_choice_capacity(num_tokens, self.num_experts, self.capacity_factor)

    def choose(self, inputs, token_mask=None):
        """Each expert's picks: `(logits [G, n, E], probs [G, n, E], gates [G, E, c], indices [G, E, c] int32)`."""
        logits = ops.matmul(ops.cast(inputs, "float32"), self.kernel)  # [G, n, E]
        probs = softmax_gates(logits)  # [G, n, E]
        scores = probs if token_mask is None else ops.where(token_mask[..., None] > 0, probs, -1.0)
        gates, indices = ops.top_k(ops.transpose(scores, (0, 2, 1)), k=self.capacity(inputs.shape[1]))  # [G, E, c]
        gates = ops.maximum(gates, 0.0)  # a padding token (score -1) picked when c > real tokens: gate 0
        return logits, probs, gates, ops.cast(indices, "int32")

    def call(self, inputs, training=None, token_mask=None):
        logits, probs, gates, indices = self.choose(inputs, token_mask)
        picked = ops.one_hot(indices, inputs.shape[1], dtype="float32")  # [G, E, c, n]
        if token_mask is not None:
            picked = picked * token_mask[:, None, None, :]
        dispatch = ops.transpose(picked, (0, 3, 1, 2))  # [G, n, E, c]
        combine = dispatch * gates[:, None, :, :]  # [G, n, E, c]
        return MaskPlan(dispatch=dispatch, combine=combine, probs=probs, logits=logits, token_mask=token_mask)

    def layer_cost(self, experts, group_size=None):
        """The router plus `E * c / n` experts per token on average (n: `group_size`)."""
        if group_size is None:
            raise ValueError("`group_size` is needed: the layer was not built on inputs with a known sequence length.")
        d, E = self.kernel.shape
        return routed_cost(self, *expert_sizes(experts, d), E * self.capacity(group_size) / group_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "capacity_factor": self.capacity_factor,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="moe_tf")
class ExpertChoiceMoE(MoELayer):
    """Expert-choice Mixture of Experts: experts choose tokens (Zhou et al. 2022); a `MoELayer` with an `ExpertChoiceRouter`.

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
    >>> tuple(y.shape), tuple(moe.route(np.random.rand(4, 16, 32).astype("float32"))["indices"].shape)
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
        log_expert_load=False,
        **kwargs,
    ):
        num_experts = _checks.positive_int("num_experts", num_experts)
        router = ExpertChoiceRouter(
            num_experts, capacity_factor=capacity_factor, kernel_initializer=router_kernel_initializer, name="router"
        )
        super().__init__(
            router,
            expert_units,
            output_units=output_units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            balance_loss=None,
            log_expert_load=log_expert_load,
            **kwargs,
        )
        self.capacity_factor = router.capacity_factor

    def capacity(self, num_tokens):
        """c, the tokens each expert picks in a group of `num_tokens`."""
        return self.router.capacity(num_tokens)

    def route(self, inputs, mask=None, training=None):
        """The routing decision, for inspection.

        Returns:
            A dict: `probs` `[B, n, E]` (softmax over experts), `indices`
            `[B, E, c]` int32 (expert i's tokens, best first), `gates`
            `[B, E, c]` (their scores, 0 for padding) and `experts_per_token`
            `[B, n]` (how many experts picked each token). `B` is 1 for a
            rank-2 input.
        """
        inputs = ops.convert_to_tensor(inputs)
        if not self.built:
            self.build(inputs.shape)
        groups, token_mask = self._tokens(inputs, mask)
        _, probs, gates, indices = self.router.choose(groups, token_mask)
        plan = self.router(groups, token_mask=token_mask)
        return {
            "probs": probs,
            "indices": indices,
            "gates": gates,
            "experts_per_token": ops.sum(plan.dispatch, axis=(2, 3)),  # [B, n]
        }

    def active_flops_per_token(self, group_size=None):
        """Average inference FLOPs per token (2 x matmul multiply-adds), as `moe_tf.cost.model_cost` counts.

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

    def get_config(self):
        config = super().get_config()
        for key in ("router", "capacity_factor", "dispatch", "balance_loss", "balance_loss_weight"):  # set by the class
            del config[key]
        config.update(
            {
                "num_experts": self.num_experts,
                "capacity_factor": self.capacity_factor,
                "router_kernel_initializer": keras.initializers.serialize(self.router.kernel_initializer),
            }
        )
        return config
