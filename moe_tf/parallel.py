"""Accounting for distributed MoE: where tokens go, and how many bytes move per step.

Expert parallelism puts the E experts of a MoE layer on D devices (E / D
each) while every device holds its own shard of the batch. After routing,
each token travels to the device of each of its k experts and its result
comes back: two **all-to-all** exchanges per MoE layer per step (dispatch,
then combine). Data parallelism instead keeps a copy of every weight on
every device and **all-reduces** the gradients once per step.

    expert_placement(E, D)              [E]    device of each expert (blocks of E/D)
    data_shards(T, D)                   [T]    device of each token (the batch split in D)
    tokens_between_devices(...)         [D, D] assignments sent from device s to device d
    exchange_bytes(counts, d_model)     [D]    bytes each device sends (dispatch + combine)
    all_to_all_bytes(T, d_model, D)     bytes one device sends for uniform routing
    allreduce_bytes(params, D)          bytes one device sends in a ring all-reduce

Conventions: "bytes per device" is what one device **sends** in one training
step for one MoE layer's forward pass (the backward pass repeats the two
exchanges with gradients of the same shapes: double it for a training
step). Traffic a device sends to itself is free and not counted.

These are host-side NumPy calculators (integer counts, exact bytes); tensors
are accepted and converted with `keras.ops.convert_to_numpy`.
"""

import keras
import numpy as np

from moe_tf import _checks
from moe_tf.routing import expert_capacity


def _positive_number(name, value):
    return _checks.number(name, value, strict=True)


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple, int, np.integer)):
        return np.asarray(value)
    return np.asarray(keras.ops.convert_to_numpy(value))


def _as_int_array(name, value):
    array = _to_numpy(value)
    if array.size and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        raise ValueError(f"`{name}` must hold integers; received values of dtype {array.dtype}.")
    return array.astype(np.int64)


def expert_placement(num_experts, num_devices):
    """Device of each expert: contiguous blocks of `num_experts / num_devices`.

    Expert e lives on device `e // (E / D)`, the layout of GShard and Switch
    (experts sharded along their first axis).

    Args:
        num_experts: E, a positive integer divisible by `num_devices`.
        num_devices: D, a positive integer.

    Returns:
        `[E]` int64 NumPy array of device ids in `[0, D)`.

    Example:
    >>> expert_placement(8, 4)
    array([0, 0, 1, 1, 2, 2, 3, 3])
    """
    E = _checks.positive_int("num_experts", num_experts)
    D = _checks.positive_int("num_devices", num_devices)
    if E % D:
        raise ValueError(
            f"`num_experts` must be a multiple of `num_devices` (each device holds E/D whole experts); "
            f"received num_experts={num_experts}, num_devices={num_devices}."
        )
    return np.arange(E, dtype=np.int64) // (E // D)


def data_shards(num_tokens, num_devices):
    """Device of each token when a batch is split in D contiguous shards.

    The split of `tf.distribute.MirroredStrategy` and of `np.array_split`:
    when D does not divide T, the first `T % D` shards get one more token.

    Args:
        num_tokens: T, a positive integer.
        num_devices: D, a positive integer.

    Returns:
        `[T]` int64 NumPy array of device ids, non-decreasing.

    Example:
    >>> data_shards(6, 3)
    array([0, 0, 1, 1, 2, 2])
    """
    T = _checks.positive_int("num_tokens", num_tokens)
    D = _checks.positive_int("num_devices", num_devices)
    sizes = [len(part) for part in np.array_split(np.arange(T), D)]
    return np.repeat(np.arange(D, dtype=np.int64), sizes)


