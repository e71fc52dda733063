"""Routers: a `Router` scores tokens and writes a routing plan; `TopKRouter` is token choice.

A router is the one part of a MoE layer that differs between the papers
(`moe_tf.layers.MoELayer` runs any of them): it reads the tokens and returns
a plan (`moe_tf.plan`) that a dispatch executes. This module holds the base
class and the token-choice router (Shazeer top-k, Switch, the dense
softmax mixture); `ExpertChoiceRouter` and `SoftRouter` live with their
layers.
"""

import keras
from keras import ops

from moe_tf import _checks, rng
from moe_tf.layers._cost import expert_sizes, routed_cost
from moe_tf.plan import SlotPlan
from moe_tf.routing import capacity_positions, softmax_gates, top_k_choices

NOISE_TYPES = ("none", "gaussian", "jitter")


def default_router_initializer(seed=None):
    """Switch Transformer's router initializer: truncated normal, scale 0.1, fan-in."""
    return keras.initializers.VarianceScaling(scale=0.1, mode="fan_in", distribution="truncated_normal", seed=seed)


class Router(keras.layers.Layer):
    """Base class of routers: tokens in, a routing plan (`moe_tf.plan`) out.

    A subclass sets two class attributes and writes `call`:

    - `plan_kind`: `"slot"` (returns a `SlotPlan`, token choice) or `"mask"`
      (a `MaskPlan`: dispatch and combine weights).
    - `per_group`: False if it routes the flattened tokens `[T, d]`; True if
      it routes each sequence on its own, `[G, n, d]` (expert choice and Soft
      MoE, whose plans depend on the other tokens of the group).

    `call(tokens, token_mask=None, training=None, capacity=None)` receives
    the float tokens, an optional `[T]` (or `[G, n]`) float mask of real
    tokens and, for slot routers, the capacity C the layer allows (None: no
    limit). Routers compute in float32 (their dtype policy defaults to
    `"float32"`, even under `mixed_float16`: Switch's "selective precision").
    """

    plan_kind = "slot"
    per_group = False

    def __init__(self, num_experts, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_experts = _checks.positive_int("num_experts", num_experts)

    def layer_cost(self, experts, group_size=None):
        """`LayerCost` of this router and the `Experts` it routes to (`MoELayer.cost`); `group_size`: n per group."""
        raise NotImplementedError(f"{type(self).__name__} does not say what a token costs: write its layer_cost.")

    def load_own_variables(self, store):
        if not len(store.keys()) and getattr(self, "_loaded_by_layer", False):
            return  # a file from moe_tf 0.1 held these weights on the layer, which loaded them (MoELayer)
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config["num_experts"] = self.num_experts
        return config


@keras.saving.register_keras_serializable(package="moe_tf")
class TopKRouter(Router):
    """Linear router with softmax (dense) or top-k (sparse) gates: token choice.

    `logits = x @ W_g` (+ bias). Training-time noise options:

    - `"none"`: deterministic routing.
    - `"gaussian"`: noisy top-k of Shazeer et al. (2017),
      `H = x W_g + N(0, 1) * (softplus(x W_noise) + noise_epsilon)`, with a
      learned, per-token, per-expert noise scale (`W_noise` starts at zero).
    - `"jitter"`: Switch Transformer's multiplicative input jitter,
      `x * U(1 - noise_epsilon, 1 + noise_epsilon)`.

    Auxiliary-loss-free balancing (DeepSeek-V3; Wang et al. 2024), with
    `bias_update_rate=gamma > 0` and an integer `k`: a per-expert bias `b`
    (a non-trainable weight, `selection_bias`, starting at 0) is added to the
    router's affinity scores, its softmax probabilities `probs`, **only to
    choose** the top-k experts, `indices = TopK(probs + b, k)`; the gates of
    the chosen experts are computed from the unbiased logits exactly as
    without a bias (renormalised or raw, see `renormalize`). After every
    training call (`training=True`) the bias moves against the batch's load:
    `b_i <- b_i + gamma * sign(mean_load - load_i)`, where `load_i` counts
    the (non-padding) tokens that chose expert i, so an overloaded expert
    becomes less likely to be chosen and an underloaded one more likely. The
    bias gets no gradient and is not touched by the optimizer; it is saved
    with the layer's weights. DeepSeek-V3 scores with sigmoid affinities and
    uses gamma = 0.001; this router scores with its softmax probabilities.

    Noise is applied only when `training=True`. The router always computes in
    float32 (its dtype policy defaults to `"float32"` even under
    `mixed_float16`): low-precision softmax over large logits is a known
    source of instability (Switch Transformer's "selective precision").

    Args:
        num_experts: E.
        k: experts per token; None for the dense softmax gate.
        noise: one of `"none"`, `"gaussian"`, `"jitter"`.
        noise_epsilon: floor on the Gaussian noise scale, or jitter width.
        renormalize: whether top-k gates sum to 1 (softmax over the kept
            logits). None picks `k > 1`: Shazeer/GShard/Mixtral renormalise
            top-2; Switch keeps top-1's raw probability `p_i`, because a
            renormalised single gate is always 1 and gives the router no
            gradient through the output.
        use_bias: add a bias to the logits.
        kernel_initializer: router kernel init; Switch's truncated normal
            with scale 0.1 by default.
        seed: seed of the noise.
        bias_update_rate: gamma of the auxiliary-loss-free selection bias;
            0 (the default) = no bias, routing unchanged. Needs an integer k.

    Call arguments:
        inputs: `[tokens, dim]`.
        training: noise and the selection-bias update happen only when True.
        token_mask: optional `[tokens]` (1 = real token, 0 = padding);
            padding tokens route nowhere (`keep` 0), take no capacity and
            are left out of the load that updates the bias.
        capacity: C, slots per expert (an int or a scalar tensor), or None
            for no limit. With a capacity, slots go to all first choices
            before any second choice, then in token order
            (`moe_tf.routing.capacity_positions`); an assignment past C is
            dropped (`keep` 0).

    Input shape:
        `[tokens, dim]`.

    Output:
        A `moe_tf.plan.SlotPlan` of float32 tensors: `indices` (`[T, k]`
        int32, best first; None when dense), `gates` (`[T, k]`, or the
        softmax `[T, E]` when dense), `keep`, `positions` and `capacity`
        (None without a capacity), `probs` (softmax of `logits`), `logits`
        (`[T, E]`, with noise in training: the ones routing used),
        `clean_logits` (without noise), `noise_stddev` (`[T, E]` for
        Gaussian noise in training, else None) and `token_mask`.

    Example:
    >>> router = TopKRouter(num_experts=8, k=2)
    >>> plan = router(np.random.rand(5, 16).astype("float32"), capacity=2)
    >>> [tuple(t.shape) for t in (plan.indices, plan.gates, plan.dense_gates(), plan.positions)]
    [(5, 2), (5, 2), (5, 8), (5, 2)]
    >>> balanced = TopKRouter(num_experts=8, k=2, bias_update_rate=1e-3)
    >>> plan = balanced(np.random.rand(5, 16).astype("float32"), training=True)
    >>> tuple(balanced.selection_bias.shape)  # moved by +-1e-3 per expert (0 where load == mean)
    (8,)
    """

    def __init__(
        self,
        num_experts,
        k=None,
        noise="none",
        noise_epsilon=1e-2,
        renormalize=None,
        use_bias=False,
        kernel_initializer=None,
        seed=None,
        bias_update_rate=0.0,
        **kwargs,
    ):
        super().__init__(num_experts, **kwargs)
        self.k = None if k is None else _checks.top_k(k, self.num_experts)
        self.noise = _checks.one_of("noise", noise, NOISE_TYPES)
        self.noise_epsilon = _checks.number("noise_epsilon", noise_epsilon)
        self.renormalize = (self.k is not None and self.k > 1) if renormalize is None else bool(renormalize)
        self.use_bias = use_bias
        if kernel_initializer is None:
            kernel_initializer = default_router_initializer(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.bias_update_rate = _checks.number("bias_update_rate", bias_update_rate)
        if self.bias_update_rate > 0 and self.k is None:
            raise ValueError(
                f"`bias_update_rate` (auxiliary-loss-free balancing) biases the top-k selection, so it needs an "
                f"integer `k`; received bias_update_rate={bias_update_rate!r} with k=None (the dense softmax gate "
                f"selects nothing). Pass k=1 or k=2, or bias_update_rate=0."
            )

    def build(self, input_shape):
        dim = input_shape[-1]
        self.kernel = self.add_weight(shape=(dim, self.num_experts), initializer=self.kernel_initializer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.num_experts,), initializer="zeros", name="bias")
        if self.noise == "gaussian":
            self.noise_kernel = self.add_weight(shape=(dim, self.num_experts), initializer="zeros", name="noise_kernel")
        if self.bias_update_rate > 0:
            # Not a parameter: no gradient; moved by the sign rule in `call` (training only).
            self.selection_bias = self.add_weight(
                shape=(self.num_experts,), initializer="zeros", trainable=False, name="selection_bias"
            )

    def _project(self, x):
        logits = ops.matmul(x, self.kernel)
        if self.use_bias:
            logits = logits + self.bias
        return logits

    def _biased_choices(self, logits, probs, training, token_mask):
        """Top-k on `probs + selection_bias`; gates from the unbiased logits; the bias update."""
        bias = ops.convert_to_tensor(self.selection_bias)  # [E]
        _, indices = ops.top_k(ops.stop_gradient(probs) + bias, k=self.k)  # [T, k], selection only
        indices = ops.cast(indices, "int32")
        if self.renormalize and self.k == 1:
            top_gates = ops.ones_like(ops.cast(indices, "float32"))  # a renormalised single gate is 1
        elif self.renormalize:
            top_gates = ops.softmax(ops.take_along_axis(logits, indices, axis=-1), axis=-1)  # [T, k]
        else:
            top_gates = ops.take_along_axis(probs, indices, axis=-1)  # [T, k]
        if training:
            chosen = ops.one_hot(indices, self.num_experts, dtype="float32")  # [T, k, E]
            if token_mask is not None:
                chosen = chosen * ops.reshape(ops.cast(token_mask, "float32"), (-1, 1, 1))
            load = ops.sum(chosen, axis=(0, 1))  # [E] tokens per expert
            self.selection_bias.assign_add(self.bias_update_rate * ops.sign(ops.mean(load) - load))
        return top_gates, indices

    def call(self, inputs, training=None, token_mask=None, capacity=None):
        x = ops.cast(inputs, "float32")  # [T, d]
        noise_stddev = None
        clean_logits = self._project(x)  # [T, E]
        logits = clean_logits
        if training and self.noise == "jitter" and self.noise_epsilon > 0:
            jitter = rng.uniform(ops.shape(x), self.seed_generator, 1.0 - self.noise_epsilon, 1.0 + self.noise_epsilon)
            logits = self._project(x * jitter)
        if training and self.noise == "gaussian":
            noise_stddev = ops.softplus(ops.matmul(x, self.noise_kernel)) + self.noise_epsilon  # [T, E]
            logits = clean_logits + rng.normal(ops.shape(clean_logits), self.seed_generator) * noise_stddev
        probs = softmax_gates(logits)  # [T, E]
        if self.k is None:  # the dense mixture: every expert, gated by the softmax
            indices, gates, positions = None, probs, None
            keep = ops.ones_like(probs) if token_mask is None else ops.ones_like(probs) * token_mask[:, None]
        else:
            if self.bias_update_rate > 0:
                gates, indices = self._biased_choices(logits, probs, training, token_mask)  # [T, k]
            else:
                gates, indices = top_k_choices(logits, self.k, renormalize=self.renormalize)  # [T, k]
            if capacity is None:  # nothing dropped; only padding stays home
                positions = None
                keep = ops.ones_like(gates) if token_mask is None else ops.ones_like(gates) * token_mask[:, None]
            else:
                positions, keep = capacity_positions(indices, self.num_experts, capacity, token_mask)  # [T, k]
        return SlotPlan(
            indices=indices,
            gates=gates,
            keep=keep,
            positions=positions,
            capacity=capacity,
            probs=probs,
            logits=logits,
            clean_logits=clean_logits,
            noise_stddev=noise_stddev,
            token_mask=token_mask,
        )

    def layer_cost(self, experts, group_size=None):
        """The router plus k of the E experts per token (all E for the dense mixture)."""
        k = self.num_experts if self.k is None else self.k
        return routed_cost(self, *expert_sizes(experts, self.kernel.shape[0]), k)

    def compute_output_spec(self, inputs, training=None, token_mask=None, capacity=None):
        T, E = inputs.shape[0], self.num_experts
        spec = lambda *shape, dtype="float32": keras.KerasTensor((T, *shape), dtype=dtype)  # noqa: E731
        width = E if self.k is None else self.k
        sparse = self.k is not None
        return SlotPlan(
            indices=spec(self.k, dtype="int32") if sparse else None,
            gates=spec(width),
            keep=spec(width),
            positions=spec(self.k, dtype="int32") if sparse and capacity is not None else None,
            capacity=capacity,
            probs=spec(E),
            logits=spec(E),
            clean_logits=spec(E),
            noise_stddev=None,
            token_mask=token_mask,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "k": self.k,
                "noise": self.noise,
                "noise_epsilon": self.noise_epsilon,
                "renormalize": self.renormalize,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
                "bias_update_rate": self.bias_update_rate,
            }
        )
        return config
