"""`SharedExpertsMoE`: DeepSeekMoE's always-on shared experts plus fine-grained routed experts."""

import keras
from keras import ops

from moe_tf import _checks
from moe_tf.layers._cost import LayerCost, expert_sizes
from moe_tf.layers.experts import Experts
from moe_tf.layers.moe import MixtureOfExperts


def deepseek_moe_config(num_experts, expert_units, k, granularity, num_shared_experts=1):
    """The DeepSeekMoE layer with the same total and active size as a coarse top-k MoE.

    Fine-grained segmentation splits each of the N experts (hidden width h)
    into m = `granularity` experts of width h/m and routes each token to m*k
    of them; shared-expert isolation then turns K_s of the m*N fine experts
    into shared ones that every token uses, leaving `m*N - K_s` routed
    experts of which `m*k - K_s` are active (Dai et al. 2024, section 3).
    Total parameters and per-token expert compute equal the coarse layer's
    (up to the router, which grows from N to m*N - K_s logits).

    Args:
        num_experts: N, experts of the coarse layer.
        expert_units: h, their hidden width (divisible by `granularity`).
        k: coarse experts per token.
        granularity: m, segments per expert (1 = no segmentation).
        num_shared_experts: K_s, with `0 <= K_s < m*k`.

    Returns:
        A dict of `SharedExpertsMoE` arguments: `num_experts`, `expert_units`,
        `k`, `num_shared_experts`.

    Example:
    >>> deepseek_moe_config(num_experts=8, expert_units=128, k=2, granularity=4, num_shared_experts=1)
    {'num_experts': 31, 'expert_units': 32, 'k': 7, 'num_shared_experts': 1}
    """
    num_experts = _checks.positive_int("num_experts", num_experts)
    expert_units = _checks.positive_int("expert_units", expert_units)
    k = _checks.top_k(k, num_experts)
    m = _checks.positive_int("granularity", granularity)
    if expert_units % m:
        raise ValueError(
            f"`expert_units` must be divisible by `granularity`; received expert_units={expert_units}, granularity={m}."
        )
    if not _checks.is_int(num_shared_experts) or not 0 <= num_shared_experts < m * k:
        raise ValueError(
            f"`num_shared_experts` must be an integer with 0 <= num_shared_experts < granularity * k = {m * k}; "
            f"received num_shared_experts={num_shared_experts!r}."
        )
    return {
        "num_experts": m * num_experts - num_shared_experts,
        "expert_units": expert_units // m,
        "k": m * k - num_shared_experts,
        "num_shared_experts": int(num_shared_experts),
    }


