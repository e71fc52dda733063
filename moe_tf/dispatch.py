"""Sending tokens to their experts and bringing results back.

A dispatch takes the tokens, the router's plan (`moe_tf.plan`) and the
experts (`moe_tf.layers.Experts`, or any callable mapping `[E, C, d]` to
`[E, C, d_out]`), and returns every token's combined output. For a
`SlotPlan` (token choice) there are three, selectable in
`MixtureOfExperts(dispatch=...)`; the first two fill fixed capacity slots
(`C` per expert) and implement the same maths:

- `einsum_dispatch`: the GShard/Switch/Mesh-TF formulation. Builds a binary
  dispatch tensor `[T, E, C]` and a combine tensor of the same shape, and
  moves data with two einsums. Easy to read and to shard, but its memory is
  `T * E * C = capacity_factor * k * T^2`: quadratic in the tokens.
- `gather_dispatch`: gathers each slot's token, runs the experts, and
  gathers each token's slots back; the gradients are gathers too (through
  the inverse map, slot -> assignment). Memory is linear in T; the default
  with a capacity factor.
- `dropless_dispatch`: no capacity and nothing dropped, at sparse cost (the
  MegaBlocks idea, Gale et al. 2022). Each expert's assignments are laid
  out contiguously, each expert's run is padded to a multiple of a block of
  `b` rows, and every block runs through its own expert: about `k*T` rows
  of expert compute (at most `k*T + E*b`), not the `E*T` of `C = T` slots.
  The shapes stay static, so it compiles under XLA. The default when
  `capacity_factor=None`.

Two more complete the set:

- `dense_dispatch`: the dense mixture's plan (every token to every
  expert). The experts read the shared `[T, d]` tokens directly, without a
  copy per expert.
- `mask_dispatch`: a `MaskPlan` (expert choice, Soft MoE): each expert's
  slots are `dispatch`-weighted sums of its group's tokens, and each token
  gets the `combine`-weighted sum of the slots' outputs.

All take the routing decision already made and return exactly 0 for an
assignment that was dropped: never `input * gate`.

Shapes (the plan's fields, see `moe_tf.plan`):
    tokens     [T, d]      flattened tokens (`[G, n, d]` groups for `mask_dispatch`)
    indices    [T, k]      chosen experts
    positions  [T, k]      slot of each assignment in its expert
    weights    [T, k]      combine weight of each assignment, 0 where dropped (`plan.combine_weights`)
    keep       [T, k]      1 where the assignment got a slot, 0 where dropped or padding
"""

from keras import ops

from moe_tf import _checks


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


def einsum_dispatch(tokens, plan, experts):
    """One-hot dispatch/combine with einsums.

    Args:
        tokens: `[T, d]`.
        plan: a `SlotPlan` with positions and a capacity C.
        experts: a callable mapping `[E, C, d]` to `[E, C, d_out]`.

    Returns:
        `[T, d_out]` float32 outputs.
    """
    dispatch, combine = dispatch_and_combine_tensors(
        plan.indices, plan.positions, plan.combine_weights, plan.keep, plan.num_experts, plan.capacity
    )
    expert_inputs = ops.einsum("tec,td->ecd", ops.cast(dispatch, tokens.dtype), tokens)  # [E, C, d]
    expert_outputs = ops.cast(experts(expert_inputs), "float32")  # [E, C, d_out]
    return ops.einsum("tec,eco->to", combine, expert_outputs)  # [T, d_out]


def _inverse_map(targets, num_targets):
    """Which source fills each target, for a map where every target has at most one source.

    Args:
        targets: `[A]` int32 target of each source; `num_targets` for a
            source that goes nowhere.
        num_targets: N (int or scalar tensor).

    Returns:
        `[N]` int32: the source of each target, -1 where no source goes.
    """
    sources = ops.arange(ops.shape(targets)[0], dtype="int32") + 1  # 1-based, so 0 means "empty"
    filled = ops.segment_sum(sources, targets, num_segments=num_targets + 1)  # [N + 1], int32 ids only
    return filled[:num_targets] - 1  # the extra segment collects the sources that go nowhere


