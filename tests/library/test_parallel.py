"""moe_tf.parallel: expert placement, token traffic between devices, and communication bytes."""

import numpy as np
import pytest

from moe_tf import parallel
from moe_tf.routing import capacity_positions

# -- placement and shards ------------------------------------------------------


def test_expert_placement_is_contiguous_blocks():
    np.testing.assert_array_equal(parallel.expert_placement(8, 4), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(parallel.expert_placement(4, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(parallel.expert_placement(6, 1), [0] * 6)


@pytest.mark.parametrize("E, D", [(6, 4), (2, 4), (0, 2), (4, 0), (4.0, 2)])
def test_expert_placement_rejects_bad_arguments(E, D):
    with pytest.raises(ValueError, match="num_experts|num_devices"):
        parallel.expert_placement(E, D)


def test_data_shards_split_like_array_split():
    np.testing.assert_array_equal(parallel.data_shards(8, 4), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(parallel.data_shards(7, 3), [0, 0, 0, 1, 1, 2, 2])  # first T % D shards + 1
    with pytest.raises(ValueError, match="num_tokens"):
        parallel.data_shards(0, 2)


# -- tokens between devices ------------------------------------------------------


def test_tokens_between_devices_hand_computed():
    # 4 experts on 2 devices: experts 0, 1 on device 0; experts 2, 3 on device 1.
    placement = parallel.expert_placement(4, 2)
    indices = [[0, 3], [1, 0], [2, 3], [3, 1]]  # tokens 0, 1 on device 0; tokens 2, 3 on device 1
    source = [0, 0, 1, 1]
    counts = parallel.tokens_between_devices(indices, placement, source)
    # token 0: 0->0, 0->1; token 1: 0->0, 0->0; token 2: 1->1, 1->1; token 3: 1->1, 1->0
    np.testing.assert_array_equal(counts, [[3, 1], [1, 3]])
    assert counts.sum() == 8  # every (token, choice) counted once
    assert counts.dtype == np.int64


def test_tokens_between_devices_top1_and_tensors():
    import keras

    indices = keras.ops.convert_to_tensor(np.array([0, 1, 1, 1], dtype="int32"))  # [T] top-1
    counts = parallel.tokens_between_devices(indices, [0, 1], [0, 0, 1, 1])
    np.testing.assert_array_equal(counts, [[1, 1], [0, 2]])


def test_tokens_between_devices_keep_mask_matches_capacity():
    # Expert 0 gets 3 first choices but has capacity 2: the third token's assignment is not sent.
    indices = np.array([[0], [0], [0], [1]])
    _, keep = capacity_positions(indices, num_experts=2, capacity=2)
    counts = parallel.tokens_between_devices(indices, [0, 1], [0, 1, 1, 1], keep=np.asarray(keep))
    np.testing.assert_array_equal(counts, [[1, 0], [1, 1]])  # token 2 (device 1 -> expert 0) dropped


def test_tokens_between_devices_num_devices_pads_idle_devices():
    counts = parallel.tokens_between_devices([[0], [1]], [0, 1], [0, 0], num_devices=4)
    assert counts.shape == (4, 4)
    np.testing.assert_array_equal(counts[0], [1, 1, 0, 0])
    assert counts[1:].sum() == 0


def test_tokens_between_devices_row_and_column_sums():
    rng = np.random.default_rng(0)
    E, D, T, k = 8, 4, 100, 2
    indices = np.stack([rng.permutation(E)[:k] for _ in range(T)])  # distinct experts per token
    counts = parallel.tokens_between_devices(indices, parallel.expert_placement(E, D), parallel.data_shards(T, D))
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(parallel.data_shards(T, D)) * k)
    per_expert = np.bincount(indices.ravel(), minlength=E)
    np.testing.assert_array_equal(counts.sum(axis=0), per_expert.reshape(D, E // D).sum(axis=1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"expert_indices": [[0, 4]], "expert_to_device": [0, 0, 1, 1], "source_device": [0]}, "expert_indices"),
        ({"expert_indices": [[0, -1]], "expert_to_device": [0, 0, 1, 1], "source_device": [0]}, "expert_indices"),
        ({"expert_indices": [[0.5]], "expert_to_device": [0, 1], "source_device": [0]}, "expert_indices"),
        ({"expert_indices": [[0], [1]], "expert_to_device": [0, 1], "source_device": [0]}, "source_device"),
        ({"expert_indices": [[0]], "expert_to_device": [0, -1], "source_device": [0]}, "expert_to_device"),
        ({"expert_indices": [[0]], "expert_to_device": [], "source_device": [0]}, "expert_to_device"),
        ({"expert_indices": [[0]], "expert_to_device": [0, 1], "source_device": [0], "keep": [[1, 1]]}, "keep"),
        ({"expert_indices": [[0]], "expert_to_device": [0, 3], "source_device": [0], "num_devices": 2}, "num_devices"),
        ({"expert_indices": np.zeros((1, 1, 1), int), "expert_to_device": [0], "source_device": [0]}, "expert_indices"),
    ],
)
def test_tokens_between_devices_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        parallel.tokens_between_devices(**kwargs)


# -- bytes -----------------------------------------------------------------------------


def test_exchange_bytes_hand_computed():
    # device 0 sends 3 token vectors (dispatch) and 1 result (combine); device 1 sends 1 + 3.
    np.testing.assert_array_equal(parallel.exchange_bytes([[5, 3], [1, 7]], d_model=10, bytes_per_value=2), [80, 80])
    # Nothing leaves a device when every token's expert is local.
    np.testing.assert_array_equal(parallel.exchange_bytes(np.diag([4, 5, 6]), d_model=8), [0, 0, 0])
    # Asymmetric: 3 devices, device 0 sends 2 to device 1 and 1 to device 2; nothing else.
    counts = [[0, 2, 1], [0, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(parallel.exchange_bytes(counts, d_model=1, bytes_per_value=1), [3, 2, 1])


def test_exchange_bytes_matches_uniform_formula_on_uniform_counts():
    D, T, k, d = 4, 64, 2, 16
    counts = np.full((D, D), T * k // D)  # perfectly uniform routing
    sent = parallel.exchange_bytes(counts, d_model=d)
    assert np.all(sent == parallel.all_to_all_bytes(T, d, D, k=k))


def test_all_to_all_bytes_hand_computed():
    # 2 * 1024 * 2 * 512 * 2 bytes * 3/4
    assert parallel.all_to_all_bytes(1024, 512, 4, k=2, bytes_per_value=2) == 3_145_728.0
    assert parallel.all_to_all_bytes(100, 8, 1) == 0.0  # one device: nothing leaves
    # capacity buffers: E = 4, C = ceil(1.25 * 1 * 10 / 4) = 4, slots = 16 instead of 10
    assert parallel.all_to_all_bytes(10, 1, 2, k=1, bytes_per_value=1, capacity_factor=1.25, num_experts=4) == 16.0
    # the volume does not depend on E without a capacity, and grows to 2 * T * k * d * bytes as D grows
    big = parallel.all_to_all_bytes(1000, 10, 10_000, k=2, bytes_per_value=1)
    assert 40_000 * 0.999 < big < 40_000


def test_allreduce_bytes_hand_computed():
    assert parallel.allreduce_bytes(1_000_000, 4) == 6_000_000.0  # 2 * 3/4 * 1e6 * 4 bytes
    assert parallel.allreduce_bytes(10, 2, bytes_per_value=2) == 20.0
    assert parallel.allreduce_bytes(10, 1) == 0.0


@pytest.mark.parametrize(
    "fn, kwargs, match",
    [
        (parallel.all_to_all_bytes, {"tokens": 0, "d_model": 4, "num_devices": 2}, "tokens"),
        (parallel.all_to_all_bytes, {"tokens": 4, "d_model": 4, "num_devices": 0}, "num_devices"),
        (parallel.all_to_all_bytes, {"tokens": 4, "d_model": 4, "num_devices": 2, "k": 0}, "`k`"),
        (
            parallel.all_to_all_bytes,
            {"tokens": 4, "d_model": 4, "num_devices": 2, "bytes_per_value": 0},
            "bytes_per_value",
        ),
        (
            parallel.all_to_all_bytes,
            {"tokens": 4, "d_model": 4, "num_devices": 2, "capacity_factor": 1.0},
            "num_experts",
        ),
        (
            parallel.all_to_all_bytes,
            {"tokens": 4, "d_model": 4, "num_devices": 2, "capacity_factor": 0, "num_experts": 2},
            "capacity_factor",
        ),
        (
            parallel.all_to_all_bytes,
            {"tokens": 4, "d_model": 4, "num_devices": 2, "k": 3, "capacity_factor": 1.0, "num_experts": 2},
            "`k`",
        ),
        (parallel.allreduce_bytes, {"num_params": 0, "num_devices": 2}, "num_params"),
        (parallel.allreduce_bytes, {"num_params": 10, "num_devices": -1}, "num_devices"),
        (parallel.exchange_bytes, {"counts": [[1, 2, 3]], "d_model": 4}, "counts"),
        (parallel.exchange_bytes, {"counts": [[1, -2], [0, 0]], "d_model": 4}, "counts"),
        (parallel.exchange_bytes, {"counts": [[1]], "d_model": 0}, "d_model"),
    ],
)
def test_byte_calculators_reject_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
