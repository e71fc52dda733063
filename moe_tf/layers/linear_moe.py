"""`LinearExpertsMoE`: a mixture of linear experts for wide (sparse) inputs such as bags of n-grams."""

import keras
from keras import ops

from moe_tf import _checks, losses
from moe_tf.layers._aux import add_losses_and_metrics
from moe_tf.layers._cost import routed_cost
from moe_tf.layers.router import TopKRouter
from moe_tf.metrics import RoutingMetrics
from moe_tf.routing import buffer_capacity, capacity_positions


@keras.saving.register_keras_serializable(package="moe_tf")
class LinearExpertsMoE(keras.layers.Layer):
    """Mixture of E linear experts with a softmax or top-k router, on wide or sparse inputs.

    The mixture of Jacobs et al. (1991) with linear experts: each expert is a
    linear model `x W_e + b_e` (for a classifier: one logistic regression per
    expert) and the router gates them, `y = sum_e g_e(x) (x W_e + b_e)`.
    `k=None` is the dense softmax mixture; an integer `k` keeps the top k
    gates (renormalised for k > 1, the raw probability for k = 1, as in
    `TopKRouter`), with an optional capacity per expert (as in
    `MixtureOfExperts`: first choices before second choices, then input
    order; an assignment past capacity contributes exactly 0).

    This is the MoE for inputs such as a 100,000-wide bag of n-grams
    (`moe_tf.data.load_imdb("ngrams")`): there a `MixtureOfExperts` would
    need a dense bottleneck first, which overfits a small corpus. On a sparse
    input the E expert outputs cost one sparse matmul (`2 · nnz · E · units`
    FLOPs), so the layer computes all of them and keeps the k routed ones:
    the *active* cost of one input is `2 · nnz · k · units` for its experts
    plus `2 · nnz · E` for the router (what `moe_tf.models.model_cost`
    reports). Balance and z losses, routing metrics and `RoutingStats`
    work as in `MixtureOfExperts`.

    Args:
        num_experts: E.
        units: output width of every expert (the number of classes for a classifier).
        k: experts per input; None for the dense mixture.
        capacity_factor: float > 0 or None (no dropping); needs an integer k.
        noise: router noise, `"none"` or `"gaussian"` (`"jitter"` multiplies the
            input, which a sparse tensor does not support).
        balance_loss: `"switch"` or None.
        balance_loss_weight: α of the Switch loss (1e-2).
        z_loss_weight: router z-loss weight (0 = off).
        use_bias: experts have biases.
        kernel_initializer: experts' kernel initializer.
        router_kernel_initializer: see `TopKRouter`.
        seed: router noise and initializer seed.

    Input shape: `[batch, dim]`, dense or `tf.SparseTensor`.
    Output shape: `[batch, units]`.

    Example:
    >>> layer = LinearExpertsMoE(num_experts=8, units=2, k=2)
    >>> layer(np.random.rand(4, 100).astype("float32")).shape
    (4, 2)
    """

    def __init__(
        self,
        num_experts,
        units,
        k=None,
        capacity_factor=None,
        noise="none",
        balance_loss="switch",
        balance_loss_weight=1e-2,
        z_loss_weight=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        router_kernel_initializer=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = _checks.positive_int("num_experts", num_experts)
        self.units = _checks.positive_int("units", units)
        self.k = None if k is None else _checks.top_k(k, self.num_experts)
        self.capacity_factor = _checks.number(
            "capacity_factor", capacity_factor, strict=True, allow_none=True, none_means=" for no capacity limit"
        )
        if self.k is None and self.capacity_factor is not None:
            raise ValueError(
                f"`capacity_factor` needs sparse routing (an integer `k`); received "
                f"capacity_factor={capacity_factor!r} with k=None."
            )
        self.noise = _checks.one_of("noise", noise, ("none", "gaussian"))
        self.balance_loss = _checks.one_of("balance_loss", balance_loss, ("switch", None))
        self.balance_loss_weight = _checks.number("balance_loss_weight", balance_loss_weight)
        self.z_loss_weight = _checks.number("z_loss_weight", z_loss_weight)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.router = TopKRouter(
            self.num_experts, k=self.k, noise=self.noise, kernel_initializer=router_kernel_initializer,
            seed=seed, name="router",
        )
        self.routing_metrics = RoutingMetrics(self.num_experts, name=self.name)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"`LinearExpertsMoE` expects inputs [batch, dim] with a known dim; received shape {tuple(input_shape)}."
            )
        dim = input_shape[-1]
        self.router.build((None, dim))
        # One kernel for all experts: [dim, E * units], so a sparse input needs one sparse matmul.
        self.kernel = self.add_weight(
            shape=(dim, self.num_experts * self.units), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = (
            self.add_weight(shape=(self.num_experts, self.units), initializer="zeros", name="bias")
            if self.use_bias
            else None
        )

    def call(self, inputs, training=None):
        E, units = self.num_experts, self.units
        route = self.router(inputs, training=training)
        expert_out = ops.reshape(ops.matmul(inputs, self.kernel), (-1, E, units))  # [T, E, units]
        if self.bias is not None:
            expert_out = expert_out + self.bias
        expert_out = ops.cast(expert_out, "float32")
        num_tokens = ops.shape(expert_out)[0]

        if self.k is None:
            outputs = ops.einsum("te,teo->to", route["gates"], expert_out)  # [T, units]
            expert_mask = ops.one_hot(ops.argmax(route["probs"], axis=-1), E)  # top-1, for statistics
            routed = ops.sum(expert_mask, axis=0)
            dropped = ops.zeros((), "float32")
        else:
            indices = route["indices"]  # [T, k]
            if self.capacity_factor is None:
                keep = ops.ones_like(route["top_gates"])
            else:
                capacity = buffer_capacity(num_tokens, E, self.k, self.capacity_factor)
                _, keep = capacity_positions(indices, E, capacity)  # [T, k]
            weights = route["top_gates"] * ops.cast(keep, "float32")  # [T, k]
            chosen = ops.take_along_axis(expert_out, indices[:, :, None], axis=1)  # [T, k, units]
            outputs = ops.sum(weights[:, :, None] * chosen, axis=1)  # [T, units]
            expert_mask = ops.one_hot(indices, E)  # [T, k, E]
            routed = ops.sum(expert_mask, axis=(0, 1))
            dropped = ops.sum(routed) - ops.sum(ops.cast(keep, "float32"))

        balance = losses.switch_balance_loss(route["probs"], expert_mask)
        add_losses_and_metrics(self, route, balance, routed, dropped)
        return ops.cast(outputs, self.compute_dtype)

    def cost(self):
        """Parameters and FLOPs (`moe_tf.layers.LayerCost`): the router plus k of the E linear experts per example."""
        d, E = self.router.kernel.shape
        per_expert = d * self.units + (self.units if self.use_bias else 0)
        return routed_cost(self.router, per_expert, d * self.units, E if self.k is None else self.k)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "units": self.units,
                "k": self.k,
                "capacity_factor": self.capacity_factor,
                "noise": self.noise,
                "balance_loss": self.balance_loss,
                "balance_loss_weight": self.balance_loss_weight,
                "z_loss_weight": self.z_loss_weight,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "router_kernel_initializer": keras.initializers.serialize(self.router.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
