"""`LinearExpertsMoE`: a mixture of linear experts for wide (sparse) inputs such as bags of n-grams."""

import keras
from keras import ops

from moe_tf import _checks
from moe_tf.layers._cost import routed_cost
from moe_tf.layers.base import MoELayer
from moe_tf.layers.router import TopKRouter


@keras.saving.register_keras_serializable(package="moe_tf")
class LinearExpertsMoE(MoELayer):
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
    the *active* cost of one input is `2 · nnz · k · output_units` for its
    experts plus `2 · nnz · E` for the router (what `moe_tf.cost.model_cost`
    reports). It is a `MoELayer` whose experts are that one kernel: the
    router's plan, balance and z losses, routing metrics and `RoutingStats`
    work as in `MixtureOfExperts`; only `run_experts` differs.

    Args:
        num_experts: E.
        output_units: output width of every expert (the number of classes
            for a classifier). Called `units` before moe_tf 0.2; configs
            saved with `units` still load.
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
    Output shape: `[batch, output_units]`.

    Example:
    >>> layer = LinearExpertsMoE(num_experts=8, output_units=2, k=2)
    >>> tuple(layer(np.random.rand(4, 100).astype("float32")).shape)
    (4, 2)
    """

    def __init__(
        self,
        num_experts,
        output_units,
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
        num_experts = _checks.positive_int("num_experts", num_experts)
        router = TopKRouter(
            num_experts,
            k=k,
            noise=_checks.one_of("noise", noise, ("none", "gaussian")),
            kernel_initializer=router_kernel_initializer,
            seed=seed,
            name="router",
        )
        super().__init__(
            router,
            expert_units=None,  # the experts are this layer's one [d, E * output_units] kernel
            capacity_factor=capacity_factor,
            balance_loss=_checks.one_of("balance_loss", balance_loss, ("switch", None)),
            balance_loss_weight=balance_loss_weight,
            z_loss_weight=z_loss_weight,
            **kwargs,
        )
        self.output_units = _checks.positive_int("output_units", output_units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"`LinearExpertsMoE` expects inputs [batch, dim] with a known dim; received shape {tuple(input_shape)}."
            )
        dim = input_shape[-1]
        self.router.build((None, dim))
        # One kernel for all experts: [dim, E * output_units], so a sparse input needs one sparse matmul.
        self.kernel = self.add_weight(
            shape=(dim, self.num_experts * self.output_units), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = (
            self.add_weight(shape=(self.num_experts, self.output_units), initializer="zeros", name="bias")
            if self.use_bias
            else None
        )

    def run_experts(self, tokens, plan):
        """All E linear experts in one (sparse) matmul, then each input keeps its routed ones: `[T, output_units]`."""
        expert_out = ops.reshape(
            ops.matmul(tokens, self.kernel), (-1, self.num_experts, self.output_units)
        )  # [T, E, o]
        if self.bias is not None:
            expert_out = expert_out + self.bias
        expert_out = ops.cast(expert_out, "float32")
        if plan.indices is None:  # dense: every expert, softmax-gated
            return ops.einsum("te,teo->to", plan.combine_weights, expert_out)  # [T, o]
        chosen = ops.take_along_axis(expert_out, plan.indices[:, :, None], axis=1)  # [T, k, o]
        return ops.sum(plan.combine_weights[:, :, None] * chosen, axis=1)  # [T, o]

    def call(self, inputs, training=None):
        # The pipeline of MoELayer.call on [batch, dim] inputs as they come (a SparseTensor cannot be reshaped).
        plan = self._route(inputs, None, training)
        outputs = self.run_experts(inputs, plan)
        self.add_losses_and_metrics(plan)
        return ops.cast(outputs, self.compute_dtype)

    def cost(self, group_size=None):
        """Parameters and FLOPs (`moe_tf.layers.LayerCost`): the router plus k of the E linear experts per example.

        `group_size` is not used (each example is routed on its own); it keeps `MoELayer.cost`'s signature.
        """
        d, E = self.router.kernel.shape
        per_expert = d * self.output_units + (self.output_units if self.use_bias else 0)
        return routed_cost(self.router, per_expert, d * self.output_units, E if self.k is None else self.k)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_units)

    def get_config(self):
        config = super().get_config()
        del config["router"], config["dispatch"], config["num_shared_experts"], config["shared_units"]
        config.update(
            {
                "num_experts": self.num_experts,
                "output_units": self.output_units,
                "k": self.k,
                "noise": self.router.noise,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "router_kernel_initializer": keras.initializers.serialize(self.router.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        if "units" in config:  # saved by moe_tf 0.1, where the output width was called `units`
            config = {**config, "output_units": config["units"]}
            del config["units"]
        return cls(**config)
