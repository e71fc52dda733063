"""Sending tokens to their experts' capacity slots and bringing results back.

Two implementations of the same maths, selectable in `MixtureOfExperts`:

- `einsum_dispatch`: the GShard/Switch/Mesh-TF formulation. Builds a binary
  dispatch tensor `[T, E, C]` and a combine tensor of the same shape, and
  moves data with two einsums. Easy to read and to shard, but its memory is
  `T * E * C = capacity_factor * k * T^2`: quadratic in the tokens.
- `gather_dispatch`: scatter-adds each kept token into its slot
  (`segment_sum`), runs the experts, and gathers each token's slots back.
  Memory is linear in T; this is the default.

Both take the routing decision already made (`capacity_positions`) and
return exactly 0 for an assignment that was dropped: never `input * gate`.

Shapes:
    tokens    [T, d]      flattened tokens
    indices   [T, k]      chosen experts
    positions [T, k]      slot of each assignment in its expert
    weights   [T, k]      combine weight of each assignment, already 0 where dropped
    keep      [T, k]      1 where the assignment got a slot, 0 where dropped or padding
"""

from keras import ops


def dispatch_and_combine_tensors(indices, positions, weights, keep, num_experts, capacity):
    """The one-hot routing tensors of GShard/Switch.

    Args:
        indices, positions, weights, keep: see the module docstring.
        num_experts: E.
        capacity: C, slots per expert.

    Returns:
        `(dispatch, combine)`, both `[T, E, C]` float32. `dispatch[t, e, c]`
        is 1 when token t sits in slot c of expert e and 0 otherwise (binary:
        never a gate value); `combine` holds that assignment's gate weight at
        the same place.
    """
    keep = ops.cast(keep, "float32")
    expert_one_hot = ops.one_hot(indices, num_experts, dtype="float32") * keep[..., None]  # [T, k, E]
    slot_one_hot = ops.one_hot(positions, capacity, dtype="float32")  # [T, k, C]
    dispatch = ops.einsum("tke,tkc->tec", expert_one_hot, slot_one_hot)  # [T, E, C]
    weighted = expert_one_hot * ops.cast(weights, "float32")[..., None]  # [T, k, E]
    combine = ops.einsum("tke,tkc->tec", weighted, slot_one_hot)  # [T, E, C]
    return dispatch, combine


def einsum_dispatch(tokens, indices, positions, weights, keep, experts, num_experts, capacity):
    """One-hot dispatch/combine with einsums.

    Args:
        tokens, indices, positions, weights, keep: see the module docstring.
        experts: a callable mapping `[E, C, d]` to `[E, C, d_out]`.
        num_experts: E.
        capacity: C, slots per expert.

    Returns:
        `[T, d_out]` float32 outputs.
    """
    dispatch, combine = dispatch_and_combine_tensors(indices, positions, weights, keep, num_experts, capacity)
    expert_inputs = ops.einsum("tec,td->ecd", ops.cast(dispatch, tokens.dtype), tokens)  # [E, C, d]
    expert_outputs = ops.cast(experts(expert_inputs), "float32")  # [E, C, d_out]
    return ops.einsum("tec,eco->to", combine, expert_outputs)  # [T, d_out]


def gather_dispatch(tokens, indices, positions, weights, keep, experts, num_experts, capacity):
    """Scatter tokens into slots, run the experts, gather the slots back.

    A flat slot id `e * C + position` names each kept assignment; dropped
    assignments go to one extra "trash" slot `E * C`, which is discarded on
    the way in, and are replaced by exact zeros on the way out.

    Args and returns: as `einsum_dispatch`.
    """
    num_tokens = ops.shape(tokens)[0]
    num_choices = indices.shape[-1]
    num_slots = num_experts * capacity
    slots = ops.where(keep > 0, indices * capacity + positions, num_slots)  # [T, k]
    flat_slots = ops.reshape(slots, (-1,))  # [T*k]
    token_ids = ops.reshape(ops.broadcast_to(ops.arange(num_tokens)[:, None], (num_tokens, num_choices)), (-1,))  # [T*k]
    routed = ops.take(tokens, token_ids, axis=0)  # [T*k, d]
    buffer = ops.segment_sum(routed, flat_slots, num_segments=num_slots + 1)  # [E*C + 1, d]
    expert_inputs = ops.reshape(buffer[:num_slots], (num_experts, capacity, tokens.shape[-1]))  # [E, C, d]
    expert_outputs = ops.cast(experts(expert_inputs), "float32")  # [E, C, d_out]
    flat_outputs = ops.reshape(expert_outputs, (num_slots, expert_outputs.shape[-1]))  # [E*C, d_out]
    gathered = ops.take(flat_outputs, ops.minimum(slots, num_slots - 1), axis=0)  # [T, k, d_out]
    gathered = ops.where(keep[..., None] > 0, gathered, 0.0)  # a dropped assignment reads exactly 0
    return ops.sum(gathered * ops.cast(weights, "float32")[..., None], axis=1)  # [T, d_out]


DISPATCHERS = {"einsum": einsum_dispatch, "gather": gather_dispatch}
