"""Exercise 11: expert-choice routing.

Learning goal: turn routing around. Instead of every token choosing its top-k
experts (and experts overflowing or idling), every *expert* chooses its top-c
tokens of the batch. Each expert then processes exactly c tokens (perfect load
balance by construction, no auxiliary loss and no dropped-by-overflow), while
a token may be picked by several experts or by none.

Paper: Zhou et al. (2022), "Mixture-of-Experts with Expert Choice Routing",
NeurIPS. With n tokens, e experts and capacity factor k (the average number of
experts per token):

    S = Softmax(X W_g)            [n, e]   token-to-expert affinities (softmax over experts)
    G, I = TopK(S^T, c)           [e, c]   each expert's c best tokens and their scores
    c = n * k / e                          tokens per expert
    y[t] = sum over (i, j) with I[i, j] = t of G[i, j] * FFN_i(x[t])

Caveat: an expert's choice depends on the *other* tokens of the batch, future
ones included, so expert choice is not causal and cannot be used as-is for
autoregressive decoding (the paper notes this limitation); the tests show a
later token changing an earlier token's output.

Conventions here: c is rounded up (`ceil(n * k / e)`, exactly) and capped at
n; among equal scores the lower token index is picked first.

Work with numpy (or `keras.ops`).
"""

# stub: from fractions import Fraction  # noqa: F401  (for your solution)
from fractions import Fraction

# stub: import numpy as np  # noqa: F401  (for your solution)
import numpy as np


def expert_choice_capacity(num_tokens, num_experts, capacity_factor):
    """Tokens per expert, `c = ceil(n * k / e)`, capped at n.

    Args:
        num_tokens: n, tokens in the batch.
        num_experts: e.
        capacity_factor: k, average experts per token (e.g. 1 or 2).

    Returns:
        c, a Python int in `[0, n]`.

    Example:
        >>> expert_choice_capacity(8, 4, 2), expert_choice_capacity(6, 4, 1), expert_choice_capacity(4, 2, 4)
        (4, 2, 4)
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 11: implement expert_choice_capacity")
    ratio = Fraction(str(capacity_factor)) * num_tokens / num_experts
    return min(int(-(-ratio.numerator // ratio.denominator)), int(num_tokens))
    # --- end solution


def expert_choice_routing(x, router_kernel, capacity):
    """Token-expert scores and each expert's top-c tokens.

    Args:
        x: `[n, d]` tokens.
        router_kernel: `[d, e]` gating weights W_g.
        capacity: c, tokens per expert.

    Returns:
        `(scores, indices, gates)`: `scores` is S `[n, e]` (softmax over
        experts, rows sum to 1); `indices` is I `[e, c]` ints, expert i's c
        tokens by decreasing score; `gates` is G `[e, c]`,
        `G[i, j] = S[I[i, j], i]`.

    Example:
        >>> x = np.array([[2., 0.], [0., 1.], [1., 0.], [0., 3.]])
        >>> scores, indices, gates = expert_choice_routing(x, np.eye(2), capacity=2)
        >>> indices                      # expert 0 likes tokens 0, 2; expert 1 tokens 3, 1
        array([[0, 2],
               [3, 1]])
        >>> gates.round(4)               # sigmoid(2), sigmoid(1); sigmoid(3), sigmoid(1)
        array([[0.8808, 0.7311],
               [0.9526, 0.7311]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 11: implement expert_choice_routing")
    logits = np.asarray(x, dtype=np.float64) @ np.asarray(router_kernel, dtype=np.float64)  # [n, e]
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    scores = shifted / shifted.sum(axis=-1, keepdims=True)  # softmax over experts
    indices = np.argsort(-scores.T, axis=-1, kind="stable")[:, :capacity]  # [e, c], ties -> lower token
    gates = np.take_along_axis(scores.T, indices, axis=-1)  # [e, c]
    return scores, indices, gates
    # --- end solution


def experts_per_token(indices, num_tokens):
    """How many experts picked each token.

    Args:
        indices: `[e, c]` ints, each expert's chosen tokens.
        num_tokens: n.

    Returns:
        `[n]` ints; they sum to `e * c`, and any entry may be 0 or larger than 1.

    Example:
        >>> experts_per_token(np.array([[0, 1], [0, 2]]), num_tokens=4)
        array([2, 1, 1, 0])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 11: implement experts_per_token")
    return np.bincount(np.asarray(indices).ravel(), minlength=num_tokens)
    # --- end solution


def expert_choice_forward(x, router_kernel, expert_fn, capacity):
    """The expert-choice MoE layer: route, gather each expert's tokens, run, and combine.

    Args:
        x: `[n, d]` tokens.
        router_kernel: `[d, e]`.
        expert_fn: callable mapping the `[e, c, d]` expert inputs
            (`inputs[i, j] = x[I[i, j]]`) to `[e, c, d_out]`.
        capacity: c.

    Returns:
        `[n, d_out]`, `y[t] = sum over (i, j) with I[i, j] = t of G[i, j] * out[i, j]`;
        exactly 0 for a token no expert picked.

    Example:
        >>> x = np.array([[2., 0.], [0., 1.], [1., 0.], [0., 3.]])
        >>> expert_choice_forward(x, np.eye(2), lambda h: h, capacity=1).round(4)  # identity experts
        array([[1.7616, 0.    ],
               [0.    , 0.    ],
               [0.    , 0.    ],
               [0.    , 2.8577]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 11: implement expert_choice_forward")
    x = np.asarray(x, dtype=np.float64)
    _, indices, gates = expert_choice_routing(x, router_kernel, capacity)
    expert_inputs = x[indices]  # [e, c, d] gather
    outputs = np.asarray(expert_fn(expert_inputs), dtype=np.float64)  # [e, c, d_out]
    y = np.zeros((x.shape[0], outputs.shape[-1]))
    np.add.at(y, indices.ravel(), (gates[..., None] * outputs).reshape(-1, outputs.shape[-1]))  # scatter-add
    return y
    # --- end solution
