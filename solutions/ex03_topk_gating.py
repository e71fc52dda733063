"""Exercise 3: sparse top-k gating with renormalisation.

Learning goal: turn router logits into sparse gates. Each token keeps only its
k best experts; the kept gates are renormalised so they sum to 1, and every
other expert gets exactly 0 (so it need not run at all). Keeping the top-k
logits and taking a softmax over them is the same as taking the full softmax,
keeping the k largest probabilities and dividing by their sum.

Conventions (the same as `moe_tf.routing.top_k_gates`): select on logits;
indices are listed best first; ties are broken towards the lower expert
index; k = E gives the full softmax.

Reference: Shazeer et al. (2017), "Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer" (G(x) = Softmax(KeepTopK(H(x), k))).

Inputs may be numpy arrays; return numpy arrays (or anything `np.asarray`
accepts). numpy is enough (`np.argsort(..., kind="stable")` keeps ties in
index order).
"""

# stub: import numpy as np  # noqa: F401 - for your solution
import numpy as np


def top_k_gates(logits, k):
    """Sparse, renormalised top-k gates.

    Args:
        logits: router logits, `[T, E]`.
        k: experts per token, an int with `1 <= k <= E`.

    Returns:
        `(gates, indices)`:
        - `gates`, `[T, E]` floats: zero outside each token's top k; inside,
          the softmax over the k kept logits, so each row sums to 1.
        - `indices`, `[T, k]` ints: each token's chosen experts, best (largest
          logit) first; equal logits are ranked by lower expert index first.
        `logits` itself is not modified.

    Raises:
        ValueError: if k is not in `[1, E]`.

    Example:
        >>> gates, indices = top_k_gates(np.array([[1.0, 3.0, 2.0]]), k=2)
        >>> indices
        array([[1, 2]])
        >>> gates                                  # softmax([3, 2]) on experts 1 and 2
        array([[0.        , 0.73105858, 0.26894142]])
        >>> top_k_gates(np.array([[1.0, 1.0, 1.0, 0.0]]), k=2)[1]    # a tie: lower index first
        array([[0, 1]])
    """
    # --- solution
    logits = np.asarray(logits, dtype=np.float64)
    num_experts = logits.shape[-1]
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= num_experts):
        raise ValueError(f"k must be an int in [1, E={num_experts}]; got k={k!r}")
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # [T, k], best first, ties by index
    top = np.take_along_axis(logits, indices, axis=-1)  # [T, k]
    top = np.exp(top - top[:, :1])  # the first kept logit is the row max: stable
    top = top / top.sum(axis=-1, keepdims=True)
    gates = np.zeros_like(logits)
    np.put_along_axis(gates, indices, top, axis=-1)
    return gates, indices
    # --- end solution
