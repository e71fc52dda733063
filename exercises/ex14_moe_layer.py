"""Exercise 14: a complete Mixture-of-Experts layer in Keras 3.

Learning goal: put the pieces of the earlier exercises together into one
reusable, serialisable Keras layer, written the way Keras layers are meant to
be written:

- configuration in `__init__` (no weights there),
- weights in `build` (their shapes depend on the input width),
- the maths in `call`, with `keras.ops` only (so it runs on any backend and
  inside `jit_compile`),
- the Switch Transformer load-balancing loss handed to Keras with
  `self.add_loss`, so `model.fit` minimises it together with the task loss,
- `get_config`, so `MoELayer.from_config(layer.get_config())` rebuilds it.

Then use the layer in a small MNIST classifier and train it (the test trains
it on 5,000 real MNIST training images and checks the accuracy on 1,000 test
images; see `build_classifier`).

You may run every expert on every token and zero the gates outside the top
k: that gives exactly the output of a sparse layer (a gate of 0 multiplies an
expert out) and is the clearest way to write it; a production layer
*dispatches* each token only to its k experts to save the compute (see
`moe_tf.dispatch`) and adds an expert capacity.

Rules: write the layer yourself with `keras.ops` (do not wrap
`moe_tf.MixtureOfExperts`); no Python loops over tokens.

Run the tests: `pytest tests/exercises/test_ex14_moe_layer.py`
(set `MOE_TF_DATA_DIR` to the folder holding `mnist.npz` for the training test).
"""

import keras
from keras import ops  # noqa: F401 (the stub does not use it yet: you will need it)


@keras.saving.register_keras_serializable(package="moe_tf_exercises")
class MoELayer(keras.layers.Layer):
    """Top-k Mixture-of-Experts layer with a Switch-style balance loss.

    Router: `probs = softmax(x @ router_kernel)`, `[T, E]`, computed in
    float32 (Switch Transformer's selective precision). Each token keeps the
    k experts with the largest probabilities. Gates:

    - `k == 1`: the gate of the chosen expert is its probability `p` (Switch
      Transformer: not renormalised, so the router gets a gradient);
    - `k >= 2`: the k kept probabilities divided by their sum (they sum to 1).

    Gates are 0 for every expert outside the top k.

    Experts: E independent two-layer MLPs `d -> expert_units -> output_units`
    with `activation` in between.

    Weights (create them in `build`, in this order: the tests read and set
    them with `get_weights` / `set_weights`):
    `router_kernel [d, E]` (float32, no router bias), `w1 [E, d, h]`,
    `b1 [E, h]`, `w2 [E, h, o]`, `b2 [E, o]`.

    Output: `y[t] = sum_e gates[t, e] * expert_e(x[t])`.

    Balance loss (Switch Transformer, Fedus et al. 2021), added with
    `self.add_loss(balance_loss_weight * loss)` on every call:

        loss = E * sum_i f_i * P_i

    `f_i` = fraction of the T*k (token, choice) assignments that chose
    expert i (sums to 1; no gradient), `P_i` = mean over tokens of
    `probs[:, i]` (differentiable). Uniform routing gives 1.0; everything on
    one expert gives E.

    Args:
        num_experts: E (>= 1).
        expert_units: hidden width h of each expert.
        k: experts per token, 1 <= k <= E.
        output_units: output width o; None means the input width d.
        activation: the experts' hidden activation (name or callable).
        balance_loss_weight: alpha (Switch: 1e-2).

    Raises:
        ValueError: in `__init__`, if `num_experts < 1` or `k` is not in
            `[1, num_experts]`.

    Methods the tests call besides `call`:
        `route(x)` -> `(gates [T, E], indices [T, k], probs [T, E])`.

    Input shape: `[batch, d]`. Output shape: `[batch, o]`.

    Example:
    >>> layer = MoELayer(num_experts=4, expert_units=16, k=2, output_units=3)
    >>> y = layer(np.ones((5, 8), "float32"))
    >>> y.shape, len(layer.losses)
    ((5, 3), 1)
    """

    def __init__(
        self,
        num_experts=4,
        expert_units=64,
        k=2,
        output_units=None,
        activation="relu",
        balance_loss_weight=1e-2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        raise NotImplementedError("store the configuration (validate num_experts >= 1 and 1 <= k <= num_experts)")

    def build(self, input_shape):
        """Create router_kernel [d, E] (dtype float32), w1 [E, d, h], b1 [E, h], w2 [E, h, o], b2 [E, o], in this order."""
        raise NotImplementedError("create the weights with self.add_weight")

    def route(self, x):
        """Router of `call`: returns `(gates [T, E], indices [T, k], probs [T, E])`, all float32 but indices."""
        raise NotImplementedError("router: float32 logits, softmax, top-k, gates")

    def balance_loss(self, probs, indices):
        """Unweighted Switch loss `E * sum_i f_i * P_i` for `probs [T, E]` and `indices [T, k]` (a helper for call)."""
        raise NotImplementedError("f_i from one_hot(indices), P_i = mean of probs")

    def call(self, inputs):
        """`[T, d] -> [T, o]`: route, run the experts, combine with the gates, add_loss the weighted balance loss."""
        raise NotImplementedError("call")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def get_config(self):
        """The base config plus every argument of __init__ (so from_config rebuilds the same layer)."""
        raise NotImplementedError("get_config")


def build_classifier(input_dim=784, num_classes=10, num_experts=4, expert_units=64, k=2):
    """An MNIST-sized classifier whose experts are the classifiers.

    Architecture: `Input([input_dim])` -> `MoELayer(num_experts, expert_units,
    k, output_units=num_classes)` (each expert maps pixels to class logits)
    -> softmax. Returns an **uncompiled** `keras.Model` whose output is
    `[batch, num_classes]` class probabilities (rows sum to 1).

    The test compiles it with `Adam(2e-3)`, `sparse_categorical_crossentropy`
    and accuracy, trains it (default arguments, `keras.utils.set_random_seed(0)`)
    for 5 epochs with batch size 128 on 5,000 MNIST training images and
    requires >= 0.88 accuracy on 1,000 MNIST test images (the reference
    solution reaches 0.91-0.93, in 2-9 s of training on 2 CPU cores
    depending on their load).

    Example:
    >>> model = build_classifier(784, 10)
    >>> model(np.zeros((2, 784), "float32")).shape
    (2, 10)
    """
    raise NotImplementedError("build_classifier")