def _move_rows(source, index, valid, back_index, back_valid, fan_in):
    """`out[i] = source[index[i]]` where `valid[i]`, else exactly 0; its gradient is a gather too.

    Both directions of a dispatch move whole rows between two layouts that
    know each other (token -> its k slots, slot -> its one token). The
    default gradient of a gather is a scatter-add into a zero-filled buffer,
    which XLA:CPU runs serially; here the gradient reads the transposed map
    instead: row j of `source` receives the rows `back_index[j*fan_in + r]`
    (r < fan_in) of the upstream gradient where `back_valid` is set, which
    must be exactly the i with `index[i] == j` and `valid[i]`.

    Args:
        source: `[M, d]` rows.
        index: `[N]` int32 row of `source` read by each output row (any value where not valid).
        valid: `[N]` bool, False where the output row is 0.
        back_index: `[M * fan_in]` int32, the output rows that read each source row.
        back_valid: `[M * fan_in]` bool.
        fan_in: output rows per source row (k for tokens -> slots, 1 for slots -> assignments).

    Returns:
        `[N, d]`.
    """

    @ops.custom_gradient
    def take(rows):
        out = ops.where(valid[:, None], ops.take(rows, ops.maximum(index, 0), axis=0), 0.0)  # [N, d]

        def grad(upstream, variables=None):  # TensorFlow may pass the variables it saw read inside
            back = ops.take(upstream, ops.maximum(back_index, 0), axis=0)  # [M * fan_in, d]
            back = ops.where(back_valid[:, None], back, 0.0)
            if fan_in > 1:
                back = ops.sum(ops.reshape(back, (-1, fan_in, back.shape[-1])), axis=1)  # [M, d]
            return back if variables is None else (back, [None] * len(variables))

        return out, grad

    return take(source)


def _slot_dispatch(tokens, slots, keep, num_slots, run_experts):
    """Moves each kept assignment's token to its slot, runs the experts, brings the slots back.

    Shared by the gather and dropless dispatches, which differ only in the
    layout of the slots (`[E, C]` capacity slots, or blocks of rows).

    Args:
        tokens: `[T, d]`.
        slots: `[T, k]` int32 slot of each assignment in `[0, num_slots)`; any value where not kept.
        keep: `[T, k]`, 1 where the assignment has a slot. No two kept assignments share a slot.
        num_slots: S (int or scalar tensor).
        run_experts: `run_experts(slot_inputs [S, d]) -> [S, d_out]`.

    Returns:
        `[T, k, d_out]` float32: each assignment's expert output, exactly 0 where not kept.
    """
    num_choices = slots.shape[-1]
    kept = ops.reshape(keep > 0, (-1,))  # [T*k]
    flat_slots = ops.where(kept, ops.reshape(slots, (-1,)), num_slots)  # [T*k], num_slots = nowhere
    slot_assignment = _inverse_map(flat_slots, num_slots)  # [S] assignment t*k + j in each slot, -1 if empty
    filled = slot_assignment >= 0  # [S]
    slot_tokens = slot_assignment // num_choices  # [S] (where filled)
    reads = ops.minimum(flat_slots, num_slots - 1)  # [T*k] a valid row everywhere; masked where not kept
    slot_inputs = _move_rows(tokens, slot_tokens, filled, reads, kept, fan_in=num_choices)  # [S, d], empty slots 0
    slot_outputs = ops.cast(run_experts(slot_inputs), "float32")  # [S, d_out]
    gathered = _move_rows(slot_outputs, reads, kept, slot_assignment, filled, fan_in=1)  # [T*k, d_out]
    return ops.reshape(gathered, (-1, num_choices, gathered.shape[-1]))  # [T, k, d_out]


def gather_dispatch(tokens, plan, experts):
    """Gather tokens into slots, run the experts, gather the slots back.

    Each kept assignment names a flat slot `e * C + position`. The inverse
    map (which assignment fills each slot, if any) is computed once on int32
    ids; then both directions, and both of their gradients, are row gathers:
    no `[T, E, C]` tensor and no scatter of rows. Dropped assignments read
    exactly 0.

    Args and returns: as `einsum_dispatch`.
    """
    num_experts, capacity = plan.num_experts, plan.capacity
    num_slots = num_experts * capacity
    dim = tokens.shape[-1]
    slots = plan.indices * capacity + plan.positions  # [T, k]

    def run(slot_inputs):  # [E*C, d] -> [E*C, d_out]
        outputs = experts(ops.reshape(slot_inputs, (num_experts, capacity, dim)))  # [E, C, d_out]
        return ops.reshape(outputs, (num_slots, outputs.shape[-1]))

    gathered = _slot_dispatch(tokens, slots, plan.keep, num_slots, run)  # [T, k, d_out]
    return ops.sum(gathered * ops.cast(plan.combine_weights, "float32")[..., None], axis=1)  # [T, d_out]


