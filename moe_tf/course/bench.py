"""Timing one training step of MoE layers: what sparse routing buys, what dispatch costs.

The benchmark `bench/dispatch.py` and the lesson on sparse gating
(`notebooks/04_sparse_top_k_gating.ipynb`) both time layers with these
functions, so that a number in the lesson and a number in the benchmark
come from the same code.

    layer = make_layer("gather", num_experts=16, k=2)        # sparse top-2, capacity factor 1.0
    x = keras.random.normal((4096, 128), seed=1)             # [tokens, dim]
    seconds = time_step(layer, x, reps=10)                   # median forward + backward, jit

A "step" is one forward and backward pass, compiled with XLA
(`jit_compile=True`): the loss `mean(y**2) + sum(layer.losses)` and the
gradients of every trainable weight. Timing several layers *in turns*
(`time_layers`: A, B, C, A, B, C, ...) and keeping each one's median makes
a slow moment of a shared machine hit them all alike.

Layer kinds (`LAYER_KINDS`):

- `"dense-moe"`: the dense softmax mixture (`k=None`): every expert runs on
  every token.
- `"gather"`, `"einsum"`: sparse top-k `MixtureOfExperts` with that dispatch
  (see `moe_tf.dispatch`) and a capacity factor.
- `"dropless"`: sparse top-k with no capacity (nothing dropped) and the
  block-wise dropless dispatch: what `MixtureOfExperts(k=2)` builds by default.
- `"experts"`: the E batched expert MLPs alone on tokens already grouped by
  expert (perfectly balanced, no router, no dispatch): the cost of running E
  small matmuls instead of one large one.
- `"ffn"`: a dense FFN `dim -> k*units -> dim`, the same active FLOPs per
  token as top-k routing at capacity factor 1.0.
"""

import time

import numpy as np

from moe_tf import _checks

__all__ = ["LAYER_KINDS", "make_layer", "make_step", "run_once", "time_layers", "time_row", "time_step"]

LAYER_KINDS = ("dense-moe", "gather", "einsum", "dropless", "experts", "ffn")


def make_layer(kind, num_experts, k=2, units=256, dim=128, capacity_factor=1.0, seed=0):
    """Builds one layer to time (not yet built: its first call builds it).

    Args:
        kind: one of `LAYER_KINDS`: `"dense-moe"`, `"gather"`, `"einsum"`,
            `"dropless"`, `"experts"` or `"ffn"` (see the module docstring).
        num_experts: E.
        k: experts per token of the sparse kinds, `1 <= k <= E` (the FFN's
            hidden width is `k * units`; `"dense-moe"` ignores it).
        units: hidden width h of each expert.
        dim: token width d (the input and output width).
        capacity_factor: capacity factor of `"gather"` and `"einsum"`, a
            float > 0, or None for no capacity limit (then each expert's
            buffer holds all T tokens, and the sparse layer computes as much
            as the dense mixture: what `"dropless"` avoids). Ignored by the
            other kinds.
        seed: seeds the initializers (`keras.utils.set_random_seed`).

    Returns:
        A Keras layer, its weights created, mapping `[T, dim]` to `[T, dim]`;
        `"experts"` maps it to `[E, T*k/E, dim]` instead (each expert's
        share of the T·k assignments; T·k must be a multiple of E).

    Example:
    >>> layer = make_layer("gather", num_experts=8, k=2, units=32, dim=16)
    >>> tuple(layer(np.zeros((64, 16), "float32")).shape)
    (64, 16)
    """
    import keras

    from moe_tf.layers import Experts, MixtureOfExperts

    _checks.one_of("kind", kind, LAYER_KINDS)
    num_experts = _checks.positive_int("num_experts", num_experts)
    k = _checks.top_k(k, num_experts)
    units = _checks.positive_int("units", units)
    dim = _checks.positive_int("dim", dim)
    keras.utils.set_random_seed(seed)  # the weights are created below, so `seed` fixes them
    if kind == "ffn":
        layer = keras.Sequential([keras.layers.Dense(k * units, activation="relu"), keras.layers.Dense(dim)])
        layer.build((None, dim))
        return layer
    if kind == "experts":  # the experts' batched matmuls alone: perfectly balanced, no router, no dispatch
        experts = Experts(num_experts, units)
        experts.build((num_experts, None, dim))
        group = lambda x: keras.ops.reshape(keras.ops.tile(x, (k, 1)), (num_experts, -1, dim))  # noqa: E731
        return keras.Sequential([keras.layers.Lambda(group), experts])
    common = {"num_experts": num_experts, "expert_units": units, "balance_loss": "switch"}
    if kind == "dense-moe":
        layer = MixtureOfExperts(**common)
    elif kind == "dropless":
        layer = MixtureOfExperts(**common, k=k, capacity_factor=None, dispatch="dropless")
    else:
        layer = MixtureOfExperts(**common, k=k, capacity_factor=capacity_factor, dispatch=kind)
    layer.build((None, dim))
    return layer


