"""What a model costs: its total parameters, and the parameters and FLOPs one example uses.

    model_cost(model)   {"total_params", "active_params", "active_flops"} of a built Keras model

`model_cost` walks the built model's layers:

- **total parameters**: every weight (`model.count_params()`).
- **active parameters per example**: the weights one example's inference
  forward pass reads. For a `MixtureOfExperts` that is the router (always)
  plus k of the E experts (all E for the dense mixture). The Gaussian noise
  kernel of a noisy router is only used in training and is not counted.
- **active FLOPs per example**: 2 × the multiply-adds of the matrix
  multiplications of one inference forward pass (a `d -> u` Dense is
  `2·d·u`). Biases, activations, softmax, top-k, dropout, residual adds and
  the gate-weighted sum are not counted (each is O(width), not O(width²)).
  For top-k this is the algorithmic cost of k expert paths; the capacity
  buffer of the gather dispatch actually computes `E·C ≈ capacity_factor·k`
  paths per token, padding included.

Every MoE layer of the library (and `TransformerBlock`, `TokenAndPositionEmbedding`)
reports its own cost per token (`layer.cost()`, a `moe_tf.layers.LayerCost`);
`model_cost` multiplies it by the tokens per example and adds plain Keras
`Dense` layers to it.
"""

import math

import keras

from moe_tf.layers._cost import dense_sizes

__all__ = ["model_cost"]


def _tokens_per_example(layer):
    """How many times a layer runs per example: 1 for `[batch, dim]`, L for `[batch, L, dim]`."""
    inputs = layer.input
    if isinstance(inputs, (list, tuple)):  # a layer called with extra inputs (e.g. a mask): the first is the data
        inputs = inputs[0]
    shape = tuple(inputs.shape)
    inner = shape[1:-1]
    if any(n is None for n in inner):
        raise ValueError(
            f"Cannot count FLOPs of layer {layer.name!r}: its input shape {shape} has an unknown "
            f"sequence length; build the model with a fixed length."
        )
    return math.prod(inner) if inner else 1


def _dense_cost(layer):
    params, multiply_adds = dense_sizes(layer)
    return params, params, 2 * multiply_adds * _tokens_per_example(layer)


_NORMALIZATION = (keras.layers.LayerNormalization, keras.layers.BatchNormalization)


def _layer_costs(layer):
    """(total params, active params, active FLOPs) of one layer, recursing into nested models."""
    if hasattr(layer, "cost"):  # the library's MoE layers, TransformerBlock, TokenAndPositionEmbedding
        cost = layer.cost()
        flops = cost.flops_per_token * _tokens_per_example(layer) if cost.flops_per_token else 0
        return cost.total_params, cost.active_params, flops
    if isinstance(layer, keras.layers.Dense):
        return _dense_cost(layer)
    if isinstance(layer, keras.Model):  # Sequential / Functional blocks
        parts = [_layer_costs(sub) for sub in layer.layers]
        return tuple(sum(p[i] for p in parts) for i in range(3))
    n = sum(math.prod(w.shape) for w in layer.weights)
    if n == 0:  # Input, Dropout, Add, Activation, ...: no weights, no matmul
        return 0, 0, 0
    if isinstance(layer, _NORMALIZATION):  # elementwise: active weights, no matmul FLOPs
        return n, n, 0
    raise ValueError(
        f"`model_cost` cannot account for layer {layer.name!r} of type {type(layer).__name__}; "
        f"supported layers with weights: Dense, LayerNormalization, BatchNormalization, and layers with a "
        f"`cost()` method (every MoE layer of moe_tf, TransformerBlock, TokenAndPositionEmbedding)."
    )


def model_cost(model):
    """Total parameters, active parameters and active FLOPs per example of a built model.

    Conventions are in the module docstring: FLOPs = 2 × matmul multiply-adds of
    one inference forward pass; a `MixtureOfExperts` layer counts its router and
    k of its E experts as active (all E when `k=None`). Every layer of the
    library reports its own cost (`layer.cost()`, a `moe_tf.layers.LayerCost`
    per token), which this function multiplies by the tokens per example.

    Args:
        model: a built functional `keras.Model` made of `Dense`, the library's
            layers (every MoE layer, `TransformerBlock`, `TokenAndPositionEmbedding`),
            normalization and weight-free layers (nested models are walked). The
            sequence length must be fixed for layers on sequences.

    Returns:
        A dict of ints: `total_params`, `active_params`, `active_flops`.

    Example:
    >>> from moe_tf import MixtureOfExperts
    >>> inputs = keras.Input((784,))
    >>> h = keras.layers.Dense(256, activation="relu")(inputs)
    >>> h = MixtureOfExperts(num_experts=8, expert_units=256, k=2)(h)
    >>> model_cost(keras.Model(inputs, keras.layers.Dense(10)(h)))
    {'total_params': 1258250, 'active_params': 468746, 'active_flops': 934912}
    """
    if not model.built:
        raise ValueError(f"`model` must be built before counting its cost; received the unbuilt model {model.name!r}.")
    total, active, flops = 0, 0, 0
    for layer in model.layers:
        t, a, f = _layer_costs(layer)
        total, active, flops = total + t, active + a, flops + f
    return {"total_params": int(total), "active_params": round(active), "active_flops": round(flops)}
