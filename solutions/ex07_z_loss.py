"""Exercise 7: the router z-loss and a numerically stable logsumexp.

Learning goal: large router logits make the softmax brittle and overflow in
low precision. ST-MoE adds the router z-loss, which pushes the logits'
log-partition function towards 0:

    L_z = (1/B) * sum_{t=1..B} ( log sum_{i=1..N} exp(x_{t,i}) )^2

over B tokens and N experts (the paper weighs it by 1e-3 in the total loss).
Computing log(sum(exp(x))) literally overflows as soon as a logit passes ~88
in float32 or ~709 in float64: exactly the regime the loss exists to cure.
The stable form is

    logsumexp(x) = m + log sum_i exp(x_i - m),     m = max_i x_i

and its gradient is `d L_z / d x_{t,i} = (2/B) * logsumexp(x_t) * softmax(x_t)_i`.

Reference: Zoph, Bello, Kumar, Du, Huang, Dean, Shazeer & Fedus (2022),
"ST-MoE: Designing Stable and Transferable Sparse Expert Models", section 3.3,
equation (5).

Inputs may be numpy arrays; return numpy arrays or floats. numpy is enough.
"""

# stub: import numpy as np  # noqa: F401 - for your solution
import numpy as np


def logsumexp(x):
    """Numerically stable `log(sum(exp(x)))` over the last axis.

    Args:
        x: `[..., N]` logits (finite).

    Returns:
        `[...]`, the last axis reduced. Finite for logits of any finite size.

    Example:
        >>> logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0], [-1000.0, 0.0]]))
        array([6.93147181e-01, 1.00069315e+03, 0.00000000e+00])
    """
    # --- solution
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1)
    return m + np.log(np.sum(np.exp(x - m[..., None]), axis=-1))
    # --- end solution


def router_z_loss(logits):
    """Router z-loss `(1/B) * sum_t logsumexp(logits[t])^2`.

    Args:
        logits: `[B, N]` router logits.

    Returns:
        A float (>= 0).

    Example:
        >>> router_z_loss(np.array([[0.0, 0.0], [1.0, 1.0]]))     # ((log 2)^2 + (1 + log 2)^2) / 2
        1.6736...
        >>> router_z_loss(np.array([[1000.0, 1000.0]]))           # (1000 + log 2)^2, no overflow
        1001386.7...
    """
    # --- solution
    return float(np.mean(logsumexp(logits) ** 2))
    # --- end solution


def router_z_loss_grad(logits):
    """The analytic gradient of `router_z_loss` with respect to the logits.

    `d L_z / d x_{t,i} = (2/B) * logsumexp(x_t) * softmax(x_t)_i`
    (the derivative of logsumexp is the softmax). Compute the softmax stably too.

    Args:
        logits: `[B, N]` router logits.

    Returns:
        `[B, N]`.

    Example:
        >>> router_z_loss_grad(np.array([[0.0, 0.0], [1.0, 1.0]]))
        array([[0.34657359, 0.34657359],        # (2/2) * log 2 * 0.5
               [0.84657359, 0.84657359]])       # (2/2) * (1 + log 2) * 0.5
    """
    # --- solution
    x = np.asarray(logits, dtype=np.float64)
    lse = logsumexp(x)  # [B]
    softmax = np.exp(x - lse[:, None])  # stable: x - lse <= 0
    return 2.0 / x.shape[0] * lse[:, None] * softmax
    # --- end solution