def make_step(layer, jit_compile=True):
    """A compiled forward + backward step of `layer`.

    Args:
        layer: a Keras layer (built or not).
        jit_compile: compile with XLA (the setting the course trains with).

    Returns:
        A `tf.function` `step(x) -> (loss, grads)`: the loss
        `mean(layer(x)**2) + sum(layer.losses)` (the output reshaped to
        `[rows, features]` first) and its gradients with
        respect to `layer.trainable_variables` (in that order).

    Example:
    >>> step = make_step(make_layer("ffn", num_experts=4, k=1, units=8, dim=4))
    >>> loss, grads = step(np.ones((8, 4), "float32"))
    """
    import tensorflow as tf

    @tf.function(jit_compile=bool(jit_compile))
    def step(x):
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x, training=True), "float32")
            # Reduced as [rows, features] whatever the output's rank: the "experts" kind returns
            # [E, C, d], and XLA:CPU reduces a rank-3 tensor through a slower windowed reduction
            # (about 1.45x the step time of the same experts' matmuls at E=4, k=2), which would be
            # charged to the experts, not to the loss.
            y = tf.reshape(y, (-1, y.shape[-1]))
            loss = tf.reduce_mean(tf.square(y)) + sum(layer.losses)
        return loss, tape.gradient(loss, layer.trainable_variables)

    return step


def run_once(step, x):
    """Wall-clock seconds of one `step(x)`, waiting for the loss and the gradients."""
    start = time.perf_counter()
    loss, grads = step(x)
    float(loss)
    for grad in grads[:1] + grads[-1:]:
        np.asarray(grad)  # wait for the backward pass too
    return time.perf_counter() - start


def time_layers(layers, x, reps=10, warmup=1, jit_compile=True):
    """Median step time of each layer, timing them in turns.

    Each layer is first run `warmup` times untimed (the first run traces and
    compiles), then the layers take turns: A, B, C, A, B, C, ... `reps`
    times, and the median of each layer's times is kept.

    Args:
        layers: a dict `{name: layer}`.
        x: `[T, dim]` input tensor.
        reps: timed steps per layer, >= 1.
        warmup: untimed steps per layer before timing, >= 1.
        jit_compile: compile each step with XLA.

    Returns:
        `{name: median seconds}` (floats), in the order of `layers`.

    Example:
    >>> layers = {e: make_layer("gather", e, k=2, units=32, dim=16) for e in (4, 8)}
    >>> times = time_layers(layers, np.ones((64, 16), "float32"), reps=3)
    """
    if not isinstance(layers, dict) or not layers:
        raise ValueError(
            f"`layers` must be a non-empty dict {{name: layer}}; received {type(layers).__name__}: {layers!r}."
        )
    reps = _checks.positive_int("reps", reps)
    warmup = _checks.positive_int("warmup", warmup)
    steps = {name: make_step(layer, jit_compile) for name, layer in layers.items()}
    for step in steps.values():
        for _ in range(warmup):
            run_once(step, x)
    times = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            times[name].append(run_once(step, x))
    return {name: float(np.median(t)) for name, t in times.items()}


def time_step(layer, x, reps=10, warmup=1, jit_compile=True):
    """Median seconds of one compiled forward + backward step of one layer.

    Args:
        layer: a Keras layer mapping `x` to a tensor (e.g. from `make_layer`).
        x: `[T, dim]` input tensor.
        reps: timed steps, >= 1.
        warmup: untimed steps first (tracing and XLA compilation), >= 1.
        jit_compile: compile with XLA.

    Returns:
        The median step time in seconds (a float).

    Example:
    >>> seconds = time_step(make_layer("dense-moe", 4, units=32, dim=16), np.ones((64, 16), "float32"), reps=3)
    """
    return time_layers({"layer": layer}, x, reps=reps, warmup=warmup, jit_compile=jit_compile)["layer"]


def time_row(configs, x, reps=10, warmup=1):
    """`time_layers` for layers given as `make_layer` arguments.

    Args:
        configs: `{name: (kind, num_experts, k, units, dim, capacity_factor)}`.
        x: `[T, dim]` input tensor.
        reps: timed steps per configuration.
        warmup: untimed steps per configuration.

    Returns:
        `{name: median seconds}`.

    Example:
    >>> x = np.ones((64, 16), "float32")
    >>> row = time_row({"dense": ("dense-moe", 4, 2, 32, 16, None), "top2": ("gather", 4, 2, 32, 16, 1.0)}, x, reps=3)
    >>> sorted(row)  # seconds per step of each
    ['dense', 'top2']
    """
    if not isinstance(configs, dict) or not configs:
        raise ValueError(f"`configs` must be a non-empty dict {{name: make_layer arguments}}; received {configs!r}.")
    return time_layers({name: make_layer(*spec) for name, spec in configs.items()}, x, reps=reps, warmup=warmup)
