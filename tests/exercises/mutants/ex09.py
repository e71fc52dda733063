"""Wrong solutions of exercise 9 (dispatch and combine) that tests/exercises/test_ex09_dispatch.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex09_dispatch.py and is replaced
by `new`, giving one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    (
        "dispatch_selects_by_position_not_keep",  # a dropped choice whose slot is in range still fills it
        "tokens, choices = np.nonzero(keep)",
        "tokens, choices = np.nonzero(positions < capacity)",
    ),
    (
        "combine_multiplies_by_the_mask",  # 0 * inf and 0 * NaN from a garbage slot are NaN, not 0
        "    gathered = np.where(keep[..., None], gathered, 0.0)  # dropped: exactly 0\n"
        "    return np.sum(gathered * gates[..., None], axis=1)",
        "    return np.sum(gathered * (gates * keep)[..., None], axis=1)",
    ),
    (
        "combine_ignores_the_gates",
        "return np.sum(gathered * gates[..., None], axis=1)",
        "return np.sum(gathered, axis=1)",
    ),
    (
        "combine_crashes_on_an_empty_buffer",  # capacity 0: indexing an [E, 0, d] array raises IndexError
        "    if expert_outputs.shape[1] == 0:  # no slots at all: everything was dropped\n"
        "        return np.zeros((indices.shape[0], expert_outputs.shape[-1]), dtype=expert_outputs.dtype)\n",
        "",
    ),
    (
        "combine_weights_ignore_keep",  # dropped choices at in-range slots keep their gate
        "weights = np.asarray(keep).astype(np.float64) * np.asarray(gates, dtype=np.float64)  # [T, k]",
        "weights = np.asarray(gates, dtype=np.float64)  # [T, k]",
    ),
    (
        "dispatch_mask_ignores_keep",
        "expert_one_hot = np.eye(num_experts)[indices] * keep[..., None]  # [T, k, E], zero where dropped",
        "expert_one_hot = np.eye(num_experts)[indices]  # [T, k, E]",
    ),
]
