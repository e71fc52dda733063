"""Grades exercise 9: scatter/gather dispatch and combine, and the one-hot dispatch tensor (GShard / Switch)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from moe_tf.dispatch import dispatch_and_combine_tensors
from moe_tf.routing import capacity_positions, expert_capacity

EXERCISE = "ex09_dispatch"

# Fast, deterministic grading: no example database written, no shrinking or explain phase.
_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _np(x):
    return np.asarray(x, dtype=np.float64)


def _routing(seed, num_tokens=6, num_experts=3, k=2, dim=4, capacity_factor=0.75):
    """Random top-k routing with a tight capacity (some assignments are dropped)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_tokens, dim)).astype(np.float32)
    indices = np.argsort(-rng.normal(size=(num_tokens, num_experts)), axis=-1)[:, :k].astype(np.int32)
    gates = rng.dirichlet(np.ones(k), size=num_tokens).astype(np.float32)
    capacity = max(1, expert_capacity(num_tokens, num_experts, k, capacity_factor))
    positions, keep = _positions(indices, num_experts, capacity)
    return x, indices, gates, positions, keep, capacity


def _positions(indices, num_experts, capacity):
    """Capacity slots (exercise 8) in numpy: first choices first, then token order, exclusive cumsum."""
    num_tokens, k = indices.shape
    queue = np.eye(num_experts, dtype=np.int64)[indices].transpose(1, 0, 2).reshape(k * num_tokens, num_experts)
    positions = ((np.cumsum(queue, axis=0) - queue) * queue).sum(-1).reshape(k, num_tokens).T
    return positions, positions < capacity


def _affine_experts(num_experts, dim, dim_out, seed=1):
    """Expert e maps a row h to h @ W[e] + b[e]; the bias makes an empty slot's output non-zero."""
    rng = np.random.default_rng(seed)
    kernels = rng.normal(size=(num_experts, dim, dim_out))
    biases = rng.normal(size=(num_experts, dim_out)) + 3.0

    def experts(h):
        return np.einsum("ecd,edo->eco", _np(h), kernels) + biases[:, None, :]

    def one(e, row):
        return row @ kernels[e] + biases[e]

    return experts, one


def _expected_outputs(x, indices, gates, keep, one_expert, dim_out):
    y = np.zeros((x.shape[0], dim_out))
    for t in range(x.shape[0]):
        for j in range(indices.shape[1]):
            if keep[t, j]:
                y[t] += gates[t, j] * one_expert(indices[t, j], _np(x[t]))
    return y


@pytest.mark.points(2)
def test_dispatch_tokens_worked_example(ex):
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    indices = np.array([[0, 1], [0, 1], [0, 1]], np.int32)
    positions = np.array([[0, 0], [1, 1], [2, 2]], np.int32)  # as capacity_positions would give
    keep = np.array([[True, True], [True, True], [False, False]])  # capacity 2: token 2 dropped twice
    got = _np(ex.dispatch_tokens(x, indices, positions, keep, 2, 2))
    expected = np.array([[[1, 2], [3, 4]], [[1, 2], [3, 4]]], np.float64)
    assert got.shape == (2, 2, 2), f"expert inputs must have shape [E, C, d] = (2, 2, 2); got {got.shape}"
    assert np.allclose(got, expected), (
        f"expert inputs should be {expected.tolist()} (token 2 is dropped from both experts); got {got.tolist()}"
    )
    keep = np.array([[True, False], [False, False], [False, False]])
    got = _np(ex.dispatch_tokens(x, indices, positions, keep, 2, 3))
    expected = np.zeros((2, 3, 2))
    expected[0, 0] = [1, 2]
    assert np.array_equal(got, expected), (
        f"with only token 0's first choice kept and capacity 3, every other slot must be zeros: expected "
        f"{expected.tolist()}, got {got.tolist()}"
    )


