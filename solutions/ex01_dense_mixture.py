"""Exercise 1: the softmax gate and the dense mixture of experts.

Learning goal: write the original, *dense* mixture of experts by hand. A gating
network turns each input into a probability distribution over the E experts,
and the output is the gate-weighted sum of every expert's output:

    g(x) = softmax(x W_g)                    [batch, E], each row sums to 1
    y(x) = sum_i g_i(x) * E_i(x)             every expert runs on every input

You will also meet the classic trap of this architecture in Keras: a selector
written as `Dense(1, activation="softmax")` outputs exactly 1 for every input,
because a softmax over a single logit is exp(z) / exp(z). A gate needs one
logit per expert (E >= 2 units); a two-way choice made from one logit is a
sigmoid, not a softmax.

Reference: Jacobs, Jordan, Nowlan & Hinton (1991), "Adaptive Mixtures of Local
Experts", Neural Computation 3(1):79-87.

Inputs may be numpy arrays; return numpy arrays (or anything `np.asarray`
accepts). numpy is enough for every function here.
"""

# stub: import numpy as np  # noqa: F401 - for your solution
import numpy as np


def softmax(logits):
    """Numerically stable softmax over the last axis.

    Subtract each row's maximum before exponentiating: softmax(z) equals
    softmax(z - c) for any constant c, and exp of a large logit (say 1000)
    overflows to inf otherwise.

    Args:
        logits: array of shape `[..., E]`.

    Returns:
        Array of the same shape; every entry is in [0, 1] and every row (last
        axis) sums to 1. With a single logit per row (E = 1) every entry is
        exactly 1. `logits` itself is not modified.

    Example:
        >>> softmax(np.array([[1.0, 2.0, 3.0]]))
        array([[0.09003057, 0.24472847, 0.66524096]])
        >>> softmax(np.array([[1000.0, 1000.0]]))   # no overflow
        array([[0.5, 0.5]])
    """
    # --- solution
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)
    # --- end solution


def softmax_gate(x, w_gate):
    """The gating network of a dense mixture: `softmax(x @ w_gate)`.

    Args:
        x: inputs, `[batch, d]`.
        w_gate: gate kernel, `[d, E]` (one column, i.e. one logit, per expert).

    Returns:
        Gates `[batch, E]`: non-negative, each row sums to 1.

    Example:
        >>> x = np.array([[1.0, 2.0]])
        >>> w_gate = np.array([[1.0, -1.0], [0.0, 0.0]])
        >>> softmax_gate(x, w_gate)            # logits [1, -1]
        array([[0.88079708, 0.11920292]])
    """
    # --- solution
    logits = np.asarray(x, dtype=np.float64) @ np.asarray(w_gate, dtype=np.float64)
    return softmax(logits)
    # --- end solution


def dense_mixture(x, w_gate, expert_kernels, expert_biases=None):
    """Dense mixture of linear experts: `y = sum_i g_i(x) * (x @ W_i + b_i)`.

    Every expert runs on every input (this is what sparse top-k gating will
    later avoid), and the gate `g = softmax_gate(x, w_gate)` weighs them.

    Args:
        x: inputs, `[batch, d]`.
        w_gate: gate kernel, `[d, E]`.
        expert_kernels: the E experts' kernels stacked, `[E, d, d_out]`.
        expert_biases: optional `[E, d_out]` biases (None = no biases).

    Returns:
        Outputs `[batch, d_out]`.

    Example:
        >>> x = np.array([[1.0, 2.0]])
        >>> w_gate = np.array([[1.0, -1.0], [0.0, 0.0]])  # gates [0.881, 0.119]
        >>> kernels = np.array([[[1.0], [0.0]],            # expert 0 outputs x[0] = 1
        ...                     [[0.0], [1.0]]])           # expert 1 outputs x[1] = 2
        >>> dense_mixture(x, w_gate, kernels)              # 0.881 * 1 + 0.119 * 2
        array([[1.11920292]])
    """
    # --- solution
    x = np.asarray(x, dtype=np.float64)
    gates = softmax_gate(x, w_gate)  # [B, E]
    outputs = np.einsum("bd,edo->beo", x, np.asarray(expert_kernels, dtype=np.float64))  # [B, E, d_out]
    if expert_biases is not None:
        outputs = outputs + np.asarray(expert_biases, dtype=np.float64)[None, :, :]
    return np.einsum("be,beo->bo", gates, outputs)
    # --- end solution


def one_logit_gate(z):
    """A correct two-expert gate computed from ONE logit per input.

    `Dense(1, activation="softmax")` is the trap: softmax over one logit is
    always 1, so such a "selector" never selects anything and gets no
    gradient. With one logit z the right two-way gate is a sigmoid,
    `[sigmoid(z), 1 - sigmoid(z)]`, which is exactly `softmax([z, 0])`.
    Compute it stably: no overflow warning or NaN for z = +-1000.

    Args:
        z: logits, `[batch]`.

    Returns:
        Gates `[batch, 2]`: column 0 is sigmoid(z), column 1 is 1 - sigmoid(z).

    Example:
        >>> one_logit_gate(np.array([0.0, 2.0]))
        array([[0.5       , 0.5       ],
               [0.88079708, 0.11920292]])
    """
    # --- solution
    z = np.asarray(z, dtype=np.float64)
    return softmax(np.stack([z, np.zeros_like(z)], axis=-1))
    # --- end solution