def dropless_block_size(num_assignments, num_experts):
    """Rows per block of the dropless dispatch: a power of two in [8, 128].

    Padding costs up to `E * (b - 1)` rows of wasted expert compute, while
    every block reads (and, in the backward pass, writes) its expert's
    weights once, and its weight gradient is a full `[d, h]` matrix: `k*T / b + E`
    of them. The largest power of two `b <= sqrt(32 * k*T / E)` (at least 8,
    at most 128) was the fastest block size on a 2-core CPU under XLA
    (T = 4096, d = 128, h = 256: b = 64 at E = 64, 128 at E = 16; MNIST's
    T = 128, E = 8: b = 32).

    Args:
        num_assignments: `k*T` (a Python int, or a scalar tensor when the
            batch size is known only at run time).
        num_experts: E.

    Returns:
        The block size: an int, or an int32 scalar tensor for a tensor input.

    Example:
    >>> dropless_block_size(num_assignments=8192, num_experts=64)
    64
    >>> dropless_block_size(num_assignments=256, num_experts=8)
    32
    """
    # Doubling b while 2b <= sqrt(32A/E), i.e. while b*b*E <= 8A: integer arithmetic, the same on both paths.
    if _checks.is_int(num_assignments):
        return 8 + sum(b for b in (8, 16, 32, 64) if b * b * num_experts <= 8 * num_assignments)
    a = ops.cast(num_assignments, "int32")
    return 8 + sum(b * ops.cast(b * b * num_experts <= 8 * a, "int32") for b in (8, 16, 32, 64))


def dropless_layout(indices, keep, num_experts, block):
    """Where each (token, choice) goes in the dropless buffer, and which expert runs each block.

    Expert e's kept assignments take the rows `start[e], start[e] + 1, ...`
    in queue order (first choices before second choices, then token order,
    as `capacity_positions`), where `start` is the exclusive cumulative sum
    of the experts' counts, each rounded up to a multiple of `block`. So
    every block of `block` rows holds the assignments of one expert only,
    padded with empty (zero) rows.

    Args:
        indices: `[T, k]` chosen experts.
        keep: `[T, k]`, 1 for a real assignment, 0 for padding tokens.
        num_experts: E.
        block: rows per block (an int, or a scalar tensor).

    Returns:
        `(rows, block_experts, num_rows)`: `rows` `[T, k]` int32, the buffer
        row of each assignment (`num_rows` for an assignment not kept: the
        discarded trash row); `block_experts` `[num_rows // block]` int32,
        the expert of each block (blocks past the used rows are empty and
        name expert E - 1); `num_rows` the buffer size
        `floor((T*k + E*(block-1)) / block) * block <= T*k + E*block` (an int when T and
        `block` are; else a scalar tensor that XLA folds to a constant,
        since it depends on shapes only).
    """
    num_tokens, num_choices = ops.shape(indices)[0], indices.shape[-1]
    one_hot = ops.one_hot(indices, num_experts, dtype="int32") * ops.cast(keep, "int32")[..., None]  # [T, k, E]
    queue = ops.reshape(ops.transpose(one_hot, (1, 0, 2)), (-1, num_experts))  # [k*T, E], choice-major
    before = ops.cumsum(queue, axis=0) - queue  # exclusive cumsum  [k*T, E]
    positions = ops.sum(before * queue, axis=-1)  # [k*T] rank of the assignment within its expert
    positions = ops.transpose(ops.reshape(positions, (num_choices, -1)), (1, 0))  # [T, k]
    counts = ops.sum(queue, axis=0)  # [E] assignments per expert
    padded = (counts + block - 1) // block * block  # [E] rows per expert, a multiple of block
    ends = ops.cumsum(padded)  # [E]
    starts = ends - padded  # [E]
    # Expert e uses ceil(n_e / b) * b <= n_e + b - 1 rows, so all of them use at most k*T + E*(b - 1) rows,
    # a multiple of b: floor((k*T + E*(b - 1)) / b) blocks always suffice (one at least).
    num_blocks = (num_tokens * num_choices + num_experts * (block - 1)) // block
    num_blocks = max(1, num_blocks) if _checks.is_int(num_blocks) else ops.maximum(1, num_blocks)
    num_rows = num_blocks * block
    rows = ops.take(starts, indices) + positions  # [T, k]
    rows = ops.where(keep > 0, rows, num_rows)
    block_starts = ops.arange(0, num_rows, block, dtype="int32")  # [B]
    block_experts = ops.sum(ops.cast(ends[None, :] <= block_starts[:, None], "int32"), axis=-1)  # [B]
    block_experts = ops.minimum(block_experts, num_experts - 1)  # unused tail blocks: zero rows, any expert
    return ops.cast(rows, "int32"), ops.cast(block_experts, "int32"), num_rows