@pytest.mark.points(2)
def test_dropped_assignments_contribute_exactly_zero(ex):
    x = np.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 4.0]], np.float32)
    indices = np.array([[0, 1], [0, 1], [0, 1]], np.int32)
    gates = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]], np.float32)
    positions, keep = capacity_positions(indices, 2, 2)  # token 2 loses both choices
    positions, keep = np.asarray(positions), np.asarray(keep) > 0
    assert np.array_equal(_positions(indices, 2, 2)[0], positions)  # the test's helper agrees with moe_tf
    experts, one = _affine_experts(2, 2, 2)
    y = _np(ex.moe_forward(x, indices, gates, positions, keep, experts, 2, 2))
    assert y.shape == (3, 2), f"outputs must have shape [T, d_out] = (3, 2); got {y.shape}"
    assert np.array_equal(y[2], np.zeros(2)), (
        f"token 2 had both choices dropped, so its output must be exactly [0, 0] (not x*gate, not an empty "
        f"slot's output); got {y[2].tolist()}"
    )
    expected = _expected_outputs(x, indices, gates, keep, one, 2)
    assert np.allclose(y, expected, atol=1e-5), f"outputs should be {expected.round(4).tolist()}; got {y.tolist()}"
    # combine_outputs alone: a dropped choice reads 0 even when its position points past the buffer.
    outs = np.arange(1.0, 5.0).reshape(2, 2, 1)  # E=2, C=2: every slot non-zero
    got = _np(
        ex.combine_outputs(
            outs, np.array([[0, 1]]), np.array([[1, 5]]), np.array([[True, False]]), np.array([[0.5, 0.5]])
        )
    )
    assert np.allclose(got, [[1.0]]), (
        f"combine_outputs with one kept choice (gate 0.5, output 2.0) and one dropped choice (position 5 past "
        f"capacity 2) should give [[1.0]]; got {got.tolist()}"
    )


@st.composite
def _cases(draw):
    num_experts = draw(st.integers(1, 5))
    k = draw(st.integers(1, min(num_experts, 3)))
    num_tokens = draw(st.integers(1, 10))
    factor = draw(st.sampled_from([0.5, 1.0, 1.25, 2.0]))
    return draw(st.integers(0, 1000)), num_tokens, num_experts, k, factor


@pytest.mark.points(2)
@given(_cases())
@_SETTINGS
def test_moe_forward_matches_per_token_sum_property(ex, case):
    seed, num_tokens, num_experts, k, factor = case
    x, indices, gates, positions, keep, capacity = _routing(seed, num_tokens, num_experts, k, 3, factor)
    experts, one = _affine_experts(num_experts, 3, 2, seed=seed + 1)
    y = _np(ex.moe_forward(x, indices, gates, positions, keep, experts, num_experts, capacity))
    expected = _expected_outputs(x, indices, gates, keep, one, 2)
    assert y.shape == expected.shape, f"outputs must have shape [T, d_out] = {expected.shape}; got {y.shape}"
    assert np.allclose(y, expected, atol=1e-4), (
        f"y[t] must be sum over kept choices of gate * expert(x[t]) (T={num_tokens}, E={num_experts}, k={k}, "
        f"capacity={capacity}); max abs error {np.abs(y - expected).max():.3g}"
    )


@pytest.mark.points(2)
def test_dispatch_mask_is_binary_and_agrees_with_scatter(ex):
    for seed in range(3):
        x, indices, gates, positions, keep, capacity = _routing(seed, num_tokens=8, num_experts=4, k=2)
        mask = _np(ex.dispatch_mask(indices, positions, keep, 4, capacity))
        assert mask.shape == (8, 4, capacity), (
            f"dispatch mask must have shape [T, E, C] = (8, 4, {capacity}); got {mask.shape}"
        )
        assert set(np.unique(mask)) <= {0.0, 1.0}, (
            f"the dispatch mask must be binary (0/1), never a gate; got values {np.unique(mask)}"
        )
        assert mask.sum() == keep.sum(), (
            f"the mask must hold one 1 per kept assignment ({keep.sum()}); it holds {mask.sum()}"
        )
        expected, _ = dispatch_and_combine_tensors(
            indices, positions, gates * keep, keep.astype(np.float32), 4, capacity
        )
        assert np.array_equal(mask, _np(expected)), f"dispatch mask differs from the expected one (seed {seed})"
        scattered = _np(ex.dispatch_tokens(x, indices, positions, keep, 4, capacity))
        assert np.allclose(np.einsum("tec,td->ecd", mask, _np(x)), scattered, atol=1e-6), (
            "einsum('tec,td->ecd', dispatch_mask, x) must equal dispatch_tokens(x, ...)"
        )


