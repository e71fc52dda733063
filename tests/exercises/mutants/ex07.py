"""Wrong solutions of exercise 7 that tests/exercises/test_ex07_z_loss.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex07_z_loss.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # The literal formula: exp(1000) = inf.
    (
        "logsumexp_without_max_shift",
        "return m + np.log(np.sum(np.exp(x - m[..., None]), axis=-1))",
        "return np.log(np.sum(np.exp(x), axis=-1))",
    ),
    # One max for the whole batch: rows far below it underflow to log(0) = -inf.
    ("logsumexp_global_max", "m = np.max(x, axis=-1)", "m = np.max(x)"),
    # Written for [B, N] only, although the docstring promises [..., N].
    (
        "logsumexp_2d_only",
        "m + np.log(np.sum(np.exp(x - m[..., None]), axis=-1))",
        "m + np.log(np.sum(np.exp(x - m[:, None]), axis=-1))",
    ),
    # The square of the mean instead of the mean of the squares.
    ("loss_squares_the_mean", "float(np.mean(logsumexp(logits) ** 2))", "float(np.mean(logsumexp(logits)) ** 2)"),
    # The gradient's softmax computed literally: fine at 500 in float64, inf / inf at 1000.
    (
        "gradient_naive_softmax",
        "softmax = np.exp(x - lse[:, None])  # stable: x - lse <= 0",
        "softmax = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)",
    ),
    # 2 / N instead of 2 / B.
    (
        "gradient_divides_by_experts",
        "return 2.0 / x.shape[0] * lse[:, None] * softmax",
        "return 2.0 / x.shape[1] * lse[:, None] * softmax",
    ),
]
