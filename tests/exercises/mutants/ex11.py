"""Wrong solutions of exercise 11 (expert-choice routing) that tests/exercises/test_ex11_expert_choice.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex11_expert_choice.py and is
replaced by `new`, giving one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    (
        "capacity_rounds_down",
        "return min(int(-(-ratio.numerator // ratio.denominator)), int(num_tokens))",
        "return min(int(ratio.numerator // ratio.denominator), int(num_tokens))",
    ),
    (
        "capacity_not_capped_at_n",
        "return min(int(-(-ratio.numerator // ratio.denominator)), int(num_tokens))",
        "return int(-(-ratio.numerator // ratio.denominator))",
    ),
    (
        "capacity_float_ceil",  # 1.1 * 100 / 2 = 55.00000000000001 rounds up to 56
        "return min(int(-(-ratio.numerator // ratio.denominator)), int(num_tokens))",
        "return min(int(np.ceil(capacity_factor * num_tokens / num_experts)), int(num_tokens))",
    ),
    (
        "softmax_over_tokens",  # S must be a softmax over the experts (rows sum to 1)
        "scores = shifted / shifted.sum(axis=-1, keepdims=True)  # softmax over experts",
        "scores = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)",
    ),
    (
        "ties_go_to_the_higher_token",
        'indices = np.argsort(-scores.T, axis=-1, kind="stable")[:, :capacity]',
        'indices = np.argsort(scores.T, axis=-1, kind="stable")[:, ::-1][:, :capacity]',
    ),
    (
        "forward_overwrites_a_token_picked_twice",  # y[t] keeps only the last expert instead of the sum
        "np.add.at(y, indices.ravel(), (gates[..., None] * outputs).reshape(-1, outputs.shape[-1]))",
        "y[indices.ravel()] = (gates[..., None] * outputs).reshape(-1, outputs.shape[-1])",
    ),
]
