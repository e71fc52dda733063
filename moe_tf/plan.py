"""The routing plan: what a router decides, in the form every dispatch consumes.

Every MoE layer of this library is one pipeline (`moe_tf.layers.MoELayer`):

    tokens --router--> plan --dispatch--> [E, slots, d] --experts--> [E, slots, o] --combine--> outputs

Routers differ only in the plan they write; dispatches differ only in how
they move tokens to the experts and back. Two kinds of plan cover the
routers of the literature (flaxformer calls them "indices" and "mask"
routing instructions):

`SlotPlan`: token choice. Each token names its k experts (Shazeer's top-k,
Switch, GShard, Mixtral, DeepSeekMoE). The dense mixture of Jacobs et al.
(1991) is the case where every token goes to every expert (`indices=None`).

    indices      [T, k]  int32    expert of each assignment; None: dense, all E experts
    gates        [T, k]  float32  gate of each assignment before capacity ([T, E] when dense)
    keep         [T, k]  float32  1 if the assignment runs, 0 if dropped (over capacity) or padding
    positions    [T, k]  int32    slot within its expert; None when there is no capacity
    capacity     C                slots per expert (a Python int or a scalar tensor); None: no capacity
    probs        [T, E]  float32  router softmax (the Switch loss's P_i, entropy statistics)
    logits       [T, E]  float32  the logits routing used, noise included (z-loss)
    clean_logits [T, E]  float32  without noise (Shazeer's load loss); None without noise
    noise_stddev [T, E]  float32  Gaussian noise scale (Shazeer's load loss); None without it
    token_mask   [T]     float32  1 for real tokens, 0 for padding; None: all real

`MaskPlan`: dispatch and combine weights per (token, expert, slot), routed
within groups of n tokens (a sequence). Expert choice (every expert picks
its c tokens: a one-hot dispatch) and Soft MoE (every slot is a softmax
average of all tokens) write this form; so does the GShard einsum
formulation of a `SlotPlan` (`moe_tf.dispatch.dispatch_and_combine_tensors`).

    dispatch     [G, n, E, C] float32  share of token n that enters slot c of expert e
    combine      [G, n, E, C] float32  weight of that slot's output in token n's output
    probs        [G, n, E]    float32  each token's distribution over experts (statistics)
    logits       [G, n, L]    float32  the router's logits (z-loss; L = E, or E*C slots)
    token_mask   [G, n]       float32  1 for real tokens, 0 for padding; None: all real

Both are named tuples of tensors (and None): they pass through
`tf.function`/XLA, and a field is read by name (`plan.indices`).
"""

from typing import Any, NamedTuple

from keras import ops

__all__ = ["MaskPlan", "SlotPlan"]


class SlotPlan(NamedTuple):
    """Token-choice routing: each token's k (expert, slot) assignments and their gates. See the module docstring."""

    indices: Any
    gates: Any
    keep: Any
    positions: Any
    capacity: Any
    probs: Any
    logits: Any
    clean_logits: Any = None
    noise_stddev: Any = None
    token_mask: Any = None

    @property
    def num_experts(self):
        """E, from the router's probabilities."""
        return self.probs.shape[-1]

    @property
    def combine_weights(self):
        """`[T, k]` (or `[T, E]` dense): the gates of the assignments that run, exactly 0 for the others."""
        return self.gates * self.keep

    def dense_gates(self):
        """`[T, E]` gates, zero outside each token's k experts (before capacity)."""
        if self.indices is None:
            return self.gates
        one_hot = ops.one_hot(self.indices, self.num_experts, dtype="float32")  # [T, k, E]
        return ops.sum(one_hot * self.gates[..., None], axis=1)

    def choices(self):
        """`[T, k, E]` one-hot choices before capacity (padding rows 0); dense: each token's top-1 expert `[T, 1, E]`.

        What the Switch loss's f_i and the load statistics count.
        """
        if self.indices is None:
            chosen = ops.one_hot(ops.argmax(self.probs, axis=-1), self.num_experts, dtype="float32")[:, None, :]
        else:
            chosen = ops.one_hot(self.indices, self.num_experts, dtype="float32")
        return chosen if self.token_mask is None else chosen * self.token_mask[:, None, None]


class MaskPlan(NamedTuple):
    """Mask routing: dispatch and combine weights `[G, n, E, C]` per group of n tokens. See the module docstring."""

    dispatch: Any
    combine: Any
    probs: Any
    logits: Any
    token_mask: Any = None

    @property
    def num_experts(self):
        """E."""
        return self.dispatch.shape[2]