def tokens_between_devices(expert_indices, expert_to_device, source_device, keep=None, num_devices=None):
    """Counts the (token, expert) assignments each device sends to each device.

    Args:
        expert_indices: `[T, k]` (or `[T]` for k = 1) int expert chosen by
            each token, e.g. `indices` of `TopKRouter`.
        expert_to_device: `[E]` int device of each expert (see
            `expert_placement`).
        source_device: `[T]` int device holding each token (see `data_shards`).
        keep: optional `[T, k]` 0/1 mask, 1 for the assignments that are
            sent (e.g. `keep` of `moe_tf.routing.capacity_positions`, or a
            padding mask broadcast to `[T, k]`); None sends them all.
        num_devices: D; None means 1 + the largest device id in
            `expert_to_device` and `source_device`.

    Returns:
        `[D, D]` int64 NumPy array: entry `[s, d]` is the number of
        assignments whose token lives on device s and whose expert lives on
        device d. Row sums are what each device routes, column sums what
        each device's experts receive, the diagonal stays on its device.

    Example:
    >>> tokens_between_devices([[0, 3], [1, 2]], expert_placement(4, 2), [0, 1])
    array([[1, 1],
           [1, 1]])
    """
    indices = _as_int_array("expert_indices", expert_indices)
    if indices.ndim == 1:
        indices = indices[:, None]
    if indices.ndim != 2:
        raise ValueError(f"`expert_indices` must have shape [tokens, k] or [tokens]; received shape {indices.shape}.")
    placement = _as_int_array("expert_to_device", expert_to_device)
    if placement.ndim != 1 or placement.size == 0:
        raise ValueError(f"`expert_to_device` must be a non-empty 1-D array [E]; received shape {placement.shape}.")
    if placement.min() < 0:
        raise ValueError(f"`expert_to_device` must hold device ids >= 0; received min {placement.min()}.")
    source = _as_int_array("source_device", source_device)
    if source.shape != indices.shape[:1]:
        raise ValueError(
            f"`source_device` must have shape [tokens] = {indices.shape[:1]} to match `expert_indices` "
            f"{indices.shape}; received shape {source.shape}."
        )
    if source.size and source.min() < 0:
        raise ValueError(f"`source_device` must hold device ids >= 0; received min {source.min()}.")
    num_experts = placement.size
    if indices.size and (indices.min() < 0 or indices.max() >= num_experts):
        raise ValueError(
            f"`expert_indices` must lie in [0, {num_experts}) (E = len(expert_to_device)); "
            f"received values in [{indices.min()}, {indices.max()}]."
        )
    used = int(max(placement.max(), source.max() if source.size else 0)) + 1
    if num_devices is None:
        num_devices = used
    else:
        num_devices = _checks.positive_int("num_devices", num_devices)
        if used > num_devices:
            raise ValueError(
                f"device ids in `expert_to_device` and `source_device` must be < num_devices={num_devices}; "
                f"received a device id {used - 1}."
            )
    weights = np.ones(indices.shape, dtype=np.int64)
    if keep is not None:
        keep = _to_numpy(keep)
        if keep.ndim == 1 and indices.shape[1] == 1:
            keep = keep[:, None]
        if keep.shape != indices.shape:
            raise ValueError(f"`keep` must have the shape of `expert_indices`, {indices.shape}; received {keep.shape}.")
        weights = (keep != 0).astype(np.int64)
    counts = np.zeros((num_devices, num_devices), dtype=np.int64)
    destination = placement[indices]  # [T, k]
    np.add.at(counts, (np.broadcast_to(source[:, None], indices.shape), destination), weights)
    return counts


