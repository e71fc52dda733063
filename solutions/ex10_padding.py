"""Exercise 10: padding-aware routing.

Learning goal: batches of variable-length sequences are padded to a common
length, and the padding must be invisible to the MoE layer. A padding token

* routes nowhere: it takes no capacity slot, so it can never push a real
  token out of an expert's buffer;
* outputs exactly 0;
* is left out of the load-balancing loss: the fraction `f_i` of assignments
  per expert and the mean router probability `P_i` are taken over the real
  tokens only.

The test: padding a batch (more padding, or padding in other places) changes
neither the real tokens' outputs nor the loss. Its content may be anything.

Papers: Fedus, Zoph & Shazeer (2021), "Switch Transformers" (balance loss
`alpha * E * sum_i f_i * P_i`, capacity); Lepikhin et al. (2020), "GShard".
In Keras the padding mask is the layer's `mask` argument (`Embedding(mask_zero=True)`).

Conventions here (as in `moe_tf`): the router selects top-k on the logits
(ties go to the lower expert index) and the k kept gates are the softmax
over the k kept logits; assignments queue first choices first, then in
token order (exclusive cumsum); the capacity is passed in by the caller and
stays fixed when padding is added (a capacity derived from the padded length
would change with the padding; see the docstring of `masked_moe_forward`).

Work with numpy (or `keras.ops`).
"""

# stub: import numpy as np  # noqa: F401  (for your solution)
import numpy as np


def masked_capacity_positions(indices, num_experts, capacity, token_mask):
    """Capacity slots as in exercise 8, where padding tokens take no slot and are never kept.

    Args:
        indices: `[T, k]` int, chosen experts (padding tokens have some too: ignore them).
        num_experts: E.
        capacity: C, slots per expert.
        token_mask: `[T]` bool or 0/1, 1 = real token, 0 = padding.

    Returns:
        `(positions, keep)`, both `[T, k]`: a real assignment's position
        counts only the real assignments queued before it at its expert;
        `keep` is False for every padding assignment and for real ones with
        `position >= capacity`. (A padding assignment's position is unused.)

    Example:
        The padding token 0 would take expert 0's only slot; it must not:

        >>> positions, keep = masked_capacity_positions(
        ...     np.array([[0], [0], [0], [1]]), num_experts=2, capacity=1, token_mask=np.array([0, 1, 1, 1]))
        >>> positions[1:, 0], keep[:, 0]
        (array([0, 1, 0]), array([False,  True, False,  True]))
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 10: implement masked_capacity_positions")
    indices = np.asarray(indices, dtype=np.int64)
    real = np.asarray(token_mask).astype(bool)
    num_tokens, k = indices.shape
    one_hot = np.eye(num_experts, dtype=np.int64)[indices] * real[:, None, None]  # padding queues nowhere
    queue = one_hot.transpose(1, 0, 2).reshape(k * num_tokens, num_experts)  # choice-major [k*T, E]
    before = np.cumsum(queue, axis=0) - queue  # exclusive cumsum
    positions = (before * queue).sum(axis=-1).reshape(k, num_tokens).T  # [T, k]
    keep = (positions < capacity) & real[:, None]
    return positions, keep
    # --- end solution


def masked_balance_loss(router_probs, indices, token_mask):
    """Switch balance loss `E * sum_i f_i * P_i` over the real tokens only.

    `f_i` is the fraction of the real tokens' k assignments (router choices,
    before capacity) that went to expert i (so `sum_i f_i = 1`), and `P_i`
    the mean of `router_probs[:, i]` over the real tokens. Uniform routing
    gives 1.0. With no real token at all the loss is 0.

    Args:
        router_probs: `[T, E]` full softmax router probabilities.
        indices: `[T, k]` int, chosen experts.
        token_mask: `[T]` bool or 0/1.

    Returns:
        A float.

    Example:
        Token 2 is padding, so f = (1/2, 1/2) and P = (0.65, 0.35):
        2 * (0.5 * 0.65 + 0.5 * 0.35) = 1.0.

        >>> probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.0, 1.0]])
        >>> float(masked_balance_loss(probs, np.array([[0], [1], [1]]), np.array([1, 1, 0])))
        1.0
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 10: implement masked_balance_loss")
    probs = np.asarray(router_probs, dtype=np.float64)
    real = np.asarray(token_mask).astype(bool)
    num_experts = probs.shape[-1]
    chosen = np.eye(num_experts)[np.asarray(indices)].sum(axis=1) * real[:, None]  # [T, E]
    counts = chosen.sum(axis=0)  # [E]
    fraction = counts / max(counts.sum(), 1e-12)
    mean_prob = np.where(real[:, None], probs, 0.0).sum(axis=0) / max(real.sum(), 1)
    return float(num_experts * np.sum(fraction * mean_prob))
    # --- end solution


