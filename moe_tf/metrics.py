"""Routing statistics: how evenly a router spreads tokens, and what it drops.

`RoutingMetrics` is a Keras metric that a `MixtureOfExperts` layer owns and
updates on every call. Because it is tracked by the layer, `model.fit` resets
it each epoch and logs its scalar summaries next to the loss:

    <layer>_max_load      max_i f_i * E   (1.0 = perfectly balanced, E = collapse)
    <layer>_dropped       fraction of (token, expert) assignments over capacity
    <layer>_entropy       mean router entropy in nats (log E = uniform, 0 = one-hot)
    <layer>_balance_loss  unweighted balance loss (the Switch value if none is trained)
    <layer>_z_loss        unweighted router z-loss

    <layer>_load_<i>      f_i, the fraction of assignments routed to expert i
                          (only with `per_expert=True`: E more numbers per line)

`RoutingStats` (see `moe_tf.callbacks`) reads the per-expert fractions every
epoch for plots and TensorBoard, whether or not they are logged.
"""

import keras
from keras import ops


def routing_entropy(probs, mask=None):
    """Mean entropy `-sum_i p_i log p_i` of router distributions, in nats.

    Args:
        probs: `[T, E]` router probabilities.
        mask: optional `[T]` padding mask.

    Returns:
        A float32 scalar: `log(E)` for uniform routers, 0 for one-hot ones.
    """
    probs = ops.cast(probs, "float32")
    entropy = -ops.sum(probs * ops.log(ops.maximum(probs, 1e-12)), axis=-1)  # [T]
    if mask is None:
        return ops.mean(entropy)
    mask = ops.cast(ops.reshape(mask, (-1,)), "float32")
    return ops.sum(entropy * mask) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="moe_tf")
class RoutingMetrics(keras.metrics.Metric):
    """Accumulates per-expert load, drops, entropy and auxiliary losses.

    Args:
        num_experts: number of experts E.
        name: prefix of the logged keys (the owning layer's name).
        per_expert: also log each expert's load fraction `<name>_load_<i>`.

    Example:
    >>> m = RoutingMetrics(num_experts=4, name="moe")
    >>> m.update_state(counts=[10., 10., 10., 10.], tokens=40., dropped=0.,
    ...                entropy_sum=55.4, balance_loss=1.0, z_loss=2.0)
    >>> float(m.result()["moe_max_load"])
    1.0
    """

    def __init__(self, num_experts, name="moe", per_expert=False, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.num_experts = num_experts
        self.per_expert = per_expert
        self.counts = self.add_variable(shape=(num_experts,), initializer="zeros", name="counts")
        self.tokens = self.add_variable(shape=(), initializer="zeros", name="tokens")
        self.dropped = self.add_variable(shape=(), initializer="zeros", name="dropped")
        self.entropy_sum = self.add_variable(shape=(), initializer="zeros", name="entropy_sum")
        self.balance_sum = self.add_variable(shape=(), initializer="zeros", name="balance_sum")
        self.z_sum = self.add_variable(shape=(), initializer="zeros", name="z_sum")
        self.steps = self.add_variable(shape=(), initializer="zeros", name="steps")

    def update_state(self, counts, tokens, dropped, entropy_sum, balance_loss, z_loss):
        """Adds one batch.

        Args:
            counts: `[E]` assignments routed to each expert (before capacity).
            tokens: number of real (non-padding) tokens.
            dropped: assignments that did not fit in capacity.
            entropy_sum: summed router entropy over real tokens.
            balance_loss, z_loss: this batch's unweighted loss values.
        """
        f32 = lambda v: ops.cast(v, "float32")  # noqa: E731
        self.counts.assign_add(f32(counts))
        self.tokens.assign_add(f32(tokens))
        self.dropped.assign_add(f32(dropped))
        self.entropy_sum.assign_add(f32(entropy_sum))
        self.balance_sum.assign_add(f32(balance_loss))
        self.z_sum.assign_add(f32(z_loss))
        self.steps.assign_add(1.0)

    def expert_load(self):
        """`[E]` fraction of routed assignments per expert (sums to 1)."""
        return self.counts / ops.maximum(ops.sum(self.counts), 1.0)

    def result(self):
        assignments = ops.maximum(ops.sum(self.counts), 1.0)
        steps = ops.maximum(self.steps, 1.0)
        load = self.expert_load()
        results = {
            f"{self.name}_max_load": ops.max(load) * self.num_experts,
            f"{self.name}_dropped": self.dropped / assignments,
            f"{self.name}_entropy": self.entropy_sum / ops.maximum(self.tokens, 1.0),
            f"{self.name}_balance_loss": self.balance_sum / steps,
            f"{self.name}_z_loss": self.z_sum / steps,
        }
        if self.per_expert:
            results.update({f"{self.name}_load_{i}": load[i] for i in range(self.num_experts)})
        return results

    def reset_state(self):
        for v in self.variables:
            v.assign(ops.zeros(v.shape, v.dtype))

    def get_config(self):
        return {"num_experts": self.num_experts, "name": self.name, "per_expert": self.per_expert, "dtype": self.dtype}