@pytest.mark.points(1)
def test_combine_weights_agree_with_gather(ex):
    x, indices, gates, positions, keep, capacity = _routing(7, num_tokens=8, num_experts=4, k=2)
    combine = _np(ex.combine_weights(indices, positions, keep, gates, 4, capacity))
    mask = _np(ex.dispatch_mask(indices, positions, keep, 4, capacity))
    assert combine.shape == (8, 4, capacity), f"combine weights must have shape [T, E, C]; got {combine.shape}"
    assert np.allclose(combine.sum(axis=(1, 2)), (gates * keep).sum(axis=1), atol=1e-6), (
        "each token's combine weights must sum to its kept gates"
    )
    assert np.all((combine != 0) <= (mask != 0)), "combine weights must be non-zero only where the dispatch mask is 1"
    experts, _ = _affine_experts(4, x.shape[1], 3)
    outs = experts(ex.dispatch_tokens(x, indices, positions, keep, 4, capacity))
    gathered = _np(ex.combine_outputs(outs, indices, positions, keep, gates))
    assert np.allclose(np.einsum("tec,eco->to", combine, outs), gathered, atol=1e-5), (
        "einsum('tec,eco->to', combine_weights, expert_outputs) must equal combine_outputs(expert_outputs, ...)"
    )


@pytest.mark.points(1)
def test_keep_may_be_bool_or_0_1(ex):
    """`keep` is documented as bool or 0/1: integer and float 0/1 masks must give the bool mask's results."""
    x, indices, gates, positions, keep, capacity = _routing(11, num_tokens=8, num_experts=3, k=2)
    keep[0, 0] = False  # a dropped choice whose position is still in range
    experts, _ = _affine_experts(3, x.shape[1], 2)
    outs = experts(np.zeros((3, capacity, x.shape[1]))) + np.arange(capacity)[None, :, None]
    as_bool = (
        _np(ex.dispatch_tokens(x, indices, positions, keep, 3, capacity)),
        _np(ex.combine_outputs(outs, indices, positions, keep, gates)),
        _np(ex.dispatch_mask(indices, positions, keep, 3, capacity)),
        _np(ex.combine_weights(indices, positions, keep, gates, 3, capacity)),
    )
    for dtype in (np.int32, np.float32):
        other = keep.astype(dtype)
        got = (
            _np(ex.dispatch_tokens(x, indices, positions, other, 3, capacity)),
            _np(ex.combine_outputs(outs, indices, positions, other, gates)),
            _np(ex.dispatch_mask(indices, positions, other, 3, capacity)),
            _np(ex.combine_weights(indices, positions, other, gates, 3, capacity)),
        )
        for name, a, b in zip(("dispatch_tokens", "combine_outputs", "dispatch_mask", "combine_weights"), as_bool, got):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-6), (
                f"{name} with keep given as {np.dtype(dtype).name} 0/1 differs from keep given as bool: treat keep "
                "as a truth value (e.g. np.asarray(keep).astype(bool)), never as indices"
            )


@pytest.mark.points(2)
def test_dropped_choice_reads_nothing_even_from_a_garbage_slot(ex):
    """A dropped assignment contributes exactly 0, even where the slot it points at (or slot 0) holds inf or NaN."""
    outs = np.array([[[2.0], [np.inf]], [[np.nan], [4.0]]])  # E=2, C=2; slots (0, 1) and (1, 0) hold garbage
    indices = np.array([[0, 1], [1, 0], [1, 1]])
    positions = np.array([[0, 0], [1, 1], [0, 5]])  # dropped choices: in range (garbage) or past capacity
    keep = np.array([[True, False], [True, False], [False, False]])
    gates = np.array([[0.75, 0.25], [0.5, 0.5], [0.6, 0.4]])
    with np.errstate(invalid="ignore", over="ignore"):
        got = _np(ex.combine_outputs(outs, indices, positions, keep, gates))
    expected = np.array([[1.5], [2.0], [0.0]])
    assert np.all(np.isfinite(got)) and np.array_equal(got, expected), (
        f"expected {expected.tolist()}: only kept choices are read (0.75 * 2.0; 0.5 * 4.0; token 2 dropped twice "
        f"gives exactly 0). Got {got.tolist()}: multiplying a gathered inf or NaN by keep = 0 still gives NaN; "
        "select with np.where (or never gather a dropped choice) instead of multiplying by the mask"
    )
    # Through moe_forward: a normalising expert h / |h| returns NaN on an empty (all-zero) slot.
    x = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    indices = np.array([[0, 1], [0, 1], [0, 1]])
    gates = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    positions, keep = _positions(indices, 2, 3)
    keep[1, 1] = keep[2, 0] = False  # slot 1 of expert 1 and slot 2 of expert 0 stay empty

    def normalise(h):
        with np.errstate(invalid="ignore", divide="ignore"):
            return _np(h) / np.linalg.norm(_np(h), axis=-1, keepdims=True)

    with np.errstate(invalid="ignore", over="ignore"):
        y = _np(ex.moe_forward(x, indices, gates, positions, keep, normalise, 2, 3))
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    expected = unit * np.where(keep, gates, 0.0).sum(axis=1, keepdims=True)
    assert np.all(np.isfinite(y)) and np.allclose(y, expected, atol=1e-12), (
        f"with experts h / |h| (NaN on an empty slot, whose input is all zeros) the outputs should be "
        f"{expected.round(4).tolist()}; got {y.round(4).tolist()}: the output of an empty slot, or of a dropped "
        "choice, must never reach a token"
    )