def exchange_bytes(counts, d_model, bytes_per_value=4):
    """Bytes each device sends in one dispatch + combine, from measured counts.

    Dispatch: device s sends `counts[s, d]` token vectors to every other
    device d. Combine: device d sends the `counts[s, d]` expert outputs back
    to s. So device i sends `(row_i + column_i - 2 * counts[i, i])` vectors of
    `d_model` values.

    Args:
        counts: `[D, D]` assignments from `tokens_between_devices`.
        d_model: width of a token vector (the MoE layer's input and output).
        bytes_per_value: 4 for float32, 2 for bfloat16/float16.

    Returns:
        `[D]` int64 NumPy array of bytes sent by each device.

    Example:
    >>> exchange_bytes([[5, 3], [1, 7]], d_model=10, bytes_per_value=2)  # (3 + 1) * 10 * 2 each
    array([80, 80])
    """
    counts = _as_int_array("counts", counts)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"`counts` must be a square [D, D] matrix; received shape {counts.shape}.")
    if counts.size and counts.min() < 0:
        raise ValueError(f"`counts` must be >= 0; received min {counts.min()}.")
    d_model = _checks.positive_int("d_model", d_model)
    bytes_per_value = _checks.positive_int("bytes_per_value", bytes_per_value)
    local = np.diag(counts)
    vectors = counts.sum(axis=1) - local + counts.sum(axis=0) - local
    return vectors * d_model * bytes_per_value


def all_to_all_bytes(tokens, d_model, num_devices, k=1, bytes_per_value=4, capacity_factor=None, num_experts=None):
    """Bytes one device sends in a MoE layer's dispatch + combine, for uniform routing.

    Each device routes its `tokens` to k experts each. With uniform routing a
    fraction `(D - 1) / D` of the assignments leave the device, in both
    directions:

        2 * slots * d_model * bytes_per_value * (D - 1) / D

    `slots = tokens * k` without a capacity. With a capacity factor the
    exchange uses fixed-size buffers (GShard, Switch: static shapes for the
    compiler), so it moves every slot, full or padding:
    `slots = E * ceil(capacity_factor * k * tokens / E)`.

    Args:
        tokens: tokens per device (its routing group) per step.
        d_model: width of a token vector.
        num_devices: D.
        k: experts per token.
        bytes_per_value: 4 for float32, 2 for bfloat16.
        capacity_factor: None (send exactly the routed assignments) or a
            number > 0 (send the padded capacity buffers).
        num_experts: E, needed with `capacity_factor`.

    Returns:
        A float, bytes sent by one device (0 for D = 1).

    Example:
    >>> all_to_all_bytes(tokens=1024, d_model=512, num_devices=4, k=2, bytes_per_value=2)
    3145728.0
    """
    tokens = _checks.positive_int("tokens", tokens)
    d_model = _checks.positive_int("d_model", d_model)
    D = _checks.positive_int("num_devices", num_devices)
    k = _checks.positive_int("k", k)
    bytes_per_value = _checks.positive_int("bytes_per_value", bytes_per_value)
    if capacity_factor is None:
        slots = tokens * k
    else:
        _positive_number("capacity_factor", capacity_factor)
        if num_experts is None:
            raise ValueError(
                "`num_experts` is needed with `capacity_factor` (the buffers hold E * ceil(cf * k * T / E) slots); "
                f"received num_experts=None with capacity_factor={capacity_factor!r}."
            )
        E = _checks.positive_int("num_experts", num_experts)
        _checks.top_k(k, E)
        slots = E * expert_capacity(tokens, E, k, capacity_factor)
    return 2.0 * slots * d_model * bytes_per_value * (D - 1) / D


def allreduce_bytes(num_params, num_devices, bytes_per_value=4):
    """Bytes one device sends in a ring all-reduce of `num_params` gradients.

    A ring all-reduce is a reduce-scatter then an all-gather, each moving
    `(D - 1) / D` of the buffer: `2 * (D - 1) / D * num_params * bytes`. It is
    the cost of data parallelism per step, whatever the batch size.

    Args:
        num_params: number of values reduced (the replicated parameters).
        num_devices: D.
        bytes_per_value: 4 for float32 gradients, 2 for bfloat16.

    Returns:
        A float, bytes sent by one device (0 for D = 1).

    Example:
    >>> allreduce_bytes(1_000_000, num_devices=4)
    6000000.0
    """
    num_params = _checks.positive_int("num_params", num_params)
    D = _checks.positive_int("num_devices", num_devices)
    bytes_per_value = _checks.positive_int("bytes_per_value", bytes_per_value)
    return 2.0 * (D - 1) / D * num_params * bytes_per_value
