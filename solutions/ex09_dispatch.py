"""Exercise 9: dispatch tokens to their experts' slots and combine the results back.

Learning goal: once routing has chosen each token's experts (`indices`), gate
weights (`gates`) and capacity slots (`positions`, `keep`, exercise 8), move
the tokens into a dense `[E, C, d]` buffer, run every expert on its own `C`
rows as one batched matmul, and bring the outputs back to the tokens:

    y[t] = sum over kept choices j of  gates[t, j] * expert_{indices[t, j]}(x[t])

Two equivalent formulations:

* scatter / gather (linear memory, what `moe_tf.dispatch.gather_dispatch` does);
* the one-hot dispatch tensor `[T, E, C]` of GShard / Switch Transformer /
  Mesh-TensorFlow, moved with einsums (memory `T * E * C`, quadratic in T).

Papers: Lepikhin et al. (2020), "GShard" (dispatch and combine tensors);
Fedus, Zoph & Shazeer (2021), "Switch Transformers" (token dropping past
capacity).

The rule that matters: a dropped assignment contributes exactly 0 to the
output (not `x * gate`, not the output of an empty slot). A token whose every
choice was dropped outputs 0; the residual connection around the MoE layer is
what carries it on unchanged. Empty slots of the buffer hold zeros.

Work with numpy (or `keras.ops`).
"""

# stub: import numpy as np  # noqa: F401  (for your solution)
import numpy as np


