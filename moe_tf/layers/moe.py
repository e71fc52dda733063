"""`MixtureOfExperts`: a router, E experts, capacity, and balance losses."""

import keras
from keras import ops

from moe_tf import _checks, losses
from moe_tf.dispatch import DISPATCH_OPTIONS, DISPATCHERS, dropless_dispatch
from moe_tf.layers._aux import add_losses_and_metrics
from moe_tf.layers._cost import expert_sizes, routed_cost
from moe_tf.layers.experts import Experts
from moe_tf.layers.router import TopKRouter
from moe_tf.metrics import RoutingMetrics
from moe_tf.routing import buffer_capacity, capacity_positions

BALANCE_LOSSES = ("switch", "shazeer", None)


@keras.saving.register_keras_serializable(package="moe_tf")
class MixtureOfExperts(keras.layers.Layer):
    """Mixture-of-Experts feed-forward layer, dense or sparse.

    - `k=None`: the dense mixture (Jacobs et al. 1991): every expert runs on
      every token and the output is `sum_i softmax(x W_g)_i * expert_i(x)`.
    - `k` an integer: sparse top-k gating (Shazeer et al. 2017; Switch for
      k=1). Each token runs through its k best experts only; compute per token
      is about k/E of the dense mixture while all E experts' parameters exist.

    With `capacity_factor`, expert e holds at most
    `C = ceil(capacity_factor * k * T / E)` tokens of a batch of T. Slots go
    to all first choices before any second choice, then in token order;
    an assignment past capacity is dropped and contributes exactly 0 (a token
    whose every choice is dropped outputs 0: add a residual connection around
    the layer to pass it through). `capacity_factor=None` drops nothing, and
    by default still costs about k/E of the dense mixture: the `"dropless"`
    dispatch lays each expert's tokens out in blocks and runs about `k*T`
    rows of expert compute (see `moe_tf.dispatch.dropless_dispatch`). Its
    blocks pay off when `k*T` is large against E: with few tokens per expert
    (say 125 tokens, 64 experts) every tiny block still reads and updates a
    whole weight matrix, and a capacity factor is faster.

    Auxiliary losses are added with `add_loss`, so `model.fit` trains them:
    the balance loss (`"switch"`: `E * sum f_i P_i`; `"shazeer"`: importance
    + load CV^2) times `balance_loss_weight`, and the router z-loss times
    `z_loss_weight`. With `k=None`, the Switch loss counts each token's top-1
    expert as its assignment. Routing statistics are logged by `fit` (see
    `moe_tf.metrics.RoutingMetrics`).

    With `bias_update_rate=gamma > 0` the router balances without an
    auxiliary loss (DeepSeek-V3): a per-expert bias, used only to choose the
    top-k experts and never in the gate values, moves by
    `gamma * sign(mean_load - load_i)` after every training batch (see
    `TopKRouter`). Combine it with `balance_loss=None` for a loss-free
    router; it is read as `layer.router.selection_bias`.

    Keras masks are honoured: padding tokens route nowhere, take no capacity,
    output 0, and are left out of losses and statistics. The output carries
    the input mask on.

    Args:
        num_experts: E, the number of experts.
        expert_units: hidden width of each expert.
        k: experts per token; None for the dense mixture.
        capacity_factor: float > 0, or None for no token dropping. Needs an
            integer k (a ValueError with the dense mixture).
        output_units: output width; defaults to the input width.
        activation: experts' hidden activation.
        noise: router noise, `"none"`, `"gaussian"` or `"jitter"`.
        noise_epsilon: see `TopKRouter`.
        renormalize: top-k gates sum to 1; None means `k > 1` (see `TopKRouter`).
        balance_loss: `"switch"`, `"shazeer"` or None.
        balance_loss_weight: weight of the balance loss (Switch: 1e-2).
        z_loss_weight: weight of the router z-loss (ST-MoE: 1e-3); 0 = off.
        dispatch: how tokens reach their experts (see `moe_tf.dispatch`):
            `"dropless"` (no capacity, blocks of rows per expert; the default
            when `capacity_factor=None`), `"gather"` (capacity slots, linear
            memory; the default with a capacity factor) or `"einsum"`
            (one-hot dispatch/combine tensors, for teaching). `"gather"` and
            `"einsum"` with `capacity_factor=None` give every expert T slots:
            nothing dropped, but the dense mixture's compute.
        use_bias: experts use biases.
        kernel_initializer: experts' kernel initializer.
        router_kernel_initializer: router's; None = Switch's default.
        seed: seed for the router noise.
        log_expert_load: also log each expert's load fraction in `fit`
            (`<name>_load_<i>`); off by default to keep progress bars short.
        bias_update_rate: gamma of the auxiliary-loss-free selection bias
            (DeepSeek-V3: 1e-3); 0 (the default) = no bias. Needs an integer k.

    Input shape:
        `[batch, dim]` or `[batch, seq, dim]`; optional mask `[batch]` or
        `[batch, seq]` (1/True = real token).

    Output shape:
        `[batch, output_units]` or `[batch, seq, output_units]`.

    Example:
    >>> moe = MixtureOfExperts(num_experts=8, expert_units=64, k=2, capacity_factor=1.25)
    >>> y = moe(np.random.rand(4, 10, 32).astype("float32"))
    >>> y.shape, len(moe.losses)
    ((4, 10, 32), 1)
    """

    def __init__(
        self,
        num_experts,
        expert_units,
        k=None,
        capacity_factor=None,
        output_units=None,
        activation="relu",
        noise="none",
        noise_epsilon=1e-2,
        renormalize=None,
        balance_loss="switch",
        balance_loss_weight=1e-2,
        z_loss_weight=0.0,
        dispatch=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        router_kernel_initializer=None,
        seed=None,
        log_expert_load=False,
        bias_update_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.expert_units = _checks.positive_int("expert_units", expert_units)
        self.k = None if k is None else _checks.top_k(k, self.num_experts)
        self.capacity_factor = _checks.number(
            "capacity_factor", capacity_factor, strict=True, allow_none=True, none_means=" for no capacity limit"
        )
        if self.k is None and self.capacity_factor is not None:
            raise ValueError(
                f"`capacity_factor` applies to sparse routing only (an integer `k`): the dense mixture "
                f"(k=None) sends every token to every expert; received capacity_factor={capacity_factor!r} "
                f"with k=None; pass k=1 or k=2 to use a capacity, or capacity_factor=None."
            )
        self.output_units = _checks.positive_int("output_units", output_units, allow_none=True)
        self.balance_loss = _checks.one_of("balance_loss", balance_loss, BALANCE_LOSSES)
        self.balance_loss_weight = _checks.number("balance_loss_weight", balance_loss_weight)
        self.z_loss_weight = _checks.number("z_loss_weight", z_loss_weight)
        if dispatch is None:
            dispatch = "dropless" if self.capacity_factor is None else "gather"
        self.dispatch = _checks.one_of("dispatch", dispatch, DISPATCH_OPTIONS)
        if self.dispatch == "dropless" and self.capacity_factor is not None:
            raise ValueError(
                f"`dispatch='dropless'` never drops a token, so it takes no capacity: received "
                f"capacity_factor={capacity_factor!r}. Pass capacity_factor=None for dropless routing, or "
                f"dispatch='gather' (or 'einsum') to use a capacity."
            )
        self.seed = seed
        self.log_expert_load = bool(log_expert_load)
        self.supports_masking = True
        self.router = TopKRouter(
            self.num_experts,
            k=self.k,
            noise=noise,
            noise_epsilon=noise_epsilon,
            renormalize=renormalize,
            kernel_initializer=router_kernel_initializer,
            seed=seed,
            bias_update_rate=bias_update_rate,
            name="router",
        )
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
        self.routing_metrics = RoutingMetrics(self.num_experts, name=self.name, per_expert=self.log_expert_load)

    def build(self, input_shape):
        dim = _checks.token_input_dim("MixtureOfExperts", input_shape)
        self.router.build((None, dim))
        self.experts.build((self.num_experts, None, dim))

    # -- helpers --------------------------------------------------------------

    def _check_mask(self, inputs, mask):
        expected = tuple(inputs.shape[:-1])
        got = tuple(mask.shape)
        compatible = len(got) == len(expected) and all(
            a is None or b is None or a == b for a, b in zip(got, expected)
        )
        if not compatible:
            raise ValueError(
                f"`mask` must have the input's shape without its last axis, {expected}; "
                f"received mask of shape {got} for input of shape {tuple(inputs.shape)}."
            )

    def _balance_value(self, route, expert_mask, token_mask):
        if self.balance_loss == "shazeer":
            value = losses.importance_loss(route["gates"], mask=token_mask)
            if self.k is not None:
                value = value + losses.load_loss(
                    route["clean_logits"], route["logits"], route["noise_stddev"], self.k, mask=token_mask
                )
            return value
        # "switch", or the Switch value as a diagnostic when no loss is trained.
        return losses.switch_balance_loss(route["probs"], expert_mask, mask=token_mask)

    # -- forward ----------------------------------------------------------------

    def call(self, inputs, mask=None, training=None):
        if mask is not None:
            self._check_mask(inputs, mask)
        dim = inputs.shape[-1]
        tokens = ops.reshape(inputs, (-1, dim))  # [T, d]
        token_mask = None if mask is None else ops.reshape(ops.cast(mask, "float32"), (-1,))  # [T]
        route = self.router(tokens, training=training, token_mask=token_mask)
        E = self.num_experts

        if self.k is None:  # dense mixture: every expert sees every token
            gates = route["gates"]  # [T, E]
            if token_mask is not None:
                gates = gates * token_mask[:, None]
            expert_inputs = ops.broadcast_to(tokens[None], (E,) + tuple(ops.shape(tokens)))  # [E, T, d]
            expert_outputs = ops.cast(self.experts(expert_inputs), "float32")  # [E, T, d_out]
            outputs = ops.einsum("te,eto->to", gates, expert_outputs)  # [T, d_out]
            expert_mask = ops.one_hot(ops.argmax(route["probs"], axis=-1), E)  # top-1, for statistics
            routed = ops.sum(expert_mask * (1.0 if token_mask is None else token_mask[:, None]), axis=0)
            dropped = ops.zeros((), "float32")
        else:
            indices = route["indices"]  # [T, k]
            if self.dispatch == "dropless":  # every assignment runs; only padding is left out
                keep = ops.ones_like(route["top_gates"])  # [T, k]
                if token_mask is not None:
                    keep = keep * token_mask[:, None]
                weights = route["top_gates"] * keep  # [T, k]
                outputs = dropless_dispatch(tokens, indices, weights, keep, self.experts, E)
            else:
                num_tokens = ops.shape(tokens)[0]
                capacity = buffer_capacity(num_tokens, E, self.k, self.capacity_factor)
                positions, keep = capacity_positions(indices, E, capacity, token_mask)  # [T, k], [T, k]
                weights = route["top_gates"] * keep  # [T, k]
                dispatcher = DISPATCHERS[self.dispatch]
                outputs = dispatcher(tokens, indices, positions, weights, keep, self.experts, E, capacity)
            expert_mask = ops.one_hot(indices, E)  # [T, k, E], router choices before capacity
            if token_mask is not None:
                expert_mask = expert_mask * token_mask[:, None, None]
            routed = ops.sum(expert_mask, axis=(0, 1))  # [E]
            dropped = ops.sum(routed) - ops.sum(keep)

        # Auxiliary losses (float32) through add_loss, so fit() minimises them; routing metrics.
        balance = self._balance_value(route, expert_mask, token_mask)
        add_losses_and_metrics(self, route, balance, routed, dropped, token_mask)

        out_dim = self.output_units or dim
        outputs = ops.reshape(outputs, tuple(ops.shape(inputs)[:-1]) + (out_dim,))
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def compute_mask(self, inputs, mask=None):
        return mask

    def cost(self):
        """Parameters and FLOPs (see `moe_tf.layers.LayerCost`): the router plus k of the E experts per token.

        The dense mixture (`k=None`) uses all E. Capacity and dispatch change
        the compute the hardware does, not the model's cost per token.
        """
        k = self.num_experts if self.k is None else self.k
        return routed_cost(self.router, *expert_sizes(self.experts, self.router.kernel.shape[0]), k)

    def get_config(self):
        config = super().get_config()
        router, experts = self.router, self.experts
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": self.expert_units,
                "k": self.k,
                "capacity_factor": self.capacity_factor,
                "output_units": self.output_units,
                "activation": keras.activations.serialize(experts.activation),
                "noise": router.noise,
                "noise_epsilon": router.noise_epsilon,
                "renormalize": router.renormalize,
                "balance_loss": self.balance_loss,
                "balance_loss_weight": self.balance_loss_weight,
                "z_loss_weight": self.z_loss_weight,
                "dispatch": self.dispatch,
                "use_bias": experts.use_bias,
                "kernel_initializer": keras.initializers.serialize(experts.kernel_initializer),
                "router_kernel_initializer": keras.initializers.serialize(router.kernel_initializer),
                "seed": self.seed,
                "log_expert_load": self.log_expert_load,
                "bias_update_rate": router.bias_update_rate,
            }
        )
        return config
