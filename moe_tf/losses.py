"""Auxiliary losses that keep a router balanced and numerically tame.

Each function takes an optional `mask` (`[T]`, 1 = real token, 0 = padding):
padding tokens are left out of every statistic, so padding a batch never
changes a loss. All math is float32, whatever the inputs' dtype.

    cv_squared            CV(x)^2 = Var(x) / Mean(x)^2            (Shazeer 2017)
    importance_loss       CV(sum_t gates)^2                        (Shazeer 2017)
    load_loss             CV(smooth expected load)^2               (Shazeer 2017)
    switch_balance_loss   E * sum_i f_i * P_i                      (Switch, 2021)
    router_z_loss         mean_t logsumexp(logits_t)^2             (ST-MoE, 2022)
"""

import math

from keras import ops

_EPS = 1e-10


def _as_float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _token_mask(mask, num_tokens_like):
    """`[T, 1]` float32 mask, all ones when `mask` is None."""
    if mask is None:
        return ops.ones_like(num_tokens_like[:, :1])
    return ops.reshape(_as_float32(mask), (-1, 1))


def cv_squared(x):
    """Squared coefficient of variation of a vector: `Var(x) / Mean(x)^2`.

    0 when all entries are equal (perfect balance), large when one entry
    dominates. Uses the population variance; returns 0 for a single entry and
    for an all-zero vector (no tokens).

    Args:
        x: `[E]` non-negative per-expert totals.

    Returns:
        A float32 scalar.
    """
    x = _as_float32(x)
    if x.shape[-1] is not None and x.shape[-1] <= 1:
        return ops.zeros((), "float32")
    mean = ops.mean(x)
    var = ops.mean(ops.square(x - mean))
    return var / (ops.square(mean) + _EPS)


def importance_loss(gates, mask=None):
    """Shazeer et al. (2017) importance loss: `CV(sum_t gates[t])^2`.

    Args:
        gates: `[T, E]` gate values (dense softmax or sparse top-k).
        mask: optional `[T]` padding mask.

    Returns:
        A float32 scalar, 0 when every expert gets the same total gate.
    """
    gates = _as_float32(gates)
    importance = ops.sum(gates * _token_mask(mask, gates), axis=0)  # [E]
    return cv_squared(importance)


def _normal_cdf(x):
    return 0.5 * (1.0 + ops.erf(x / math.sqrt(2.0)))


def load_loss(clean_logits, noisy_logits, noise_stddev, k, mask=None):
    """Shazeer et al. (2017) load loss: `CV(load)^2` with a smooth load.

    The number of tokens an expert receives is a step function of the
    logits, so it has no gradient. With Gaussian noise the paper replaces it
    by its expectation: expert i is chosen for token x when its noisy logit
    beats the k-th largest noisy logit of the *other* experts, which happens
    with probability

        P(x, i) = Phi((clean_i - kth_excluding(noisy, k, i)) / stddev_i)

    and `load_i = sum_x P(x, i)` is differentiable in the router weights and
    in the noise scale.

    Args:
        clean_logits: `[T, E]` logits before noise.
        noisy_logits: `[T, E]` logits after noise (the ones top-k used).
        noise_stddev: `[T, E]` positive noise scale, or None when no noise
            was used: the load is then the hard count of top-k assignments
            (correct value, no gradient).
        k: experts per token.
        mask: optional `[T]` padding mask.

    Returns:
        A float32 scalar.
    """
    clean = _as_float32(clean_logits)
    noisy = _as_float32(noisy_logits)
    num_experts = clean.shape[-1]
    token_mask = _token_mask(mask, clean)  # [T, 1]
    if k >= num_experts:  # every expert is always chosen: perfectly balanced
        return ops.zeros((), "float32")
    if noise_stddev is None:
        _, indices = ops.top_k(noisy, k=k)
        chosen = ops.sum(ops.one_hot(indices, num_experts, dtype="float32"), axis=1)
        return cv_squared(ops.sum(chosen * token_mask, axis=0))
    stddev = _as_float32(noise_stddev)
    top_values, _ = ops.top_k(noisy, k=k + 1)  # [T, k+1]
    threshold_if_in = top_values[:, k : k + 1]  # (k+1)-th largest: the bar for an expert already in
    threshold_if_out = top_values[:, k - 1 : k]  # k-th largest: the bar for an expert outside
    is_in = ops.greater(noisy, threshold_if_in)  # [T, E]
    prob_if_in = _normal_cdf((clean - threshold_if_in) / stddev)
    prob_if_out = _normal_cdf((clean - threshold_if_out) / stddev)
    prob = ops.where(is_in, prob_if_in, prob_if_out)  # [T, E]
    return cv_squared(ops.sum(prob * token_mask, axis=0))


def switch_balance_loss(router_probs, expert_mask, mask=None):
    """Switch Transformer load-balancing loss: `E * sum_i f_i * P_i`.

    `f_i` is the fraction of routed assignments that went to expert i (a
    count: no gradient) and `P_i` the mean router probability of expert i
    (differentiable). Both are 1/E under uniform routing, giving exactly
    1.0; if one expert takes everything the loss tends to E. Multiplying by E
    keeps the value independent of the number of experts, so one weight
    (alpha = 1e-2 in the paper) works across model sizes.

    Args:
        router_probs: `[T, E]` full softmax probabilities.
        expert_mask: `[T, E]` or `[T, k, E]` one-hot choices (before capacity).
        mask: optional `[T]` padding mask.

    Returns:
        A float32 scalar.
    """
    probs = _as_float32(router_probs)
    num_experts = probs.shape[-1]
    chosen = _as_float32(expert_mask)
    if len(chosen.shape) == 3:
        chosen = ops.sum(chosen, axis=1)  # [T, E]
    token_mask = _token_mask(mask, probs)  # [T, 1]
    counts = ops.sum(chosen * token_mask, axis=0)  # [E]
    fraction = counts / ops.maximum(ops.sum(counts), _EPS)  # f_i, sums to 1
    mean_prob = ops.sum(probs * token_mask, axis=0) / ops.maximum(ops.sum(token_mask), _EPS)  # P_i
    return num_experts * ops.sum(fraction * mean_prob)


def router_z_loss(logits, mask=None):
    """ST-MoE router z-loss: `mean_t (log sum_i exp(logits[t, i]))^2`.

    Penalises large router logits, which overflow in low precision and make
    the softmax brittle. Computed in float32 with a stable logsumexp.

    Args:
        logits: `[T, E]` router logits.
        mask: optional `[T]` padding mask.

    Returns:
        A float32 scalar.
    """
    logits = _as_float32(logits)
    z = ops.logsumexp(logits, axis=-1)  # [T]
    token_mask = _token_mask(mask, logits)[:, 0]
    z_squared = ops.where(token_mask > 0, ops.square(z), 0.0)  # padding may hold anything, even inf
    return ops.sum(z_squared) / ops.maximum(ops.sum(token_mask), _EPS)