def dropless_dispatch(tokens, plan, experts, block=None):
    """Every assignment runs, at about `k*T` rows of expert compute (MegaBlocks-style blocks).

    Tokens are gathered into a buffer where each expert's assignments sit
    together, padded to whole blocks (`dropless_layout`); the buffer is cut
    into `[B, block, d]` blocks, block j runs through expert
    `block_experts[j]` (`experts(x, expert_ids=...)`), and each assignment's
    row is gathered back and weighted. Nothing is dropped, whatever the
    load: the buffer holds `T*k` rows plus at most `block - 1` padding rows
    per expert.

    Args:
        tokens: `[T, d]`.
        plan: a `SlotPlan` without capacity (`keep` is 0 only for padding
            tokens; positions and capacity are not used).
        experts: a callable `experts(inputs [B, b, d], expert_ids=[B]) -> [B, b, d_out]`,
            e.g. a `moe_tf.layers.Experts`.
        block: rows per block; None picks `dropless_block_size`.

    Returns:
        `[T, d_out]` float32 outputs.
    """
    indices, keep, num_experts = plan.indices, plan.keep, plan.num_experts
    num_tokens, num_choices = ops.shape(tokens)[0], indices.shape[-1]
    if block is None:
        block = dropless_block_size(num_tokens * num_choices, num_experts)
    rows, block_experts, num_rows = dropless_layout(indices, keep, num_experts, block)  # [T, k], [B]
    dim = tokens.shape[-1]

    def run(buffer):  # [R, d] -> [R, d_out], block j through expert block_experts[j]
        blocks = ops.reshape(buffer, (num_rows // block, block, dim))  # [B, b, d]
        outputs = experts(blocks, expert_ids=block_experts)  # [B, b, d_out]
        return ops.reshape(outputs, (num_rows, outputs.shape[-1]))

    gathered = _slot_dispatch(tokens, rows, keep, num_rows, run)  # [T, k, d_out], padding reads 0
    return ops.sum(gathered * ops.cast(plan.combine_weights, "float32")[..., None], axis=1)  # [T, d_out]


def dense_dispatch(tokens, plan, experts):
    """The dense mixture: every expert runs on every token, `sum_e gate_e * expert_e(x)`.

    The experts read the `[T, d]` tokens once (`Experts` takes a shared
    rank-2 input) instead of E broadcast copies `[E, T, d]`.

    Args:
        tokens: `[T, d]`.
        plan: a dense `SlotPlan` (`indices=None`, `gates` and `keep` `[T, E]`).
        experts: a callable mapping `[T, d]` to `[E, T, d_out]`.

    Returns:
        `[T, d_out]` float32 outputs.
    """
    expert_outputs = ops.cast(experts(tokens), "float32")  # [E, T, d_out]
    return ops.einsum("te,eto->to", plan.combine_weights, expert_outputs)  # [T, d_out]


def mask_dispatch(groups, plan, experts):
    """Slots as `dispatch`-weighted sums of tokens; outputs as `combine`-weighted sums of slots.

    With a one-hot `dispatch` (expert choice) a slot holds one token; with a
    softmax over tokens (Soft MoE) it holds an average of all of them. Each
    expert runs once on its slots of every group together (`[E, G*C, d]`).

    Args:
        groups: `[G, n, d]` tokens in routing groups.
        plan: a `MaskPlan` (`dispatch`, `combine`: `[G, n, E, C]`).
        experts: a callable mapping `[E, N, d]` to `[E, N, d_out]`.

    Returns:
        `[G, n, d_out]` float32 outputs.
    """
    x = ops.cast(groups, "float32")
    slots = ops.einsum("gnec,gnd->gecd", plan.dispatch, x)  # [G, E, C, d]
    E, C, dim = slots.shape[1], ops.shape(slots)[2], slots.shape[-1]
    flat = ops.reshape(ops.transpose(slots, (1, 0, 2, 3)), (E, -1, dim))  # [E, G*C, d]: each expert once
    outputs = ops.cast(experts(ops.cast(flat, experts.compute_dtype)), "float32")  # [E, G*C, d_out]
    outputs = ops.transpose(ops.reshape(outputs, (E, -1, C, outputs.shape[-1])), (1, 0, 2, 3))  # [G, E, C, d_out]
    return ops.einsum("gnec,geco->gno", plan.combine, outputs)  # [G, n, d_out]


DISPATCHERS = {"gather": gather_dispatch, "einsum": einsum_dispatch, "dropless": dropless_dispatch}
"""The `SlotPlan` dispatches of sparse routing, by their `MixtureOfExperts(dispatch=...)` name; all `(tokens, plan, experts)`."""

DISPATCH_OPTIONS = tuple(DISPATCHERS)
"""Every value of `MixtureOfExperts(dispatch=...)`."""
