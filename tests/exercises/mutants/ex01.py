"""Wrong solutions of exercise 1 that tests/exercises/test_ex01_dense_mixture.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex01_dense_mixture.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # softmax without the max shift: exp(1000) = inf, inf / inf = NaN.
    ("softmax_without_max_shift", "z = z - np.max(z, axis=-1, keepdims=True)", "z = z"),
    # One max for the whole batch instead of one per row: rows far below it underflow to 0 / 0.
    ("softmax_global_max", "z = z - np.max(z, axis=-1, keepdims=True)", "z = z - np.max(z)"),
    # The right values, but the caller's float64 logits are shifted in place.
    (
        "softmax_shifts_the_input_in_place",
        "z = z - np.max(z, axis=-1, keepdims=True)",
        "z -= np.max(z, axis=-1, keepdims=True)",
    ),
    # Normalising over the batch axis instead of the experts.
    (
        "softmax_over_the_batch_axis",
        "return e / np.sum(e, axis=-1, keepdims=True)",
        "return e / np.sum(e, axis=0, keepdims=True)",
    ),
    # The documented expert_biases argument is ignored.
    ("expert_biases_ignored", "if expert_biases is not None:", "if False:"),
    # The textbook sigmoid: right values, but exp(1000) overflows on the way (the docstring forbids it).
    (
        "one_logit_gate_naive_sigmoid",
        "return softmax(np.stack([z, np.zeros_like(z)], axis=-1))",
        "s = 1.0 / (1.0 + np.exp(-z))\n    return np.stack([s, 1.0 - s], axis=-1)",
    ),
]