def dispatch_tokens(x, indices, positions, keep, num_experts, capacity):
    """Scatters every kept (token, choice) into slot `positions[t, j]` of expert `indices[t, j]`.

    Args:
        x: `[T, d]` float token representations.
        indices: `[T, k]` int, chosen experts.
        positions: `[T, k]` int, slot of each assignment in its expert's
            buffer (may be `>= capacity` where dropped).
        keep: `[T, k]` bool or 0/1, whether the assignment got a slot.
        num_experts: E.
        capacity: C, slots per expert.

    Returns:
        `[E, C, d]` expert inputs: `out[e, c]` is the token sitting in slot c
        of expert e, and zeros for a slot nobody took.

    Example:
        >>> x = np.array([[1., 2.], [3., 4.], [5., 6.]])
        >>> indices, positions = np.array([[0], [0], [1]]), np.array([[0], [1], [0]])
        >>> keep = np.array([[True], [False], [True]])   # token 1 was dropped
        >>> dispatch_tokens(x, indices, positions, keep, num_experts=2, capacity=2)
        array([[[1., 2.],
                [0., 0.]],
        <BLANKLINE>
               [[5., 6.],
                [0., 0.]]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 09: implement dispatch_tokens")
    x = np.asarray(x)
    indices = np.asarray(indices)
    positions = np.asarray(positions)
    keep = np.asarray(keep).astype(bool)
    buffer = np.zeros((num_experts, capacity, x.shape[-1]), dtype=x.dtype)
    tokens, choices = np.nonzero(keep)  # every kept assignment once
    np.add.at(buffer, (indices[tokens, choices], positions[tokens, choices]), x[tokens])
    return buffer
    # --- end solution


def combine_outputs(expert_outputs, indices, positions, keep, gates):
    """Gathers each kept assignment's expert output and sums them weighted by the gates.

    Args:
        expert_outputs: `[E, C, d_out]`, the experts' outputs slot by slot.
        indices: `[T, k]` int, chosen experts.
        positions: `[T, k]` int slots (may be `>= C` where dropped: do not
            index with those).
        keep: `[T, k]` bool or 0/1.
        gates: `[T, k]` float combine weights of the choices.

    Returns:
        `[T, d_out]`: `y[t] = sum_j keep[t, j] * gates[t, j] * expert_outputs[indices[t, j], positions[t, j]]`,
        exactly 0 for a token whose every choice was dropped.

    Example:
        >>> outs = np.array([[[10.], [20.]], [[30.], [40.]]])        # E=2, C=2, d_out=1
        >>> indices, positions = np.array([[0, 1], [1, 0]]), np.array([[0, 0], [1, 2]])
        >>> keep = np.array([[True, True], [True, False]])           # token 1's 2nd choice dropped
        >>> gates = np.array([[0.75, 0.25], [0.5, 0.5]])
        >>> combine_outputs(outs, indices, positions, keep, gates)   # 0.75*10 + 0.25*30; 0.5*40 + 0
        array([[15.],
               [20.]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 09: implement combine_outputs")
    expert_outputs = np.asarray(expert_outputs)
    indices = np.asarray(indices)
    keep = np.asarray(keep).astype(bool)
    gates = np.asarray(gates)
    if expert_outputs.shape[1] == 0:  # no slots at all: everything was dropped
        return np.zeros((indices.shape[0], expert_outputs.shape[-1]), dtype=expert_outputs.dtype)
    safe_positions = np.where(keep, np.asarray(positions), 0)  # a dropped position may be out of range
    gathered = expert_outputs[indices, safe_positions]  # [T, k, d_out]
    gathered = np.where(keep[..., None], gathered, 0.0)  # dropped: exactly 0
    return np.sum(gathered * gates[..., None], axis=1)
    # --- end solution


def moe_forward(x, indices, gates, positions, keep, expert_fn, num_experts, capacity):
    """Dispatch, run the experts, combine: the sparse MoE layer given a routing decision.

    Args:
        x: `[T, d]` tokens.
        indices, gates, positions, keep: `[T, k]` each, as above.
        expert_fn: callable mapping the `[E, C, d]` expert inputs to `[E, C, d_out]`
            (expert e transforms the rows of `inputs[e]`).
        num_experts: E.
        capacity: C.

    Returns:
        `[T, d_out]` outputs.

    Example:
        >>> x = np.array([[1.], [2.]])
        >>> double_then_add_expert_id = lambda h: 2 * h + np.arange(2.)[:, None, None]
        >>> moe_forward(x, np.array([[1], [1]]), np.array([[0.5], [1.0]]), np.array([[0], [1]]),
        ...             np.array([[True], [False]]), double_then_add_expert_id, num_experts=2, capacity=1)
        array([[1.5],
               [0. ]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 09: implement moe_forward")
    expert_inputs = dispatch_tokens(x, indices, positions, keep, num_experts, capacity)
    expert_outputs = np.asarray(expert_fn(expert_inputs))
    return combine_outputs(expert_outputs, indices, positions, keep, gates)
    # --- end solution


def dispatch_mask(indices, positions, keep, num_experts, capacity):
    """The binary one-hot dispatch tensor of GShard / Switch.

    Args:
        indices, positions, keep: `[T, k]` each, as above.
        num_experts: E.
        capacity: C.

    Returns:
        `[T, E, C]` float array of 0s and 1s: `mask[t, e, c] = 1` exactly when
        token t sits in slot c of expert e. Then
        `einsum("tec,td->ecd", mask, x)` equals `dispatch_tokens(...)`.

    Example:
        >>> dispatch_mask(np.array([[1], [1]]), np.array([[0], [1]]), np.array([[True], [False]]), 2, 1)
        array([[[0.],
                [1.]],
        <BLANKLINE>
               [[0.],
                [0.]]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 09: implement dispatch_mask")
    indices = np.asarray(indices)
    positions = np.asarray(positions)
    keep = np.asarray(keep).astype(np.float64)
    expert_one_hot = np.eye(num_experts)[indices] * keep[..., None]  # [T, k, E], zero where dropped
    in_range = (positions >= 0) & (positions < capacity)
    slot_one_hot = np.eye(capacity + 1)[np.where(in_range, positions, capacity)][..., :capacity]  # [T, k, C]
    return np.einsum("tke,tkc->tec", expert_one_hot, slot_one_hot)
    # --- end solution


def combine_weights(indices, positions, keep, gates, num_experts, capacity):
    """The combine tensor: the dispatch mask with each assignment's gate in place of its 1.

    Args:
        indices, positions, keep, gates: `[T, k]` each, as above.
        num_experts: E.
        capacity: C.

    Returns:
        `[T, E, C]` float: `gates[t, j]` at `[t, indices[t, j], positions[t, j]]`
        for kept assignments, 0 elsewhere. Then
        `einsum("tec,eco->to", combine, expert_outputs)` equals `combine_outputs(...)`.

    Example:
        >>> combine_weights(np.array([[1], [1]]), np.array([[0], [1]]), np.array([[True], [False]]),
        ...                 np.array([[0.5], [0.9]]), 2, 1)
        array([[[0. ],
                [0.5]],
        <BLANKLINE>
               [[0. ],
                [0. ]]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 09: implement combine_weights")
    indices = np.asarray(indices)
    positions = np.asarray(positions)
    weights = np.asarray(keep).astype(np.float64) * np.asarray(gates, dtype=np.float64)  # [T, k]
    expert_one_hot = np.eye(num_experts)[indices] * weights[..., None]  # [T, k, E]
    in_range = (positions >= 0) & (positions < capacity)
    slot_one_hot = np.eye(capacity + 1)[np.where(in_range, positions, capacity)][..., :capacity]  # [T, k, C]
    return np.einsum("tke,tkc->tec", expert_one_hot, slot_one_hot)
    # --- end solution