@keras.saving.register_keras_serializable(package="moe_tf")
class SharedExpertsMoE(keras.layers.Layer):
    """Shared experts that see every token, plus top-k routed experts (DeepSeekMoE).

        y_t = sum_{s <= K_s} FFN_s(x_t) + sum_{i in TopK(s_t, k)} s_{i,t} FFN_i(x_t)
        s_t = softmax(x_t W_g)   over the routed experts

    The shared experts carry no gate: every token goes through all K_s of
    them, so they learn what all tokens need and the routed experts are
    free to specialise. The routed part is a `MixtureOfExperts` (capacity,
    balance loss, z-loss and routing statistics as there); by default its
    gates are DeepSeekMoE's, the raw softmax probabilities of the top k
    (`renormalize=False`). Build a fine-grained layer with the same size as
    a coarse top-k MoE with `deepseek_moe_config`. DeepSeek-V3 uses 1 shared
    and 256 routed experts with 8 active.

    Args:
        num_experts: routed experts.
        expert_units: hidden width of each routed expert.
        k: routed experts per token.
        num_shared_experts: K_s >= 0, always-active experts.
        shared_units: hidden width of each shared expert; defaults to `expert_units`.
        capacity_factor: of the routed experts; None = no dropping.
        output_units: output width; defaults to the input width.
        activation: hidden activation of all experts.
        renormalize: whether the k routed gates sum to 1 (DeepSeekMoE: False).
        balance_loss: routed experts' balance loss, `"switch"`, `"shazeer"` or None.
        balance_loss_weight: its weight.
        z_loss_weight: router z-loss weight.
        use_bias: experts use biases.
        kernel_initializer: experts' kernel initializer.
        router_kernel_initializer: router's; None = Switch's default.
        seed: router seed.

    Input shape:
        `[batch, dim]` or `[batch, seq, dim]`; optional mask.

    Output shape:
        `[batch, output_units]` or `[batch, seq, output_units]`.

    Example:
    >>> moe = SharedExpertsMoE(**deepseek_moe_config(8, 128, k=2, granularity=4))  # 1 shared + top-7 of 31
    >>> moe(np.random.rand(4, 16, 64).astype("float32")).shape
    (4, 16, 64)
    """

    def __init__(
        self,
        num_experts,
        expert_units,
        k,
        num_shared_experts=1,
        shared_units=None,
        capacity_factor=None,
        output_units=None,
        activation="relu",
        renormalize=False,
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
        if not _checks.is_int(num_shared_experts) or num_shared_experts < 0:
            raise ValueError(
                f"`num_shared_experts` must be an integer >= 0; received num_shared_experts={num_shared_experts!r}."
            )
        self.num_shared_experts = int(num_shared_experts)
        self.shared_units = _checks.positive_int("shared_units", shared_units, allow_none=True)
        self.output_units = _checks.positive_int("output_units", output_units, allow_none=True)
        self.supports_masking = True
        self.routed = MixtureOfExperts(
            num_experts,
            expert_units,
            k=_checks.top_k(k, _checks.positive_int("num_experts", num_experts)),
            capacity_factor=capacity_factor,
            output_units=output_units,
            activation=activation,
            renormalize=renormalize,
            balance_loss=balance_loss,
            balance_loss_weight=balance_loss_weight,
            z_loss_weight=z_loss_weight,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            router_kernel_initializer=router_kernel_initializer,
            seed=seed,
            dtype=self.dtype_policy,
            name=f"{self.name}_routed",
        )
        self.shared = None
        if self.num_shared_experts:
            shared_init = keras.initializers.get(kernel_initializer)
            seed_of = shared_init.get_config().get("seed")
            if _checks.is_int(seed_of):  # routed expert e starts from seed + e: the shared ones continue after them
                shared_init = shared_init.__class__.from_config(
                    {**shared_init.get_config(), "seed": seed_of + num_experts}
                )
            self.shared = Experts(
                self.num_shared_experts,
                self.shared_units or expert_units,
                output_units=output_units,
                activation=activation,
                use_bias=use_bias,
                kernel_initializer=shared_init,
                dtype=self.dtype_policy,
                name="shared",
            )

    def build(self, input_shape):
        self.routed.build(input_shape)
        if self.shared is not None:
            self.shared.build((self.num_shared_experts, None, input_shape[-1]))

    def call(self, inputs, mask=None, training=None):
        outputs = ops.cast(self.routed(inputs, mask=mask, training=training), "float32")
        if self.shared is None:
            return ops.cast(outputs, self.compute_dtype)
        dim = inputs.shape[-1]
        tokens = ops.reshape(inputs, (-1, dim))  # [T, d]
        shared_inputs = ops.broadcast_to(
            tokens[None], (self.num_shared_experts,) + tuple(ops.shape(tokens))
        )  # [K_s, T, d]
        shared = ops.sum(ops.cast(self.shared(shared_inputs), "float32"), axis=0)  # [T, o]: every token, no gate
        if mask is not None:
            shared = shared * ops.reshape(ops.cast(mask, "float32"), (-1, 1))
        shared = ops.reshape(shared, ops.shape(outputs))
        return ops.cast(outputs + shared, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def compute_mask(self, inputs, mask=None):
        return mask

    def active_flops_per_token(self):
        """Inference FLOPs per token (2 x matmul multiply-adds): router, k routed and K_s shared expert paths."""
        return self.cost().flops_per_token

    def cost(self):
        """Parameters and FLOPs (`moe_tf.layers.LayerCost`): the routed MoE's, plus every shared expert for every token."""
        routed = self.routed.cost()
        if self.shared is None:
            return routed
        per_shared, path = expert_sizes(self.shared, self.routed.router.kernel.shape[0])
        K = self.num_shared_experts
        return LayerCost(routed.total_params + K * per_shared, routed.active_params + K * per_shared,
                         routed.flops_per_token + 2 * K * path)

    def get_config(self):
        config = super().get_config()
        routed = self.routed.get_config()
        config.update(
            {
                "num_experts": routed["num_experts"],
                "expert_units": routed["expert_units"],
                "k": routed["k"],
                "num_shared_experts": self.num_shared_experts,
                "shared_units": self.shared_units,
                "capacity_factor": routed["capacity_factor"],
                "output_units": self.output_units,
                "activation": routed["activation"],
                "renormalize": routed["renormalize"],
                "balance_loss": routed["balance_loss"],
                "balance_loss_weight": routed["balance_loss_weight"],
                "z_loss_weight": routed["z_loss_weight"],
                "use_bias": routed["use_bias"],
                "kernel_initializer": routed["kernel_initializer"],
                "router_kernel_initializer": routed["router_kernel_initializer"],
                "seed": routed["seed"],
            }
        )
        return config
