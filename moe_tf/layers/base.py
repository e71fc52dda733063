"""`MoELayer`: router -> plan -> dispatch -> experts -> combine, the one pipeline of every MoE layer.

Every MoE layer in the literature is this pipeline with a different router
(see docs/architecture.md):

    tokens [T, d] --router--> plan --dispatch--> [E, slots, d] --experts--> [E, slots, o] --combine--> [T, o]
                                                                      (+ shared experts on every token)

`MoELayer` takes any `moe_tf.layers.Router`; `MixtureOfExperts`,
`SharedExpertsMoE`, `ExpertChoiceMoE`, `SoftMoE` and `LinearExpertsMoE`
are this class with their router built from their papers' arguments. The
base class owns what they share: input and mask checks, flattening tokens
(or cutting them into routing groups), the output shape, the auxiliary
losses, the routing metrics and the cost.
"""

import keras
from keras import ops

from moe_tf import _checks, losses
from moe_tf.dispatch import DISPATCH_OPTIONS, DISPATCHERS, dense_dispatch, mask_dispatch
from moe_tf.layers._cost import LayerCost, expert_sizes
from moe_tf.layers.experts import Experts
from moe_tf.layers.router import Router
from moe_tf.metrics import RoutingMetrics, routing_entropy
from moe_tf.routing import buffer_capacity

BALANCE_LOSSES = ("switch", "shazeer", None)


def continue_seeds(initializer, offset):
    """A copy of `initializer` whose seed is `seed + offset` (unchanged when unseeded).

    `Experts` seeds expert e with `seed + e`; shared experts built after E
    routed ones continue at `seed + E`, so no two experts start equal.
    """
    initializer = keras.initializers.get(initializer)
    seed = initializer.get_config().get("seed")
    if not _checks.is_int(seed):
        return initializer
    return initializer.__class__.from_config({**initializer.get_config(), "seed": seed + offset})


