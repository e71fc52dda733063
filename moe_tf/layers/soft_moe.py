"""`SoftMoE`: experts process soft slots, weighted averages of all tokens (Puigcerver et al. 2023)."""

import keras
from keras import ops

from moe_tf import _checks
from moe_tf.layers._cost import LayerCost, expert_sizes
from moe_tf.layers.base import MoELayer
from moe_tf.layers.router import Router
from moe_tf.plan import MaskPlan


@keras.saving.register_keras_serializable(package="moe_tf")
class SoftRouter(Router):
    """Soft MoE's router (Puigcerver et al. 2023): every slot is a softmax average of all the group's tokens.

    Each of the E experts owns p slots, S = E * p in all; slot j has a learned
    embedding, a column of `Phi` `[d, S]`. For a group X `[n, d]`, the logits
    `X Phi` `[n, S]` give the dispatch weights (softmax over the n tokens:
    each slot's weights sum to 1) and the combine weights (softmax over the S
    slots: each token's weights sum to 1). The plan is a `MaskPlan` with
    `[G, n, E, p]` dispatch and combine; its `probs` are each token's combine
    weight per expert (its p slots summed). Padding tokens get dispatch and
    combine weight 0.

    `normalize=True`: `logits = normalize(X) (scale * normalize(Phi, axis=0))`,
    L2 normalisation and a learned scalar `scale` starting at 1 (the paper's
    recipe for large widths).

    Args:
        num_experts: E.
        slots_per_expert: p.
        normalize: L2-normalise tokens and slot embeddings (with a learned scale).
        slot_initializer: initializer of `Phi` (the paper: LeCun normal).

    Example:
    >>> router = SoftRouter(num_experts=4, slots_per_expert=2)
    >>> plan = router(np.random.rand(2, 8, 16).astype("float32"))
    >>> tuple(plan.dispatch.shape), tuple(plan.probs.shape)
    ((2, 8, 4, 2), (2, 8, 4))
    """

    plan_kind = "mask"
    per_group = True

    def __init__(self, num_experts, slots_per_expert=1, normalize=False, slot_initializer="lecun_normal", **kwargs):
        super().__init__(num_experts, **kwargs)
        self.slots_per_expert = _checks.positive_int("slots_per_expert", slots_per_expert)
        if not isinstance(normalize, bool):
            raise ValueError(f"`normalize` must be True or False; received normalize={normalize!r}.")  # noqa: TRY004
        self.normalize = normalize
        self.slot_initializer = keras.initializers.get(slot_initializer)

    @property
    def num_slots(self):
        """S = num_experts * slots_per_expert."""
        return self.num_experts * self.slots_per_expert

    def build(self, input_shape):
        self.slot_embeddings = self.add_weight(
            shape=(input_shape[-1], self.num_slots), initializer=self.slot_initializer, name="slot_embeddings"
        )
        if self.normalize:
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def weights_for(self, inputs, token_mask=None):
        """`logits`, `dispatch` (softmax over tokens) and `combine` (softmax over slots), each `[G, n, S]`."""
        x = ops.cast(inputs, "float32")
        phi = ops.cast(self.slot_embeddings, "float32")
        if self.normalize:
            x = x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), 1e-12))
            phi = self.scale * phi / ops.sqrt(ops.maximum(ops.sum(phi * phi, axis=0, keepdims=True), 1e-12))
        logits = ops.einsum("bmd,ds->bms", x, phi)  # [G, n, S]
        dispatch_logits = logits
        if token_mask is not None:
            dispatch_logits = ops.where(token_mask[..., None] > 0, logits, -1e9)  # padding: weight 0 in every slot
        dispatch = ops.softmax(dispatch_logits, axis=1)  # over tokens: each slot's weights sum to 1
        combine = ops.softmax(logits, axis=2)  # over slots: each token's weights sum to 1
        if token_mask is not None:
            combine = combine * token_mask[..., None]  # padding tokens output 0
        return {"logits": logits, "dispatch": dispatch, "combine": combine}

    def call(self, inputs, training=None, token_mask=None):
        w = self.weights_for(inputs, token_mask)
        per_expert = lambda t: ops.reshape(t, (-1, inputs.shape[1], self.num_experts, self.slots_per_expert))  # noqa: E731
        combine = per_expert(w["combine"])  # [G, n, E, p]
        return MaskPlan(
            dispatch=per_expert(w["dispatch"]),
            combine=combine,
            probs=ops.sum(combine, axis=-1),  # [G, n, E]
            logits=w["logits"],
            token_mask=token_mask,
        )

    def layer_cost(self, experts, group_size=None):
        """Every parameter is active (each token meets every slot); `S / m` expert paths per token (m: `group_size`)."""
        m = group_size
        if m is None:
            raise ValueError("`group_size` is needed: the layer was not built on inputs with a known sequence length.")
        d, S = self.slot_embeddings.shape
        o = experts.output_kernel.shape[-1]
        per_expert, path = expert_sizes(experts, d)
        total = (
            d * S + (1 if self.normalize else 0) + self.num_experts * per_expert
        )  # slot embeddings (+ scale), experts
        return LayerCost(total, total, 2 * (S * (2 * d + o) + S / m * path))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "slots_per_expert": self.slots_per_expert,
                "normalize": self.normalize,
                "slot_initializer": keras.initializers.serialize(self.slot_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="moe_tf")
