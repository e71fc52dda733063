"""Wrong solutions of exercise 10 (padding-aware routing) that tests/exercises/test_ex10_padding.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex10_padding.py and is replaced
by `new`, giving one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    (
        "padding_queues_for_slots",  # a padding token takes a capacity slot and can push a real token out
        "one_hot = np.eye(num_experts, dtype=np.int64)[indices] * real[:, None, None]  # padding queues nowhere",
        "one_hot = np.eye(num_experts, dtype=np.int64)[indices]",
    ),
    (
        "fraction_over_tokens_not_assignments",  # f_i sums to k, not 1: only k = 1 hides it
        "fraction = counts / max(counts.sum(), 1e-12)",
        "fraction = counts / max(real.sum(), 1)",
    ),
    (
        "all_padding_divides_by_zero",  # no real token: 0 / 0 = NaN instead of the documented loss 0
        "fraction = counts / max(counts.sum(), 1e-12)",
        "fraction = counts / counts.sum()",
    ),
    (
        "mean_prob_multiplies_by_the_mask",  # 0 * NaN from an overflowing padding row is NaN
        "mean_prob = np.where(real[:, None], probs, 0.0).sum(axis=0) / max(real.sum(), 1)",
        "mean_prob = (probs * real[:, None]).sum(axis=0) / max(real.sum(), 1)",
    ),
    (
        "output_multiplies_by_the_mask",  # 0 * inf from a +-1e308 padding row is NaN, not exactly 0
        "y = np.where(keep[..., None], gates[..., None] * outputs, 0.0).sum(axis=1)",
        "y = (keep[..., None] * gates[..., None] * outputs).sum(axis=1)",
    ),
    (
        "ties_go_to_the_higher_expert",
        'indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]',
        'indices = np.argsort(logits, axis=-1, kind="stable")[:, ::-1][:, :k]',
    ),
]