def masked_moe_forward(x, token_mask, router_kernel, expert_in, expert_out, k, capacity=None):
    """A top-k MoE layer with capacity that ignores padding. Returns outputs and balance loss.

    Per token: `logits = x @ router_kernel`, `probs = softmax(logits)`; the k
    experts with the largest logits are chosen, their gates are the softmax
    over those k logits; expert e computes `relu(x @ expert_in[e]) @ expert_out[e]`;
    `y = sum over kept choices of gate * expert(x)`. Tokens are flattened in
    row-major order (`[B, S] -> [B*S]`) before queueing for capacity.

    The capacity is an argument rather than `ceil(cf * k * T / E)` of the
    padded length T: derived from T, more padding would mean more slots, and
    the real tokens' outputs would depend on how much padding there is.

    Args:
        x: `[T, d]` or `[B, S, d]` floats (padding rows may hold anything finite).
        token_mask: `[T]` or `[B, S]`, 1 = real token, 0 = padding.
        router_kernel: `[d, E]`.
        expert_in: `[E, d, h]`.
        expert_out: `[E, h, d_out]`.
        k: experts per token.
        capacity: slots per expert; None for no limit (nothing dropped).

    Returns:
        `(y, loss)`: `y` of shape `x.shape[:-1] + (d_out,)`, exactly 0 at
        padding positions; `loss = masked_balance_loss(probs, indices, mask)`.

    Example:
        >>> x = np.array([[1.0, 0.0], [7.0, 7.0]])          # token 1 is padding
        >>> w_in = np.stack([np.eye(2), 2 * np.eye(2)])     # expert e: relu(x @ (e+1) I) @ I
        >>> y, loss = masked_moe_forward(x, np.array([1, 0]), np.array([[1.0, -1.0], [0.0, 0.0]]),
        ...                              w_in, np.stack([np.eye(2)] * 2), k=1)
        >>> y, round(loss, 4)                               # top-1 gate is 1; f = (1, 0), P_0 = 0.8808
        (array([[1., 0.],
               [0., 0.]]), 1.7616)
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 10: implement masked_moe_forward")
    x = np.asarray(x, dtype=np.float64)
    lead_shape = x.shape[:-1]
    tokens = x.reshape(-1, x.shape[-1])  # [T, d]
    real = np.asarray(token_mask).reshape(-1).astype(bool)  # [T]
    num_tokens = tokens.shape[0]
    num_experts = np.shape(router_kernel)[-1]

    logits = tokens @ np.asarray(router_kernel, dtype=np.float64)  # [T, E]
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # [T, k], ties -> lower index
    top_logits = np.take_along_axis(logits, indices, axis=-1)
    top = np.exp(top_logits - top_logits.max(axis=-1, keepdims=True))
    gates = top / top.sum(axis=-1, keepdims=True)  # [T, k]

    _, keep = masked_capacity_positions(indices, num_experts, num_tokens if capacity is None else capacity, real)
    w_in = np.asarray(expert_in, dtype=np.float64)[indices]  # [T, k, d, h]
    w_out = np.asarray(expert_out, dtype=np.float64)[indices]  # [T, k, h, d_out]
    hidden = np.maximum(np.einsum("td,tkdh->tkh", tokens, w_in), 0.0)
    outputs = np.einsum("tkh,tkho->tko", hidden, w_out)  # [T, k, d_out]
    y = np.where(keep[..., None], gates[..., None] * outputs, 0.0).sum(axis=1)  # dropped/padding: exactly 0
    loss = masked_balance_loss(probs, indices, real)
    return y.reshape(lead_shape + (y.shape[-1],)), loss
    # --- end solution
