"""`MixtureOfExperts`: a top-k (or dense softmax) router, E experts, capacity, and balance losses."""

import keras

from moe_tf import _checks
from moe_tf.layers.base import BALANCE_LOSSES, MoELayer
from moe_tf.layers.router import TopKRouter

__all__ = ["BALANCE_LOSSES", "MixtureOfExperts"]


@keras.saving.register_keras_serializable(package="moe_tf")
class MixtureOfExperts(MoELayer):
    """Mixture-of-Experts feed-forward layer, dense or sparse: a `MoELayer` with a `TopKRouter`.

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
        num_shared_experts: experts every token goes through, without a gate
            (DeepSeekMoE; see `SharedExpertsMoE`); 0 by default.
        shared_units: their hidden width; defaults to `expert_units`.

    Input shape:
        `[batch, dim]` or `[batch, seq, dim]`; optional mask `[batch]` or
        `[batch, seq]` (1/True = real token).

    Output shape:
        `[batch, output_units]` or `[batch, seq, output_units]`.

    Example:
    >>> moe = MixtureOfExperts(num_experts=8, expert_units=64, k=2, capacity_factor=1.25)
    >>> y = moe(np.random.rand(4, 10, 32).astype("float32"))
    >>> tuple(y.shape), len(moe.losses)
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
        num_shared_experts=0,
        shared_units=None,
        **kwargs,
    ):
        num_experts = _checks.positive_int("num_experts", num_experts)
        router = TopKRouter(
            num_experts,
            k=k,
            noise=noise,
            noise_epsilon=noise_epsilon,
            renormalize=renormalize,
            kernel_initializer=router_kernel_initializer,
            seed=seed,
            bias_update_rate=bias_update_rate,
            name="router",
        )
        super().__init__(
            router,
            expert_units,
            output_units=output_units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            capacity_factor=capacity_factor,
            dispatch=dispatch,
            num_shared_experts=num_shared_experts,
            shared_units=shared_units,
            balance_loss=balance_loss,
            balance_loss_weight=balance_loss_weight,
            z_loss_weight=z_loss_weight,
            log_expert_load=log_expert_load,
            **kwargs,
        )
        self.seed = seed

    def get_config(self):
        config = super().get_config()
        del config["router"]
        router = self.router
        config.update(
            {
                "num_experts": self.num_experts,
                "k": self.k,
                "noise": router.noise,
                "noise_epsilon": router.noise_epsilon,
                "renormalize": router.renormalize,
                "router_kernel_initializer": keras.initializers.serialize(router.kernel_initializer),
                "seed": self.seed,
                "bias_update_rate": router.bias_update_rate,
            }
        )
        return config
