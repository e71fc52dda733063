"""Exercise 4: noisy top-k gating (Shazeer et al. 2017).

Learning goal: implement the gate of the sparsely-gated MoE layer exactly as
the paper writes it,

    H(x)_i = (x W_g)_i + eps_i * softplus((x W_noise)_i)       eps_i ~ N(0, 1)
    KeepTopK(v, k)_i = v_i if v_i is among the top k of v, else -inf
    G(x) = softmax(KeepTopK(H(x), k))

The noise scale softplus(x W_noise) is learned per token and per expert; the
noise spreads tokens over experts during training (it is switched off at
inference). Here the caller passes the standard-normal draws `noise`, so every
result is deterministic and testable; with `noise = 0` the gate is plain top-k
gating of the clean logits x W_g.

Ties in KeepTopK are broken towards the lower expert index, so exactly k
entries are kept.

Reference: Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton & Dean (2017),
"Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts
Layer", ICLR, section 2.1 and equations (3)-(5).

Inputs may be numpy arrays; return numpy arrays (or anything `np.asarray`
accepts). numpy is enough.
"""

# stub: import numpy as np  # noqa: F401 - for your solution
import numpy as np


def softplus(x):
    """Numerically stable softplus, `log(1 + exp(x))`, elementwise.

    `np.log(1 + np.exp(x))` overflows for x around 710 and loses everything
    for very negative x. Use `max(x, 0) + log1p(exp(-|x|))` instead.

    Args:
        x: array of any shape.

    Returns:
        Array of the same shape, every entry > 0 (it may underflow to 0 for
        very negative x).

    Example:
        >>> softplus(np.array([0.0, 1.0, 1000.0, -1000.0]))
        array([6.93147181e-01, 1.31326169e+00, 1.00000000e+03, 0.00000000e+00])
    """
    # --- solution
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
    # --- end solution


def noisy_logits(x, w_gate, w_noise, noise):
    """The noisy router logits `H = x W_g + noise * softplus(x W_noise)`.

    Args:
        x: inputs, `[T, d]`.
        w_gate: gate kernel, `[d, E]`.
        w_noise: noise kernel, `[d, E]`.
        noise: the standard-normal draws eps, `[T, E]`.

    Returns:
        H, `[T, E]`.

    Example:
        >>> x = np.array([[1.0, 1.0]])
        >>> w_gate = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])   # clean logits [1, 0, 0.5]
        >>> w_noise = np.zeros((2, 3))                               # noise scale softplus(0) = 0.693
        >>> noisy_logits(x, w_gate, w_noise, np.array([[0.0, 2.0, 0.0]]))
        array([[1.        , 1.38629436, 0.5       ]])
    """
    # --- solution
    x = np.asarray(x, dtype=np.float64)
    clean = x @ np.asarray(w_gate, dtype=np.float64)
    scale = softplus(x @ np.asarray(w_noise, dtype=np.float64))
    return clean + np.asarray(noise, dtype=np.float64) * scale
    # --- end solution


def keep_top_k(h, k):
    """KeepTopK: keep each row's k largest entries, set the others to -inf.

    Exactly k entries per row are kept: among equal values the lower index
    wins.

    Args:
        h: logits, `[T, E]`.
        k: entries to keep, `1 <= k <= E`.

    Returns:
        `[T, E]`: `h` where kept, `-inf` elsewhere (a new array: `h` itself
        is not modified).

    Example:
        >>> keep_top_k(np.array([[1.0, 1.386, 0.5]]), k=2)
        array([[1.   , 1.386,  -inf]])
    """
    # --- solution
    h = np.asarray(h, dtype=np.float64)
    order = np.argsort(-h, axis=-1, kind="stable")[:, :k]
    kept = np.full_like(h, -np.inf)
    np.put_along_axis(kept, order, np.take_along_axis(h, order, axis=-1), axis=-1)
    return kept
    # --- end solution


def noisy_top_k_gating(x, w_gate, w_noise, k, noise):
    """Noisy top-k gates `G = softmax(KeepTopK(H, k))` and the chosen experts.

    Args:
        x: inputs, `[T, d]`.
        w_gate: gate kernel, `[d, E]`.
        w_noise: noise kernel, `[d, E]`.
        k: experts per token, `1 <= k <= E`.
        noise: standard-normal draws eps, `[T, E]` (all zeros = no noise).

    Returns:
        `(gates, indices)`: gates `[T, E]`, zero outside the top k of H and
        summing to 1 per row; indices `[T, k]` ints, the experts with the
        largest H first (ties: lower index first).

    Example (the noise moves expert 1 from last to first place):
        >>> x, w_gate, w_noise = np.array([[1.0, 1.0]]), np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]]), np.zeros((2, 3))
        >>> gates, indices = noisy_top_k_gating(x, w_gate, w_noise, k=2, noise=np.array([[0.0, 2.0, 0.0]]))
        >>> indices                              # H = [1, 1.386, 0.5]
        array([[1, 0]])
        >>> gates                                # softmax([1, 1.386]) on experts 0 and 1
        array([[0.40460968, 0.59539032, 0.        ]])
    """
    # --- solution
    h = noisy_logits(x, w_gate, w_noise, noise)
    kept = keep_top_k(h, k)
    z = np.exp(kept - kept.max(axis=-1, keepdims=True))  # exp(-inf) = 0 outside the top k
    gates = z / z.sum(axis=-1, keepdims=True)
    indices = np.argsort(-h, axis=-1, kind="stable")[:, :k]
    return gates, indices
    # --- end solution
