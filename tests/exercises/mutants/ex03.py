"""Wrong solutions of exercise 3 that tests/exercises/test_ex03_topk_gating.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex03_topk_gating.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # The full softmax masked to the top k: the kept gates no longer sum to 1.
    (
        "gates_not_renormalised",
        "top = top / top.sum(axis=-1, keepdims=True)",
        "top = top / np.exp(logits - top[:, :1]).sum(axis=-1, keepdims=True)",
    ),
    # Reversing an ascending argsort: ties go to the HIGHER expert index.
    (
        "ties_to_the_higher_index",
        'indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]',
        'indices = np.argsort(logits, axis=-1, kind="stable")[:, ::-1][:, :k]',
    ),
    # The right experts listed by expert index instead of best first.
    (
        "indices_sorted_by_expert_not_by_logit",
        'indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]',
        'indices = np.sort(np.argsort(-logits, axis=-1, kind="stable")[:, :k], axis=-1)',
    ),
    # k = E (the full softmax) refused: an off-by-one in the range check.
    ("k_equal_to_E_rejected", "1 <= k <= num_experts)", "1 <= k < num_experts)"),
    # Same gates (a softmax is shift-invariant), but the caller's float64 logits are shifted in place.
    (
        "max_shift_in_place",
        "top = np.take_along_axis(logits, indices, axis=-1)  # [T, k]",
        "logits -= logits.max(axis=-1, keepdims=True)\n    top = np.take_along_axis(logits, indices, axis=-1)",
    ),
]
