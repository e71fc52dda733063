"""The course's model zoo: the builders of the training comparison (`python -m moe_tf train`, notebooks 02-03).

Four models share one skeleton, so that only the feed-forward block differs:

    inputs -> Dense(width, relu) -> Dropout -> h
    h -> h + Dropout(block(h))               (a residual feed-forward block)
    h -> Dense(num_classes)                  (logits)

`block` is

- `"dense"`: one feed-forward network `width -> expert_units -> width` (relu).
  It is exactly one expert path: the same shapes and the same FLOPs as a
  single expert, so it matches a k=1 (Switch) model's active compute minus the
  router's `width * E` multiply-adds, and is half the expert compute of top-2.
- `"dense-moe"`: the 1991 softmax mixture (`k=None`): every expert runs on
  every example and the outputs are mixed by softmax gates.
- `"topk-moe"`: sparse top-k (default k=2, Shazeer et al. 2017 / GShard),
  noisy gating (learned Gaussian noise by default), a capacity factor and a
  Switch (or Shazeer) balance loss.
- `"switch"`: top-1 with capacity factor 1.25 and the Switch balance loss
  with weight 1e-2 (Fedus et al. 2021), multiplicative jitter noise.

Dropout is `moe_tf.layers.Dropout` (Keras's, with a random generator that
stays fast under `jit_compile=True` on a CPU), so XLA speeds these models up.

The residual connection matters for sparse models: an example whose expert
slots are all over capacity gets 0 from the MoE block and still passes `h`
on to the classifier.

Their parameters and FLOPs, total and active, are counted by the library's
`moe_tf.cost.model_cost` (its conventions are in that module's docstring).
"""

import keras

from moe_tf import _checks
from moe_tf.layers.dropout import Dropout
from moe_tf.layers.linear_moe import LinearExpertsMoE
from moe_tf.layers.moe import BALANCE_LOSSES as _LAYER_BALANCE_LOSSES
from moe_tf.layers.moe import MixtureOfExperts
from moe_tf.layers.router import NOISE_TYPES

MODELS = ("dense", "dense-moe", "topk-moe", "switch")
# The layer's options, with the command line's spelling "none" for no balance loss.
BALANCE_LOSSES = tuple("none" if loss is None else loss for loss in _LAYER_BALANCE_LOSSES)


def build_model(
    model,
    input_dim,
    num_classes,
    *,
    width=256,
    expert_units=256,
    num_experts=8,
    k=2,
    capacity_factor=1.25,
    balance_loss="switch",
    balance_loss_weight=1e-2,
    z_loss_weight=1e-3,
    noise="gaussian",
    dropout=0.2,
    input_dropout=0.0,
    seed=0,
    sparse_inputs=False,
    dispatch=None,
):
    """Builds one of the comparison models (not compiled).

    Args:
        model: `"dense"`, `"dense-moe"`, `"topk-moe"` or `"switch"` (see the module docstring).
        input_dim: number of input features (784 for flattened MNIST).
        num_classes: number of output logits.
        width: width `d` of the residual stream (the first Dense layer's units).
        expert_units: hidden width `h` of each expert, and of the dense model's block.
        num_experts: E, for the MoE models.
        k: experts per example for `"topk-moe"` (`"switch"` always uses 1, `"dense-moe"` all E).
        capacity_factor: capacity factor of `"topk-moe"` and `"switch"`; None for no dropping.
        balance_loss: `"switch"`, `"shazeer"` or `"none"` for `"topk-moe"` (`"switch"` always
            uses the Switch loss; `"dense-moe"` trains none, as in 1991, but logs its value).
        balance_loss_weight: α of the balance loss (`"switch"` always uses 1e-2).
        z_loss_weight: router z-loss weight of the sparse models (ST-MoE: 1e-3).
        noise: router noise of `"topk-moe"`: `"gaussian"` (noisy top-k with a learned noise
            scale, Shazeer et al. 2017; the Shazeer load loss needs it), `"jitter"` or `"none"`.
            `"switch"` always uses jitter, `"dense-moe"` none.
        dropout: dropout rate after the first layer and on the block's output.
        input_dropout: dropout rate on the inputs (useful for sparse bag-of-n-gram inputs).
        seed: seed of the dropout, the router noise and the initializers.
        sparse_inputs: the inputs are `tf.SparseTensor`s (tf-idf n-grams).
        dispatch: dispatch of the sparse models, `"gather"`, `"einsum"` or `"dropless"` (see
            `moe_tf.dispatch`); None picks `MixtureOfExperts`'s default (`"dropless"` when
            `capacity_factor` is None, else `"gather"`).

    Returns:
        An uncompiled `keras.Model` named after `model`; its MoE layer is named `"moe"`.

    Example:
    >>> from moe_tf.cost import model_cost
    >>> m = build_model("topk-moe", 784, 10, num_experts=8, k=2)
    >>> model_cost(m)["active_flops"] < model_cost(build_model("dense-moe", 784, 10))["active_flops"]
    True
    """
    _checks.one_of("model", model, MODELS)
    input_dim = _checks.positive_int("input_dim", input_dim)
    num_classes = _checks.positive_int("num_classes", num_classes)
    width = _checks.positive_int("width", width)
    expert_units = _checks.positive_int("expert_units", expert_units)
    num_experts = _checks.positive_int("num_experts", num_experts)
    _checks.number("dropout", dropout)
    if dropout >= 1:
        raise ValueError(f"`dropout` must be in [0, 1); received dropout={dropout!r}.")
    if input_dropout < 0 or input_dropout >= 1:
        raise ValueError(f"`input_dropout` must be in [0, 1); received input_dropout={input_dropout!r}.")
    balance_loss = _checks.one_of("balance_loss", balance_loss, BALANCE_LOSSES + (None,))
    _checks.one_of("noise", noise, NOISE_TYPES)

    init = lambda offset: keras.initializers.GlorotUniform(seed=seed + offset)
    inputs = keras.Input((input_dim,), sparse=sparse_inputs, name="inputs")
    x = inputs
    if input_dropout > 0:
        x = Dropout(input_dropout, seed=seed + 1, name="input_dropout")(x)
    h = keras.layers.Dense(width, activation="relu", kernel_initializer=init(2), name="embed")(x)
    h = Dropout(dropout, seed=seed + 3, name="embed_dropout")(h)

    if model == "dense":
        block = keras.Sequential(
            [
                keras.layers.Dense(expert_units, activation="relu", kernel_initializer=init(4), name="ffn_hidden"),
                keras.layers.Dense(width, kernel_initializer=init(5), name="ffn_output"),
            ],
            name="ffn",
        )
    else:
        common = dict(
            num_experts=num_experts,
            expert_units=expert_units,
            kernel_initializer=init(100),  # expert e gets seed + 100 + e
            seed=seed + 6,
            dispatch=dispatch,
            name="moe",
        )
        if model == "dense-moe":
            block = MixtureOfExperts(k=None, balance_loss=None, **common)
        elif model == "switch":
            block = MixtureOfExperts(
                k=1,
                capacity_factor=capacity_factor,
                noise="jitter",
                balance_loss="switch",
                balance_loss_weight=1e-2,
                z_loss_weight=z_loss_weight,
                **common,
            )
        else:
            k = _checks.top_k(k, num_experts)
            loss = None if balance_loss in (None, "none") else balance_loss
            block = MixtureOfExperts(
                k=k,
                capacity_factor=capacity_factor,
                noise=noise,
                balance_loss=loss,
                balance_loss_weight=balance_loss_weight,
                z_loss_weight=z_loss_weight,
                **common,
            )
    update = Dropout(dropout, seed=seed + 7, name="block_dropout")(block(h))
    h = keras.layers.Add(name="residual")([h, update])
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init(8), name="classifier")(h)
    return keras.Model(inputs, outputs, name=model.replace("-", "_"))


