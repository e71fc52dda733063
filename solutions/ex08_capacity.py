"""Exercise 8: expert capacity and each token's slot in its expert's buffer.

Learning goal: compute how many tokens an expert may take (its *capacity*) and
which slot of that expert's fixed-size buffer every (token, choice) lands in,
so that the excess is dropped deterministically. Static buffer sizes are what
let a sparse MoE run as dense, batched matrix multiplies on accelerators.

Papers: Lepikhin et al. (2020), "GShard: Scaling Giant Models with Conditional
Computation and Automatic Sharding" (expert capacity, top-2 dispatch with the
first choices served before the second choices); Fedus, Zoph & Shazeer (2021),
"Switch Transformers" (the capacity factor:
`capacity = capacity_factor * tokens_per_batch / num_experts`, here times k
for top-k routing).

Two traps this exercise is about:

* floating point: `1.1 * 2 * 200 / 8` is `55.00000000000001` in float64, so a
  naive `math.ceil` returns 56 slots where the formula gives 55;
* the off-by-one: slots are numbered from 0 by an *exclusive* cumulative sum.
  An inclusive cumsum numbers them from 1, so `position < C` keeps only C-1
  tokens per expert and silently wastes a slot.

Work with numpy (or `keras.ops`); integer outputs may be any integer dtype.
"""

# stub: from fractions import Fraction  # noqa: F401  (for your solution)
from fractions import Fraction

# stub: import numpy as np  # noqa: F401  (for your solution)
import numpy as np


def expert_capacity(num_tokens, num_experts, k, capacity_factor):
    """Slots per expert, `C = ceil(capacity_factor * k * num_tokens / num_experts)`, computed exactly.

    The value must be the exact mathematical ceiling: write the capacity
    factor as a fraction (`fractions.Fraction(str(capacity_factor))` turns
    `1.1` into `11/10`) and use integer arithmetic, instead of rounding a
    float product up.

    Args:
        num_tokens: T, tokens in the routing group (a Python int >= 0).
        num_experts: E, the number of experts (int >= 1).
        k: experts chosen per token (int >= 1).
        capacity_factor: a positive float or int, e.g. 1.0, 1.25, 2.

    Returns:
        The capacity, a Python int.

    Example:
        >>> expert_capacity(num_tokens=8, num_experts=4, k=2, capacity_factor=1.25)
        5
        >>> expert_capacity(num_tokens=200, num_experts=8, k=2, capacity_factor=1.1)  # not 56
        55
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 08: implement expert_capacity")
    ratio = Fraction(str(capacity_factor))  # "1.1" -> 11/10 exactly
    numerator = ratio.numerator * k * int(num_tokens)
    denominator = ratio.denominator * num_experts
    return int(-(-numerator // denominator))  # ceil(a / b) = -floor(-a / b) for integers
    # --- end solution


def capacity_positions(indices, num_experts, capacity):
    """Assigns every (token, choice) a slot in its chosen expert's buffer.

    Queueing order: every token's first choice comes before any token's
    second choice (and so on for k > 2); within one choice rank, tokens queue
    in token order (token 0 first). The position of an assignment is the
    number of assignments queued *before* it at the same expert (an
    exclusive cumulative sum), so the first token an expert receives gets
    position 0. An assignment is kept when `position < capacity`, dropped
    otherwise. Dropped assignments still get their position (>= capacity).

    Args:
        indices: `[T, k]` int array, `indices[t, j]` is token t's j-th choice
            of expert (its choices are distinct experts in `[0, E)`).
        num_experts: E.
        capacity: C, slots per expert (int >= 0).

    Returns:
        `(positions, keep)`, both `[T, k]`: `positions` ints, `keep` booleans
        (or 0/1), True where the assignment fits in its expert's buffer.

    Example:
        Four tokens, top-2 over three experts, capacity 2:

        >>> indices = np.array([[0, 1], [0, 2], [1, 0], [0, 1]])
        >>> positions, keep = capacity_positions(indices, num_experts=3, capacity=2)
        >>> positions  # 1st choices: 0,1,0,2 (experts 0,0,1,0); 2nd: 1,0,3,2
        array([[0, 1],
               [1, 0],
               [0, 3],
               [2, 2]])
        >>> keep
        array([[ True,  True],
               [ True,  True],
               [ True, False],
               [False, False]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 08: implement capacity_positions")
    indices = np.asarray(indices, dtype=np.int64)
    num_tokens, k = indices.shape
    one_hot = np.eye(num_experts, dtype=np.int64)[indices]  # [T, k, E]
    # Choice-major queue: all first choices, then all second choices, ...
    queue = one_hot.transpose(1, 0, 2).reshape(k * num_tokens, num_experts)  # [k*T, E]
    before = np.cumsum(queue, axis=0) - queue  # exclusive cumsum: assignments queued earlier
    positions = (before * queue).sum(axis=-1)  # [k*T], read at each assignment's own expert
    positions = positions.reshape(k, num_tokens).T  # [T, k]
    keep = positions < capacity
    return positions, keep
    # --- end solution