@pytest.mark.points(1)
def test_capacity_zero_drops_everything(ex):
    """Capacity 0: every buffer is empty ([E, 0, d]), every assignment is dropped, every output is exactly 0."""
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    indices, gates = np.array([[0, 1], [1, 0]]), np.array([[0.5, 0.5], [0.3, 0.7]])
    positions, keep = np.array([[0, 0], [0, 1]]), np.zeros((2, 2), bool)
    buffer = _np(ex.dispatch_tokens(x, indices, positions, keep, 2, 0))
    assert buffer.shape == (2, 0, 2), (
        f"with capacity 0 the expert inputs must have shape [E, 0, d] = (2, 0, 2); got {buffer.shape}"
    )
    experts, _ = _affine_experts(2, 2, 3)
    y = _np(ex.moe_forward(x, indices, gates, positions, keep, experts, 2, 0))
    assert y.shape == (2, 3) and np.array_equal(y, np.zeros((2, 3))), (
        f"with capacity 0 every choice is dropped, so every token outputs exactly 0 with shape [T, d_out] = (2, 3); "
        f"got {y.tolist()} (shape {y.shape})"
    )
    mask = _np(ex.dispatch_mask(indices, positions, keep, 2, 0))
    combine = _np(ex.combine_weights(indices, positions, keep, gates, 2, 0))
    assert mask.shape == (2, 2, 0) and combine.shape == (2, 2, 0), (
        f"with capacity 0 the dispatch and combine tensors must have shape [T, E, 0] = (2, 2, 0); got "
        f"{mask.shape} and {combine.shape}"
    )


@pytest.mark.points(1)
def test_mask_and_combine_leave_out_dropped_choices_in_range(ex):
    """keep decides, not the position: a dropped choice at a slot < C has no 1 in the mask and no gate in combine."""
    indices = np.array([[0, 1], [0, 1], [1, 0]])
    positions = np.array([[0, 0], [1, 1], [1, 2]])
    keep = np.array([[True, True], [True, False], [False, True]])  # two dropped choices at in-range slots
    gates = np.array([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    mask = _np(ex.dispatch_mask(indices, positions, keep, 2, 3))
    expected = np.zeros((3, 2, 3))
    expected[0, 0, 0] = expected[0, 1, 0] = expected[1, 0, 1] = expected[2, 0, 2] = 1.0
    assert np.array_equal(mask, expected), (
        f"dispatch_mask must hold a 1 only for the kept assignments (token 1's second choice and token 2's first "
        f"are dropped although their positions are in range): expected {expected.tolist()}, got {mask.tolist()}"
    )
    combine = _np(ex.combine_weights(indices, positions, keep, gates, 2, 3))
    expected = np.zeros((3, 2, 3))
    expected[0, 0, 0], expected[0, 1, 0], expected[1, 0, 1], expected[2, 0, 2] = 0.6, 0.4, 0.7, 0.8
    assert np.allclose(combine, expected), (
        f"combine_weights must carry each KEPT assignment's gate at its slot and 0 for dropped ones: expected "
        f"{expected.tolist()}, got {combine.tolist()}"
    )