def build_ngram_model(model, input_dim, num_classes, *, num_experts=8, k=2, capacity_factor=1.25, seed=0):
    """Builds one of the IMDB comparison models on a bag of n-grams (not compiled).

    On a 100,000-wide bag of n-grams a dense bottleneck followed by a
    `MixtureOfExperts` memorises the 22,500 training reviews within an epoch,
    so the n-gram models are mixtures of *linear* experts
    (`moe_tf.layers.LinearExpertsMoE`), the 1991 construction with one
    logistic regression per expert:

    - `"dense"`: one linear classifier (logistic regression: one expert);
    - `"dense-moe"`: softmax mixture of all E linear experts, no balance loss;
    - `"topk-moe"`: top-k of E (default top-2 of 8), capacity factor, Switch loss 1e-2;
    - `"switch"`: top-1 of E, capacity factor (1.25), Switch loss 1e-2.

    Args:
        model: `"dense"`, `"dense-moe"`, `"topk-moe"` or `"switch"`.
        input_dim: number of n-gram features.
        num_classes: number of output logits (2 for IMDB).
        num_experts: E.
        k: experts per review for `"topk-moe"`.
        capacity_factor: capacity factor of `"topk-moe"` and `"switch"` (None: no dropping).
        seed: initializer and router seed.

    Returns:
        An uncompiled `keras.Model`; its MoE layer is named `"moe"`.

    Example:
    >>> from moe_tf.cost import model_cost
    >>> m = build_ngram_model("topk-moe", 1000, 2)
    >>> model_cost(m)["total_params"]  # router 1000*8 + 8 experts * (1000*2 + 2)
    24016
    """
    _checks.one_of("model", model, MODELS)
    input_dim = _checks.positive_int("input_dim", input_dim)
    num_classes = _checks.positive_int("num_classes", num_classes)
    num_experts = _checks.positive_int("num_experts", num_experts)
    inputs = keras.Input((input_dim,), name="inputs")
    init = keras.initializers.GlorotUniform(seed=seed)
    if model == "dense":
        outputs = keras.layers.Dense(num_classes, kernel_initializer=init, name="classifier")(inputs)
    else:
        if model == "dense-moe":
            options = dict(k=None, balance_loss=None)
        elif model == "switch":
            options = dict(k=1, capacity_factor=capacity_factor, balance_loss="switch")
        else:
            options = dict(k=_checks.top_k(k, num_experts), capacity_factor=capacity_factor, balance_loss="switch")
        layer = LinearExpertsMoE(num_experts, num_classes, kernel_initializer=init, seed=seed, name="moe", **options)
        outputs = layer(inputs)
    return keras.Model(inputs, outputs, name=model.replace("-", "_"))


def moe_layers(model):
    """The `MixtureOfExperts` and `LinearExpertsMoE` layers of a model, outermost first."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, (MixtureOfExperts, LinearExpertsMoE))]
