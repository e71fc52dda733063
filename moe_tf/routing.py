"""Gating functions: softmax, top-k, expert capacity and capacity slots.

Everything here is a pure function of tensors written with `keras.ops`, so it
runs on any Keras backend and inside `jit_compile=True`.

Shapes used throughout (tokens are flattened: `T = batch * seq`):

    logits      [T, E]   router scores, one per token and expert
    gates       [T, E]   combine weights, zero outside the chosen experts
    indices     [T, k]   chosen experts, best first
"""

from fractions import Fraction

from keras import ops

from moe_tf import _checks


def softmax_gates(logits):
    """Dense softmax gate (Jacobs et al. 1991): every expert gets a weight.

    Args:
        logits: `[T, E]` router logits.

    Returns:
        `[T, E]` gates; each row is positive and sums to 1.
    """
    return ops.softmax(logits, axis=-1)


def top_k_gates(logits, k, renormalize=True):
    """Sparse top-k gate (Shazeer et al. 2017): keep the k largest logits.

    With `renormalize=True` the kept gates are the softmax over the k kept
    *logits* (equivalently: softmax over all E, keep k, divide by their sum),
    so they sum to 1. With `renormalize=False` the kept gates are the full
    softmax probabilities (Switch Transformer's top-1 convention: the gate of a
    top-1 token is `p_i < 1`, which keeps a gradient path to the router).

    Args:
        logits: `[T, E]` router logits (not probabilities: selecting on
            logits or on softmax probabilities gives the same experts, but
            mixing the two is a classic bug).
        k: number of experts per token, `1 <= k <= E`.
        renormalize: whether the kept gates sum to 1.

    Returns:
        `(gates, indices)`: `gates` is `[T, E]`, zero outside the top k;
        `indices` is `[T, k]` int32, best expert first. Ties are broken
        towards the lower expert index.

    Example:
    >>> gates, idx = top_k_gates(np.array([[1.0, 3.0, 2.0]]), k=2)
    >>> np.asarray(idx).tolist(), np.round(np.asarray(gates), 3).tolist()
    ([[1, 2]], [[0.0, 0.731, 0.269]])
    """
    top_gates, indices = top_k_choices(logits, k, renormalize)  # [T, k], [T, k]
    return scatter_gates(top_gates, indices, logits.shape[-1]), indices


def scatter_gates(top_gates, indices, num_experts):
    """Spreads compact `[T, k]` gates into `[T, E]`, zero outside the chosen experts."""
    one_hot = ops.one_hot(indices, num_experts, dtype=top_gates.dtype)  # [T, k, E]
    return ops.einsum("...k,...ke->...e", top_gates, one_hot)  # [T, E]


def top_k_choices(logits, k, renormalize=True):
    """The compact form of `top_k_gates`: each token's k gates and experts.

    Args:
        logits: `[T, E]` router logits.
        k: experts per token, `1 <= k <= E`.
        renormalize: as in `top_k_gates`.

    Returns:
        `(top_gates, indices)`, both `[T, k]`: the gate of each chosen expert
        (best first) and the expert's index (int32).
    """
    k = _checks.top_k(k, logits.shape[-1])
    logits = ops.convert_to_tensor(logits)
    top_logits, indices = ops.top_k(logits, k=k)  # [T, k], [T, k]
    indices = ops.cast(indices, "int32")
    if renormalize and k == 1:
        top_gates = ops.ones_like(top_logits)  # a single renormalised gate is 1: no gradient to the router
    elif renormalize:
        top_gates = ops.softmax(top_logits, axis=-1)  # [T, k]
    else:
        probs = ops.softmax(logits, axis=-1)  # [T, E]
        top_gates = ops.take_along_axis(probs, indices, axis=-1)  # [T, k]
    return top_gates, indices