@keras.saving.register_keras_serializable(package="moe_tf")
class MoELayer(keras.layers.Layer):
    """A Mixture-of-Experts layer: any router, a dispatch, E experts, and optional shared experts.

    The router reads the tokens and writes a plan (`moe_tf.plan`): a
    `SlotPlan` (token choice: each token's k experts, with a capacity of C
    slots per expert) or a `MaskPlan` (dispatch and combine weights: expert
    choice, Soft MoE). A dispatch (`moe_tf.dispatch`) moves the tokens into
    `[E, slots, d]`, the experts (`Experts`, E two-layer MLPs) run, and the
    outputs are combined with the plan's weights. Shared experts (DeepSeekMoE)
    run on every token without a gate and are added.

    Auxiliary losses go through `add_loss`, so `model.fit` trains them: the
    balance loss (token choice: `"switch"` or `"shazeer"`) times
    `balance_loss_weight` and the router z-loss times `z_loss_weight`.
    Routing statistics (`moe_tf.metrics.RoutingMetrics`) are logged by `fit`
    for every router: load per expert, dropped share, entropy, balance and
    z-loss values.

    Keras masks are honoured: padding tokens route nowhere, take no slot,
    output 0, and are left out of losses and statistics. The output carries
    the input mask on.

    Args:
        router: a `Router`: `TopKRouter` (token choice), `ExpertChoiceRouter`,
            `SoftRouter`, or your own subclass.
        expert_units: hidden width of each expert.
        output_units: output width; defaults to the input width.
        activation: experts' hidden activation.
        use_bias: experts use biases.
        kernel_initializer: experts' kernel initializer (per expert; a seed
            s gives expert e the seed s + e).
        capacity_factor: token-choice routers only: each expert holds at most
            `C = ceil(capacity_factor * k * T / E)` assignments of a batch of
            T; None = nothing dropped.
        dispatch: token-choice routers only: `"dropless"` (the default without
            a capacity), `"gather"` (the default with one) or `"einsum"`; see
            `moe_tf.dispatch`.
        num_shared_experts: K_s >= 0 experts every token goes through.
        shared_units: their hidden width; defaults to `expert_units`.
        balance_loss: token-choice routers only: `"switch"`, `"shazeer"` or None;
            `"auto"` (the default) is `"switch"` for token choice and None for
            expert choice and Soft MoE, which balance by construction.
        balance_loss_weight: weight of the balance loss (Switch: 1e-2).
        z_loss_weight: weight of the router z-loss (ST-MoE: 1e-3); 0 = off.
        log_expert_load: also log each expert's load (`<name>_load_<i>`).

    Input shape:
        `[batch, dim]` or `[batch, seq, dim]`; optional mask `[batch]` or
        `[batch, seq]` (1/True = real token). Routers that route per group
        (expert choice, Soft MoE) treat each sequence as a group, and a
        rank-2 input as one group.

    Output shape:
        `[batch, output_units]` or `[batch, seq, output_units]`.

    Example:
    >>> from moe_tf.layers import ExpertChoiceRouter, SoftRouter, TopKRouter
    >>> x = np.random.rand(2, 16, 32).astype("float32")
    >>> for router in (TopKRouter(8, k=2), ExpertChoiceRouter(8, capacity_factor=2.0), SoftRouter(8, slots_per_expert=2)):
    ...     print(type(router).__name__, MoELayer(router, expert_units=64)(x).shape)
    TopKRouter (2, 16, 32)
    ExpertChoiceRouter (2, 16, 32)
    SoftRouter (2, 16, 32)
    """

    def __init__(
        self,
        router,
        expert_units,
        output_units=None,
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        capacity_factor=None,
        dispatch=None,
        num_shared_experts=0,
        shared_units=None,
        balance_loss="auto",
        balance_loss_weight=1e-2,
        z_loss_weight=0.0,
        log_expert_load=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(router, Router):
            raise ValueError(
                f"`router` must be a moe_tf.layers.Router (TopKRouter, ExpertChoiceRouter, SoftRouter, or a "
                f"subclass); received router={router!r}."
            )
        self.router = router
        self.num_experts = router.num_experts
        # None only for a subclass whose experts are its own weights and that writes run_experts (LinearExpertsMoE)
        allow_none = type(self).run_experts is not MoELayer.run_experts
        self.expert_units = _checks.positive_int("expert_units", expert_units, allow_none=allow_none)
        self.output_units = _checks.positive_int("output_units", output_units, allow_none=True)
        token_choice = router.plan_kind == "slot"
        self.k = getattr(router, "k", None) if token_choice else None
        self.capacity_factor = _checks.number(
            "capacity_factor", capacity_factor, strict=True, allow_none=True, none_means=" for no capacity limit"
        )
        if self.capacity_factor is not None and not token_choice:
            raise ValueError(
                f"`capacity_factor` of a MoELayer applies to token-choice routing (TopKRouter); "
                f"{type(router).__name__} sets its own slots per expert. Received capacity_factor={capacity_factor!r}: "
                f"pass capacity_factor=None."
            )
        if self.capacity_factor is not None and self.k is None:
            raise ValueError(
                f"`capacity_factor` applies to sparse routing only (an integer `k`): the dense mixture "
                f"(k=None) sends every token to every expert; received capacity_factor={capacity_factor!r} "
                f"with k=None; pass k=1 or k=2 to use a capacity, or capacity_factor=None."
            )
        if (
            balance_loss == "auto"
        ):  # the Switch loss for token choice; expert choice and Soft MoE balance by construction
            balance_loss = "switch" if token_choice else None
        self.balance_loss = _checks.one_of("balance_loss", balance_loss, BALANCE_LOSSES)
        if self.balance_loss is not None and not token_choice:
            raise ValueError(
                f"`balance_loss` balances token-choice routing; {type(router).__name__} balances by construction "
                f"(every expert gets its slots). Received balance_loss={balance_loss!r}: pass balance_loss=None."
            )
        self.balance_loss_weight = _checks.number("balance_loss_weight", balance_loss_weight)
        self.z_loss_weight = _checks.number("z_loss_weight", z_loss_weight)
        self.dispatch = self._pick_dispatch(dispatch, token_choice)
        self.log_expert_load = bool(log_expert_load)
        self.supports_masking = True
        self.experts = None
        if self.expert_units is not None:
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
        if not _checks.is_int(num_shared_experts) or num_shared_experts < 0:
            raise ValueError(
                f"`num_shared_experts` must be an integer >= 0; received num_shared_experts={num_shared_experts!r}."
            )
        self.num_shared_experts = int(num_shared_experts)
        self.shared_units = _checks.positive_int("shared_units", shared_units, allow_none=True)
        self.shared = None
        if self.num_shared_experts:
            self.shared = Experts(
                self.num_shared_experts,
                self.shared_units or self.expert_units,
                output_units=self.output_units,
                activation=activation,
                use_bias=use_bias,
                kernel_initializer=continue_seeds(kernel_initializer, self.num_experts),
                dtype=self.dtype_policy,
                name="shared",
            )
        self.routing_metrics = RoutingMetrics(self.num_experts, name=self.name, per_expert=self.log_expert_load)
        self.group_size = None  # n, for routers that route per group (known after build)

    def _pick_dispatch(self, dispatch, token_choice):
        if not token_choice:
            if dispatch is not None:
                raise ValueError(
                    f"`dispatch` chooses how token-choice routing moves tokens; {type(self.router).__name__} writes "
                    f"dispatch and combine weights (a MaskPlan). Received dispatch={dispatch!r}: pass dispatch=None."
                )
            return None
        if self.k is None:  # the dense mixture runs every expert on every token: any dispatch is the same
            if dispatch is not None:
                _checks.one_of("dispatch", dispatch, DISPATCH_OPTIONS)
            return None
        if dispatch is None:
            return "dropless" if self.capacity_factor is None else "gather"
        dispatch = _checks.one_of("dispatch", dispatch, DISPATCH_OPTIONS)
        if dispatch == "dropless" and self.capacity_factor is not None:
            raise ValueError(
                f"`dispatch='dropless'` never drops a token, so it takes no capacity: received "
                f"capacity_factor={self.capacity_factor!r}. Pass capacity_factor=None for dropless routing, or "
                f"dispatch='gather' (or 'einsum') to use a capacity."
            )
        return dispatch

    def build(self, input_shape):
        dim = _checks.token_input_dim(type(self).__name__, input_shape)
        if self.router.per_group:
            self.group_size = input_shape[-2]
        if not self.router.built:  # a router given to MoELayer arrives built when a .keras file is loaded
            self.router.build((None, None, dim) if self.router.per_group else (None, dim))
        if not self.experts.built:
            self.experts.build((self.num_experts, None, dim))
        if self.shared is not None and not self.shared.built:
            self.shared.build((None, dim))

    # -- the pipeline -----------------------------------------------------------

    def _check_mask(self, inputs, mask):
        expected = tuple(inputs.shape[:-1])
        got = tuple(mask.shape)
        compatible = len(got) == len(expected) and all(a is None or b is None or a == b for a, b in zip(got, expected))
        if not compatible:
            raise ValueError(
                f"`mask` must have the input's shape without its last axis, {expected}; "
                f"received mask of shape {got} for input of shape {tuple(inputs.shape)}."
            )

    def _tokens(self, inputs, mask):
        """The router's input: `[T, d]` tokens and `[T]` mask, or `[G, n, d]` groups and `[G, n]` mask."""
        if mask is not None:
            self._check_mask(inputs, mask)
        dim = inputs.shape[-1]
        if not self.router.per_group:
            tokens = ops.reshape(inputs, (-1, dim))  # [T, d]
            return tokens, None if mask is None else ops.reshape(ops.cast(mask, "float32"), (-1,))
        groups = inputs if len(inputs.shape) == 3 else inputs[None]  # [G, n, d]; rank 2: one group
        if groups.shape[1] is None:
            raise ValueError(
                f"`{type(self).__name__}` routes each sequence as a group and needs its length when it is called; "
                f"received input of shape {tuple(inputs.shape)}. Give the sequence axis a fixed length "
                "(e.g. keras.Input((seq, dim)))."
            )
        token_mask = None if mask is None else ops.reshape(ops.cast(mask, "float32"), ops.shape(groups)[:2])
        return groups, token_mask

    def capacity(self, num_tokens):
        """Slots per expert for a batch of `num_tokens` tokens (token choice); None when there is no limit.

        `capacity_factor` gives `ceil(capacity_factor * k * T / E)`. Without
        one, the gather and einsum dispatches give every expert T slots
        (nothing dropped, the dense mixture's compute); the dropless dispatch
        needs none.
        """
        if self.k is None or self.dispatch == "dropless":
            return None
        if self.capacity_factor is None:
            return num_tokens
        return buffer_capacity(num_tokens, self.num_experts, self.k, self.capacity_factor)

    def routing_plan(self, inputs, mask=None, training=None):
        """The router's plan (`moe_tf.plan`) for `inputs`, for inspection; as `call` makes it."""
        inputs = ops.convert_to_tensor(inputs)
        if not self.built:
            self.build(inputs.shape)
        return self._route(*self._tokens(inputs, mask), training)

    def _route(self, tokens, token_mask=None, training=None):
        """The router's plan for `[T, d]` tokens (`[G, n, d]` groups for per-group routers)."""
        if self.router.plan_kind == "slot":
            capacity = self.capacity(ops.shape(tokens)[0])
            return self.router(tokens, training=training, token_mask=token_mask, capacity=capacity)
        return self.router(tokens, training=training, token_mask=token_mask)

    def run_experts(self, tokens, plan):
        """Dispatch, experts, combine: `[T, o]` (or `[G, n, o]`) float32 outputs of the routed experts."""
        if self.router.plan_kind == "mask":
            return mask_dispatch(tokens, plan, self.experts)
        if plan.indices is None:
            return dense_dispatch(tokens, plan, self.experts)
        return DISPATCHERS[self.dispatch](tokens, plan, self.experts)

    def call(self, inputs, mask=None, training=None):
        tokens, token_mask = self._tokens(inputs, mask)
        plan = self._route(tokens, token_mask, training)
        outputs = self.run_experts(tokens, plan)  # [T, o] or [G, n, o]
        if self.shared is not None:  # every token, no gate
            shared = ops.sum(ops.cast(self.shared(ops.reshape(tokens, (-1, tokens.shape[-1]))), "float32"), axis=0)
            if token_mask is not None:
                shared = shared * ops.reshape(token_mask, (-1, 1))
            outputs = outputs + ops.reshape(shared, ops.shape(outputs))
        self.add_losses_and_metrics(plan)
        out_dim = self.output_units or inputs.shape[-1]
        outputs = ops.reshape(outputs, tuple(ops.shape(inputs)[:-1]) + (out_dim,))
        return ops.cast(outputs, self.compute_dtype)

    # -- auxiliary losses and statistics ----------------------------------------

    def add_losses_and_metrics(self, plan):
        """Adds the balance and z-losses (`add_loss`) and updates `routing_metrics` from a plan."""
        probs, choices, token_mask = self._routing_summary(plan)  # [T, E], [T, k, E], [T] or None
        if self.balance_loss == "shazeer":
            balance = losses.importance_loss(plan.dense_gates(), mask=token_mask)
            if plan.indices is not None:
                balance = balance + losses.load_loss(
                    plan.clean_logits, plan.logits, plan.noise_stddev, self.k, mask=token_mask
                )
        else:  # "switch", or the Switch value as a diagnostic when no loss is trained
            balance = losses.switch_balance_loss(probs, choices, mask=token_mask)
        logits = ops.reshape(plan.logits, (-1, plan.logits.shape[-1]))
        z_loss = losses.router_z_loss(logits, mask=token_mask)
        if self.balance_loss is not None and self.balance_loss_weight > 0:
            self.add_loss(self.balance_loss_weight * balance)
        if self.z_loss_weight > 0:
            self.add_loss(self.z_loss_weight * z_loss)
        routed, dropped = self._load(plan, choices, token_mask)
        num_real = ops.cast(ops.shape(probs)[0], "float32") if token_mask is None else ops.sum(token_mask)
        self.routing_metrics.update_state(
            counts=routed,
            tokens=num_real,
            dropped=dropped,
            entropy_sum=routing_entropy(probs, token_mask) * num_real,
            balance_loss=balance,
            z_loss=z_loss,
        )

    def _routing_summary(self, plan):
        """Flat `[T, E]` probabilities, `[T, k, E]` choices (top-1 for mask plans) and `[T]` mask."""
        token_mask = None if plan.token_mask is None else ops.reshape(plan.token_mask, (-1,))
        if self.router.plan_kind == "slot":
            return plan.probs, plan.choices(), token_mask
        probs = ops.reshape(plan.probs, (-1, plan.probs.shape[-1]))  # [T, E]
        choices = ops.one_hot(ops.argmax(probs, axis=-1), self.num_experts, dtype="float32")[:, None, :]
        if token_mask is not None:
            choices = choices * token_mask[:, None, None]
        return probs, choices, token_mask

    def _load(self, plan, choices, token_mask):
        """`[E]` assignments each expert was sent, and the assignments (or tokens) that did not run."""
        if self.router.plan_kind == "mask":  # slots each expert filled; tokens no slot took
            routed = ops.sum(plan.dispatch, axis=(0, 1, 3))  # [E]
            taken = ops.reshape(ops.sum(plan.dispatch, axis=(2, 3)), (-1,))  # [T]
            missed = ops.cast(taken <= 0, "float32")
            return routed, ops.sum(missed if token_mask is None else missed * token_mask)
        routed = ops.sum(choices, axis=(0, 1))  # [E], router choices before capacity
        if plan.indices is None:
            return routed, ops.zeros((), "float32")
        return routed, ops.sum(routed) - ops.sum(plan.keep)

    # -- shapes, cost, config -----------------------------------------------------

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def compute_mask(self, inputs, mask=None):
        return mask

    def cost(self, group_size=None):
        """Parameters and FLOPs (see `moe_tf.layers.LayerCost`): the router's plan over the experts, plus shared experts.

        The router knows how many expert paths a token uses (`Router.layer_cost`):
        k of E for top-k, all E for the dense mixture, `E * c / n` on average
        for expert choice, `S / m` slots for Soft MoE. Capacity and dispatch
        change the compute the hardware does, not the model's cost per token.

        Args:
            group_size: n, tokens per routing group, for routers that route per
                group; defaults to the sequence length the layer was built with.
        """
        return self._with_shared(self.router.layer_cost(self.experts, group_size or self.group_size))

    def _with_shared(self, cost):
        if self.shared is None:
            return cost
        per_shared, path = expert_sizes(self.shared, self.shared.hidden_kernel.shape[1])
        K = self.num_shared_experts
        return LayerCost(
            cost.total_params + K * per_shared, cost.active_params + K * per_shared, cost.flops_per_token + 2 * K * path
        )

    def active_flops_per_token(self, group_size=None):
        """Inference FLOPs per token (2 x matmul multiply-adds): `cost(group_size).flops_per_token`."""
        return self.cost(group_size).flops_per_token

    def get_config(self):
        config = super().get_config()
        if self.experts is not None:
            experts = self.experts
            config.update(
                {
                    "expert_units": self.expert_units,
                    "activation": keras.activations.serialize(experts.activation),
                    "use_bias": experts.use_bias,
                    "kernel_initializer": keras.initializers.serialize(experts.kernel_initializer),
                }
            )
        config.update(
            {
                "router": keras.saving.serialize_keras_object(self.router),
                "output_units": self.output_units,
                "capacity_factor": self.capacity_factor,
                "dispatch": self.dispatch,
                "num_shared_experts": self.num_shared_experts,
                "shared_units": self.shared_units,
                "balance_loss": self.balance_loss,
                "balance_loss_weight": self.balance_loss_weight,
                "z_loss_weight": self.z_loss_weight,
                "log_expert_load": self.log_expert_load,
            }
        )
        return config

    def load_own_variables(self, store):
        # moe_tf 0.1 kept SoftMoE's slot embeddings (and scale) on the layer itself; the router holds them now.
        if len(store.keys()) and not self._own_variables():
            self.router.load_own_variables(store)
            self.router._loaded_by_layer = True
            return
        super().load_own_variables(store)

    def _own_variables(self):
        """The variables this layer holds itself (not its router's, experts' or metrics')."""
        return self._trainable_variables + self._non_trainable_variables

    @classmethod
    def from_config(cls, config):
        if isinstance(config.get("router"), dict):
            config = {**config, "router": keras.saving.deserialize_keras_object(config["router"])}
        return cls(**config)
