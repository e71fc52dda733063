"""Wrong solutions of exercise 13 (aux-loss-free bias) that tests/exercises/test_ex13_aux_free_bias.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex13_aux_free_bias.py and is
replaced by `new`, giving one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    (
        "gates_from_the_biased_scores",  # the bias must change the selection only, never the gate values
        "chosen = ops.take_along_axis(scores, indices, axis=-1)  # the ORIGINAL affinities",
        "chosen = ops.take_along_axis(scores + bias, indices, axis=-1)",
    ),
    (
        "selection_ignores_the_bias",
        "_, indices = ops.top_k(scores + bias, k=k)  # selection only",
        "_, indices = ops.top_k(scores, k=k)",
    ),
    (
        "ties_go_to_the_higher_expert",
        "_, indices = ops.top_k(scores + bias, k=k)  # selection only",
        "indices = ops.flip(ops.argsort(scores + bias, axis=-1), axis=-1)[:, :k]",
    ),
    (
        "softmax_affinities",  # DeepSeek-V3 uses sigmoid affinities
        'scores = ops.sigmoid(ops.cast(ops.convert_to_tensor(logits), "float32"))  # [T, E]',
        'scores = ops.softmax(ops.cast(ops.convert_to_tensor(logits), "float32"), axis=-1)',
    ),
    (
        "update_in_place",  # the docstring promises a new array; the caller's bias changes under it
        "return np.asarray(bias, dtype=np.float64) - gamma * np.sign(load - load.mean())",
        "bias = np.asarray(bias, dtype=np.float64)\n    bias -= gamma * np.sign(load - load.mean())\n    return bias",
    ),
    (
        "update_proportional_to_the_load_gap",  # the rule moves by a fixed step gamma: sign(), not the gap
        "return np.asarray(bias, dtype=np.float64) - gamma * np.sign(load - load.mean())",
        "return np.asarray(bias, dtype=np.float64) - gamma * (load - load.mean())",
    ),
]