def expert_capacity(num_tokens, num_experts, k, capacity_factor):
    """Slots per expert: `ceil(capacity_factor * k * num_tokens / num_experts)`.

    `capacity_factor = 1` gives exactly enough slots for perfectly balanced
    routing; anything routed past an expert's capacity is dropped.

    Args:
        num_tokens: tokens in the routing group (a Python int, or a scalar
            tensor when the batch size is only known at run time).
        num_experts: number of experts E.
        k: experts per token.
        capacity_factor: a float > 0.

    Returns:
        The capacity, an int (or an int32 scalar tensor for a tensor input).

    Example:
    >>> expert_capacity(num_tokens=1024, num_experts=8, k=2, capacity_factor=1.25)
    320
    """
    capacity_factor = _checks.number("capacity_factor", capacity_factor, strict=True)
    # Exact rational arithmetic: cf = p / q, C = ceil(p * k * T / (q * E)).
    # Floats would add a slot the formula does not give: in float64
    # 1.1 * 2 * 200 / 8 = 55.00000000000001, whose ceil is 56, not 55.
    ratio = Fraction(repr(capacity_factor))
    if _checks.is_int(num_tokens):
        return -((-ratio.numerator * k * int(num_tokens)) // (ratio.denominator * num_experts))
    # Tensor path (batch size known only at run time): int64 arithmetic; a
    # factor with more than ~9 significant digits is rounded to 6 so that
    # p * k * T cannot overflow.
    if ratio.numerator * k >= 2**31 or ratio.denominator * num_experts >= 2**31:
        ratio = ratio.limit_denominator(10**6)
    p, q = ratio.numerator, ratio.denominator
    tokens = ops.cast(num_tokens, "int64")
    capacity = ops.floor_divide(p * k * tokens + (q * num_experts - 1), q * num_experts)
    return ops.cast(capacity, "int32")


def buffer_capacity(num_tokens, num_experts, k, capacity_factor):
    """The slots per expert a MoE layer allocates: `expert_capacity` clamped to `[1, T]`.

    `capacity_factor=None` means no limit: `T` slots, since an expert can never
    receive more than the `T` tokens of its group. A tiny group still gets one
    slot per expert, and a factor so large that `C > T` is cut to `T`.

    Args:
        num_tokens: tokens in the routing group (int or scalar tensor).
        num_experts: number of experts E.
        k: experts per token.
        capacity_factor: a float > 0, or None for no limit.

    Returns:
        An int, or an int32 scalar tensor when `num_tokens` is a tensor.

    Example:
    >>> buffer_capacity(num_tokens=6, num_experts=8, k=1, capacity_factor=1.0)  # ceil(0.75) = 1
    1
    >>> buffer_capacity(num_tokens=6, num_experts=2, k=2, capacity_factor=4.0)  # 24 > 6: cut to T
    6
    """
    if capacity_factor is None:
        return num_tokens
    capacity = expert_capacity(num_tokens, num_experts, k, capacity_factor)
    if _checks.is_int(capacity) and _checks.is_int(num_tokens):
        return max(1, min(capacity, num_tokens))
    return ops.maximum(1, ops.minimum(capacity, ops.cast(num_tokens, "int32")))


def capacity_positions(indices, num_experts, capacity, token_mask=None):
    """Assigns each (token, choice) a slot in its expert's buffer.

    Priority: all first choices come before all second choices, and within a
    choice rank tokens queue in order (token 0 first). Positions come from an
    **exclusive** cumulative sum, so the first token sent to an expert gets
    slot 0 and an expert of capacity C keeps exactly C tokens (an inclusive
    cumsum would start at 1 and silently waste a slot).

    Args:
        indices: `[T, k]` int expert ids from `top_k_gates`.
        num_experts: E.
        capacity: slots per expert (int or scalar tensor).
        token_mask: optional `[T]` (1 = real token, 0 = padding). Padding
            tokens take no slot and are never kept.

    Returns:
        `(positions, keep)`: `[T, k]` int32 slot of each assignment in its
        expert, and `[T, k]` float32, 1 where the assignment fits, 0 where
        it is dropped (or padding).
    """
    num_choices = indices.shape[-1]
    one_hot = ops.one_hot(indices, num_experts, dtype="int32")  # [T, k, E]
    if token_mask is not None:
        one_hot = one_hot * ops.cast(token_mask, "int32")[:, None, None]
    # Choice-major order: [k, T, E] -> [k*T, E], so every first choice queues
    # before any second choice.
    queue = ops.reshape(ops.transpose(one_hot, (1, 0, 2)), (-1, num_experts))
    before = ops.cumsum(queue, axis=0) - queue  # exclusive cumsum  [k*T, E]
    positions = ops.sum(before * queue, axis=-1)  # [k*T]
    positions = ops.transpose(ops.reshape(positions, (num_choices, -1)), (1, 0))  # [T, k]
    routed = ops.sum(one_hot, axis=-1)  # [T, k], 0 for padding
    keep = ops.logical_and(routed > 0, positions < ops.cast(capacity, "int32"))
    return ops.cast(positions, "int32"), ops.cast(keep, "float32")
