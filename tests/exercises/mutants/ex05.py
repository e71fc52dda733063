"""Wrong solutions of exercise 5 that tests/exercises/test_ex05_cv_losses.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex05_cv_losses.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # The sample variance (divide by E - 1) instead of the population variance.
    ("sample_variance", "np.mean((v - mean) ** 2)", "np.sum((v - mean) ** 2) / (v.shape[-1] - 1)"),
    # No epsilon: an all-zero vector gives 0 / 0 = NaN.
    ("cv_squared_without_epsilon", "(mean**2 + EPSILON)", "(mean**2)"),
    # A tie with the (k+1)-th logit counted as in the top k (>= instead of >).
    ("ties_count_as_in_the_top_k", "is_in = noisy > threshold_if_in", "is_in = noisy >= threshold_if_in"),
    # k >= E returns one token's worth per expert instead of T.
    (
        "every_expert_chosen_returns_ones",
        "return np.full(num_experts, float(num_tokens))",
        "return np.ones(num_experts)",
    ),
    # The threshold of an expert in the top k is the k-th largest (itself), not the (k+1)-th.
    (
        "in_threshold_off_by_one",
        "threshold_if_in = ranked[:, k : k + 1]  # (k+1)-th largest",
        "threshold_if_in = ranked[:, k - 1 : k]",
    ),
    # The documented weight w_load is ignored.
    ("load_weight_ignored", "return weight * cv_squared(smooth_load(", "return cv_squared(smooth_load("),
]
