"""Exercise 5: the importance and load losses (coefficient of variation squared).

Learning goal: left alone, a router collapses onto a few favourite experts
(they are trained more, so they get chosen more). Shazeer et al. (2017) add
two auxiliary losses, each `w * CV(v)^2` where CV = standard deviation / mean
over the E experts:

- importance: `Importance(X)_i = sum over the batch of G(x)_i`, the total
  gate each expert receives;
- load: the expected *number of tokens* each expert receives. The count
  itself is a step function with no gradient, so the paper uses a smooth
  estimator: with Gaussian noise, expert i is chosen for token x when its
  noisy logit beats the k-th largest noisy logit among the *other* experts,
  which happens with probability

      P(x, i) = Phi((clean_i - kth_excluding(H, k, i)) / noise_stddev_i)

  where clean = x W_g, H the noisy logits and Phi the standard normal CDF.
  `Load_i = sum over the batch of P(x, i)`.

kth_excluding(H, k, i), the k-th largest of H over experts j != i, is:
the (k+1)-th largest of the whole row when i is itself in the top k
(H_i > the (k+1)-th largest), and the k-th largest of the row otherwise.

Convention (the same as `moe_tf.losses`): CV^2 = Var(v) / (Mean(v)^2 + 1e-10)
with the *population* variance (divide by E, not E - 1); it is 0 for a single
entry (E = 1) and, thanks to the epsilon, 0 for an all-zero vector.

Reference: Shazeer et al. (2017), "Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer", ICLR, section 4 and appendix A.

Inputs may be numpy arrays; return numpy arrays or floats. numpy and
`math.erf` are enough (Phi(z) = (1 + erf(z / sqrt 2)) / 2).
"""

# stub: import math  # noqa: F401 - for your solution
import math

# stub: import numpy as np  # noqa: F401 - for your solution
import numpy as np

EPSILON = 1e-10


def cv_squared(v):
    """Squared coefficient of variation, `Var(v) / (Mean(v)^2 + 1e-10)`.

    Population variance (mean of squared deviations). Returns 0.0 when v has
    a single entry.

    Args:
        v: per-expert values, `[E]`, non-negative.

    Returns:
        A float: 0 for a perfectly even v, large when one entry dominates.

    Example:
        >>> cv_squared(np.array([1.0, 2.0, 3.0]))      # Var = 2/3, Mean^2 = 4
        0.1666666666625
        >>> cv_squared(np.array([5.0, 5.0]))
        0.0
    """
    # --- solution
    v = np.asarray(v, dtype=np.float64)
    if v.shape[-1] <= 1:
        return 0.0
    mean = v.mean()
    return float(np.mean((v - mean) ** 2) / (mean**2 + EPSILON))
    # --- end solution


def importance(gates):
    """Importance of each expert: the sum of its gate values over the batch.

    Args:
        gates: `[T, E]` gate values.

    Returns:
        `[E]`.

    Example:
        >>> importance(np.array([[0.7, 0.3, 0.0], [0.1, 0.6, 0.3]]))
        array([0.8, 0.9, 0.3])
    """
    # --- solution
    return np.asarray(gates, dtype=np.float64).sum(axis=0)
    # --- end solution


def importance_loss(gates, weight=1.0):
    """Importance loss `weight * CV(importance(gates))^2`.

    Args:
        gates: `[T, E]` gate values.
        weight: w_importance, a float.

    Returns:
        A float.

    Example:
        >>> importance_loss(np.array([[0.7, 0.3, 0.0], [0.1, 0.6, 0.3]]))    # CV^2 of [0.8, 0.9, 0.3]
        0.15499999996...                              # ~0.155
    """
    # --- solution
    return weight * cv_squared(importance(gates))
    # --- end solution


def normal_cdf(z):
    """Standard normal CDF, `Phi(z) = (1 + erf(z / sqrt(2))) / 2`, elementwise.

    Args:
        z: array of any shape.

    Returns:
        Array of the same shape, values in [0, 1].

    Example:
        >>> normal_cdf(np.array([0.0, -1.0, 1.96]))
        array([0.5       , 0.15865525, 0.9750021 ])
    """
    # --- solution
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    # --- end solution


def smooth_load(clean_logits, noisy_logits, noise_stddev, k):
    """Smooth load of each expert: `Load_i = sum_x P(x, i)`.

    `P(x, i) = Phi((clean_i - kth_excluding(H, k, i)) / noise_stddev_i)`,
    the probability that expert i is in the top k if only its own noise were
    drawn again. The threshold kth_excluding is the (k+1)-th largest noisy
    logit of the row when `H_i` is larger than it (i is in the top k), else
    the k-th largest. When k >= E every expert is always chosen: return T for
    every expert.

    Args:
        clean_logits: `[T, E]`, x W_g.
        noisy_logits: `[T, E]`, H (the logits top-k selection used).
        noise_stddev: `[T, E]`, positive noise scales softplus(x W_noise).
        k: experts per token.

    Returns:
        `[E]` floats.

    Example (k = 1; H's top-1 is expert 1, so expert 1's bar is the 2nd
    largest H, 1.0, and the others' bar is the largest, 1.5):
        >>> smooth_load(np.array([[1.0, 0.0, 0.5]]), np.array([[1.0, 1.5, 0.5]]), np.ones((1, 3)), k=1)
        array([0.30853754, 0.15865525, 0.15865525])      # [Phi(-0.5), Phi(-1), Phi(-1)]
    """
    # --- solution
    clean = np.asarray(clean_logits, dtype=np.float64)
    noisy = np.asarray(noisy_logits, dtype=np.float64)
    num_tokens, num_experts = clean.shape
    if k >= num_experts:
        return np.full(num_experts, float(num_tokens))
    stddev = np.asarray(noise_stddev, dtype=np.float64)
    ranked = -np.sort(-noisy, axis=-1)  # [T, E], largest first
    threshold_if_in = ranked[:, k : k + 1]  # (k+1)-th largest
    threshold_if_out = ranked[:, k - 1 : k]  # k-th largest
    is_in = noisy > threshold_if_in
    threshold = np.where(is_in, threshold_if_in, threshold_if_out)
    return normal_cdf((clean - threshold) / stddev).sum(axis=0)
    # --- end solution


def load_loss(clean_logits, noisy_logits, noise_stddev, k, weight=1.0):
    """Load loss `weight * CV(smooth_load(...))^2`.

    Args:
        clean_logits, noisy_logits, noise_stddev, k: as in `smooth_load`.
        weight: w_load, a float.

    Returns:
        A float (0 when k >= E: every expert always gets every token).

    Example:
        >>> load_loss(np.array([[1.0, 0.0, 0.5]]), np.array([[1.0, 1.5, 0.5]]), np.ones((1, 3)), k=1)
        0.1147...                                        # CV^2 of [0.3085, 0.1587, 0.1587]
    """
    # --- solution
    return weight * cv_squared(smooth_load(clean_logits, noisy_logits, noise_stddev, k))
    # --- end solution
