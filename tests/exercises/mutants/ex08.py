"""Wrong solutions of exercise 8 that tests/exercises/test_ex08_capacity.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex08_capacity.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # A float product rounded up: 1.1 * 2 * 200 / 8 = 55.00000000000001 -> 56.
    (
        "float_ceil",
        "return int(-(-numerator // denominator))",
        "return int(np.ceil(capacity_factor * k * num_tokens / num_experts))",
    ),
    # Fraction(1.1) is the binary double 1.100000000000000088..., not 11/10.
    (
        "fraction_of_the_float_not_of_its_text",
        "ratio = Fraction(str(capacity_factor))",
        "ratio = Fraction(capacity_factor)",
    ),
    # Top-k routing needs k times the slots of top-1.
    (
        "capacity_forgets_k",
        "numerator = ratio.numerator * k * int(num_tokens)",
        "numerator = ratio.numerator * int(num_tokens)",
    ),
    # A minimum of one slot, which the documented formula does not have.
    (
        "minimum_capacity_of_one",
        "return int(-(-numerator // denominator))",
        "return max(1, int(-(-numerator // denominator)))",
    ),
    # The inclusive cumsum numbers slots from 1: position < C keeps only C - 1 tokens.
    ("inclusive_cumsum", "before = np.cumsum(queue, axis=0) - queue", "before = np.cumsum(queue, axis=0) - 0 * queue"),
    # Token-major queue: token 0's second choice before token 1's first choice.
    (
        "token_major_queue",
        "    queue = one_hot.transpose(1, 0, 2).reshape(k * num_tokens, num_experts)  # [k*T, E]\n"
        "    before = np.cumsum(queue, axis=0) - queue  # exclusive cumsum: assignments queued earlier\n"
        "    positions = (before * queue).sum(axis=-1)  # [k*T], read at each assignment's own expert\n"
        "    positions = positions.reshape(k, num_tokens).T  # [T, k]",
        "    queue = one_hot.reshape(num_tokens * k, num_experts)  # [T*k, E]\n"
        "    before = np.cumsum(queue, axis=0) - queue  # exclusive cumsum: assignments queued earlier\n"
        "    positions = (before * queue).sum(axis=-1)  # [T*k], read at each assignment's own expert\n"
        "    positions = positions.reshape(num_tokens, k)  # [T, k]",
    ),
]