class SoftMoE(MoELayer):
    """Soft Mixture of Experts (Puigcerver et al. 2023, "From Sparse to Soft Mixtures of Experts"); a `MoELayer` with a `SoftRouter`.

    No token is ever routed to an expert. Each of the E experts owns p
    *slots*, S = E * p in all, and each slot has a learned embedding (a
    column of `Phi`, `[d, S]`). For a group of m tokens X `[m, d]`:

        logits   = X Phi                         [m, S]
        D        = softmax(logits, over tokens)  [m, S]  dispatch: each column sums to 1
        C        = softmax(logits, over slots)   [m, S]  combine: each row sums to 1
        slots    = D^T X                         [S, d]  slot j is a weighted average of all tokens
        Y~_j     = FFN_{expert(j)}(slots_j)      [S, o]  expert i runs on its p slots
        Y        = C Y~                          [m, o]

    Everything is a softmax and a matmul: fully differentiable, no top-k, no
    token dropping, no balance loss (every expert gets exactly p slots).
    Expert compute per token is `S / m` expert paths: choose `S` to set it.
    Like expert choice it is **not causal**: every slot mixes all tokens of
    the group, later ones included, so it does not fit autoregressive
    decoding as-is.

    `normalize=True` follows the paper's recipe for large widths:
    `logits = normalize(X) (scale * normalize(Phi, axis=0))` with L2
    normalisation and a learned scalar `scale` (starting at 1).

    Routing groups: an input `[batch, seq, dim]` mixes each sequence on its
    own; an input `[tokens, dim]` is one group. Keras masks are honoured:
    padding tokens get dispatch weight 0 and output 0.

    Args:
        num_experts: E.
        expert_units: hidden width of each expert.
        slots_per_expert: p.
        output_units: output width; defaults to the input width.
        activation: experts' hidden activation.
        use_bias: experts use biases.
        normalize: L2-normalise tokens and slot embeddings (with a learned scale).
        kernel_initializer: experts' kernel initializer.
        slot_initializer: initializer of `Phi` (the paper: LeCun normal).

    Input shape:
        `[batch, seq, dim]` or `[tokens, dim]`; optional mask `[batch, seq]` or `[tokens]`.

    Output shape:
        `[batch, seq, output_units]` or `[tokens, output_units]`.

    Example:
    >>> moe = SoftMoE(num_experts=8, expert_units=64, slots_per_expert=4)
    >>> x = np.random.rand(2, 16, 32).astype("float32")
    >>> tuple(moe(x).shape), tuple(moe.weights_for(x)["dispatch"].shape)  # 32 slots for 16 tokens: 2 expert paths per token
    ((2, 16, 32), (2, 16, 32))
    """

    def __init__(
        self,
        num_experts,
        expert_units,
        slots_per_expert=1,
        output_units=None,
        activation="relu",
        use_bias=True,
        normalize=False,
        kernel_initializer="glorot_uniform",
        slot_initializer="lecun_normal",
        log_expert_load=False,
        **kwargs,
    ):
        num_experts = _checks.positive_int("num_experts", num_experts)
        router = SoftRouter(
            num_experts, slots_per_expert, normalize=normalize, slot_initializer=slot_initializer, name="router"
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
        self.slots_per_expert = router.slots_per_expert
        self.normalize = router.normalize

    @property
    def num_slots(self):
        """S = num_experts * slots_per_expert."""
        return self.router.num_slots

    @property
    def slot_embeddings(self):
        """`Phi`, `[d, S]` (held by the router)."""
        return self.router.slot_embeddings

    def weights_for(self, inputs, mask=None):
        """The dispatch and combine weights of `inputs`, for inspection.

        Returns:
            A dict of `[B, m, S]` float32 tensors: `logits`, `dispatch`
            (softmax over the m tokens) and `combine` (softmax over the S
            slots; 0 for padding tokens). `B` is 1 for a rank-2 input.
        """
        inputs = ops.convert_to_tensor(inputs)
        if not self.built:
            self.build(inputs.shape)
        return self.router.weights_for(*self._tokens(inputs, mask))

    def active_flops_per_token(self, group_size=None):
        """Inference FLOPs per token (2 x matmul multiply-adds), as `moe_tf.cost.model_cost` counts.

        Per group of m tokens: logits `m*d*S`, slots `S*m*d`, experts
        `S * (d*h + h*o)`, combine `m*S*o` multiply-adds. Per token, the
        experts cost `S / m` expert paths; the three mixing matmuls cost
        `S * (2d + o)`, which grows with the number of slots.

        Args:
            group_size: m; defaults to the sequence length the layer was built with.
        """
        return self.cost(group_size).flops_per_token

    def get_config(self):
        config = super().get_config()
        for key in ("router", "capacity_factor", "dispatch", "balance_loss", "balance_loss_weight"):  # set by the class
            del config[key]
        config.update(
            {
                "num_experts": self.num_experts,
                "slots_per_expert": self.slots_per_expert,
                "normalize": self.normalize,
                "slot_initializer": keras.initializers.serialize(self.router.slot_initializer),
            }
        )
        return config
