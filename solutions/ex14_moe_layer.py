# --- solution
# stub: """Exercise 14: a complete Mixture-of-Experts layer in Keras 3.
# stub:
# stub: Learning goal: put the pieces of the earlier exercises together into one
# stub: reusable, serialisable Keras layer, written the way Keras layers are meant to
# stub: be written:
# stub:
# stub: - configuration in `__init__` (no weights there),
# stub: - weights in `build` (their shapes depend on the input width),
# stub: - the maths in `call`, with `keras.ops` only (so it runs on any backend and
# stub:   inside `jit_compile`),
# stub: - the Switch Transformer load-balancing loss handed to Keras with
# stub:   `self.add_loss`, so `model.fit` minimises it together with the task loss,
# stub: - `get_config`, so `MoELayer.from_config(layer.get_config())` rebuilds it.
# stub:
# stub: Then use the layer in a small MNIST classifier and train it (the test trains
# stub: it on 5,000 real MNIST training images and checks the accuracy on 1,000 test
# stub: images; see `build_classifier`).
# stub:
# stub: You may run every expert on every token and zero the gates outside the top
# stub: k: that gives exactly the output of a sparse layer (a gate of 0 multiplies an
# stub: expert out) and is the clearest way to write it; a production layer
# stub: *dispatches* each token only to its k experts to save the compute (see
# stub: `moe_tf.dispatch`) and adds an expert capacity.
# stub:
# stub: Rules: write the layer yourself with `keras.ops` (do not wrap
# stub: `moe_tf.MixtureOfExperts`); no Python loops over tokens.
# stub:
# stub: Run the tests: `pytest tests/exercises/test_ex14_moe_layer.py`
# stub: (set `MOE_TF_DATA_DIR` to the folder holding `mnist.npz` for the training test).
# stub: """
"""Exercise 14: a complete Mixture-of-Experts layer in Keras 3 (reference solution).

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

This solution runs every expert on every token and zeroes the gates outside
the top k. That gives exactly the output of a sparse layer (a gate of 0
multiplies an expert out) and is the clearest way to write it; a
production layer *dispatches* each token only to its k experts to save the
compute (see `moe_tf.dispatch`) and adds an expert capacity.
"""
# --- end solution

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
        # --- solution
        # stub: raise NotImplementedError("store the configuration (validate num_experts >= 1 and 1 <= k <= num_experts)")
        if int(num_experts) < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= int(k) <= int(num_experts):
            raise ValueError(f"k must be in [1, num_experts={num_experts}], got {k}")
        self.num_experts = int(num_experts)
        self.expert_units = int(expert_units)
        self.k = int(k)
        self.output_units = None if output_units is None else int(output_units)
        self.activation = keras.activations.get(activation)
        self.balance_loss_weight = float(balance_loss_weight)
        # --- end solution

    def build(self, input_shape):
        # --- solution
        # stub: """Create router_kernel [d, E] (dtype float32), w1 [E, d, h], b1 [E, h], w2 [E, h, o], b2 [E, o], in this order."""
        # stub: raise NotImplementedError("create the weights with self.add_weight")
        d = int(input_shape[-1])
        E, h = self.num_experts, self.expert_units
        o = self.output_units or d
        self.router_kernel = self.add_weight(
            name="router_kernel", shape=(d, E), initializer="glorot_uniform", dtype="float32"
        )
        self.w1 = self.add_weight(name="w1", shape=(E, d, h), initializer="glorot_uniform")
        self.b1 = self.add_weight(name="b1", shape=(E, h), initializer="zeros")
        self.w2 = self.add_weight(name="w2", shape=(E, h, o), initializer="glorot_uniform")
        self.b2 = self.add_weight(name="b2", shape=(E, o), initializer="zeros")
        # --- end solution

    def route(self, x):
        """Router of `call`: returns `(gates [T, E], indices [T, k], probs [T, E])`, all float32 but indices."""
        # --- solution
        # stub: raise NotImplementedError("router: float32 logits, softmax, top-k, gates")
        logits = ops.matmul(ops.cast(x, "float32"), self.router_kernel)  # [T, E], float32
        probs = ops.softmax(logits, axis=-1)
        top_probs, indices = ops.top_k(probs, k=self.k)  # [T, k]
        if self.k > 1:
            top_probs = top_probs / ops.sum(top_probs, axis=-1, keepdims=True)
        one_hot = ops.one_hot(indices, self.num_experts, dtype="float32")  # [T, k, E]
        gates = ops.einsum("tk,tke->te", top_probs, one_hot)  # [T, E]
        return gates, indices, probs
        # --- end solution

    def balance_loss(self, probs, indices):
        # stub: """Unweighted Switch loss `E * sum_i f_i * P_i` for `probs [T, E]` and `indices [T, k]` (a helper for call)."""
        """Unweighted Switch loss `E * sum_i f_i * P_i` for `probs [T, E]` and `indices [T, k]`."""
        # --- solution
        # stub: raise NotImplementedError("f_i from one_hot(indices), P_i = mean of probs")
        chosen = ops.sum(ops.one_hot(indices, self.num_experts, dtype="float32"), axis=1)  # [T, E]
        fraction = ops.sum(chosen, axis=0) / ops.sum(chosen)  # f_i
        mean_prob = ops.mean(probs, axis=0)  # P_i
        return self.num_experts * ops.sum(fraction * mean_prob)
        # --- end solution

    def call(self, inputs):
        # --- solution
        # stub: """`[T, d] -> [T, o]`: route, run the experts, combine with the gates, add_loss the weighted balance loss."""
        # stub: raise NotImplementedError("call")
        gates, indices, probs = self.route(inputs)
        hidden = self.activation(ops.einsum("td,edh->teh", inputs, self.w1) + self.b1)  # [T, E, h]
        expert_out = ops.einsum("teh,eho->teo", hidden, self.w2) + self.b2  # [T, E, o]
        outputs = ops.einsum("te,teo->to", ops.cast(gates, expert_out.dtype), expert_out)  # [T, o]
        self.add_loss(self.balance_loss_weight * self.balance_loss(probs, indices))
        return outputs
        # --- end solution

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def get_config(self):
        # --- solution
        # stub: """The base config plus every argument of __init__ (so from_config rebuilds the same layer)."""
        # stub: raise NotImplementedError("get_config")
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": self.expert_units,
                "k": self.k,
                "output_units": self.output_units,
                "activation": keras.activations.serialize(self.activation),
                "balance_loss_weight": self.balance_loss_weight,
            }
        )
        return config
        # --- end solution


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
    # --- solution
    # stub: raise NotImplementedError("build_classifier")
    inputs = keras.Input(shape=(input_dim,))
    logits = MoELayer(num_experts=num_experts, expert_units=expert_units, k=k, output_units=num_classes, name="moe")(
        inputs
    )
    outputs = keras.layers.Softmax()(logits)
    return keras.Model(inputs, outputs, name="moe_classifier")
    # --- end solution
