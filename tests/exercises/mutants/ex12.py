"""Wrong solutions of exercise 12 (DeepSeekMoE) that tests/exercises/test_ex12_shared_experts.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex12_shared_experts.py and is
replaced by `new`, giving one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    (
        "combinations_as_a_float",  # n! / (k! (n-k)!) with /: a float, inexact past 2**53
        "return math.comb(num_experts, k)",
        "return math.factorial(num_experts) / (math.factorial(k) * math.factorial(num_experts - k))",
    ),
    (
        "no_value_error_for_an_indivisible_hidden_width",
        'raise ValueError(f"hidden={hidden} must be divisible by m={m}")',
        "pass",
    ),
    (
        "fine_hidden_as_a_float",
        "return num_experts * m, k * m, hidden // m",
        "return num_experts * m, k * m, hidden / m",
    ),
    (
        "flops_count_one_op_per_weight",
        "return k * 2 * (2 * d_model * hidden)",
        "return k * 2 * d_model * hidden",
    ),
    (
        "gates_renormalised",  # DeepSeekMoE keeps the raw top-k softmax affinities (only k = 1 hides nothing)
        "gates = np.take_along_axis(scores, indices, axis=-1)  # [T, k], not renormalised",
        "gates = np.take_along_axis(scores, indices, axis=-1)\n    gates = gates / gates.sum(axis=-1, keepdims=True)",
    ),
    (
        "ties_go_to_the_higher_expert",
        'indices = np.argsort(-scores, axis=-1, kind="stable")[:, :k]',
        'indices = np.argsort(scores, axis=-1, kind="stable")[:, ::-1][:, :k]',
    ),
]
