"""Grades exercise 10: padding tokens route nowhere, take no slot, output 0 and leave the balance loss alone."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from moe_tf.losses import switch_balance_loss
from moe_tf.routing import capacity_positions

EXERCISE = "ex10_padding"

# Fast, deterministic grading: no example database written, no shrinking or explain phase.
_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

DIM, HIDDEN, EXPERTS = 4, 5, 3


def _np(x):
    return np.asarray(x, dtype=np.float64)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(DIM, EXPERTS)),
        rng.normal(size=(EXPERTS, DIM, HIDDEN)),
        rng.normal(size=(EXPERTS, HIDDEN, DIM)),
    )


def _reference_forward(x, router, w_in, w_out, k):
    """Per-token loop, no capacity limit and no padding: the values the real tokens must get."""
    logits = x @ router
    y = np.zeros((x.shape[0], w_out.shape[-1]))
    for t in range(x.shape[0]):
        chosen = np.argsort(-logits[t], kind="stable")[:k]
        gates = np.exp(logits[t, chosen] - logits[t, chosen].max())
        gates /= gates.sum()
        for g, e in zip(gates, chosen):
            y[t] += g * (np.maximum(x[t] @ w_in[e], 0.0) @ w_out[e])
    return y


@pytest.mark.points(2)
def test_padding_takes_no_slot_worked_example(ex):
    positions, keep = ex.masked_capacity_positions(np.array([[0], [0], [0], [1]]), 2, 1, np.array([0, 1, 1, 1]))
    positions, keep = np.asarray(positions), np.asarray(keep).astype(bool)
    assert keep.shape == (4, 1), f"keep must have shape [T, k] = (4, 1); got {keep.shape}"
    assert keep[:, 0].tolist() == [False, True, False, True], (
        "indices [[0],[0],[0],[1]], mask [0,1,1,1], capacity 1: the padding token 0 must take no slot, so token 1 "
        f"gets expert 0's only slot; expected keep [False, True, False, True], got {keep[:, 0].tolist()}"
    )
    assert positions[1:, 0].tolist() == [0, 1, 0], (
        f"the real tokens' positions must ignore the padding: expected [0, 1, 0] for tokens 1..3, got "
        f"{positions[1:, 0].tolist()}"
    )


@st.composite
def _masked_routing(draw):
    num_experts = draw(st.integers(1, 5))
    k = draw(st.integers(1, min(num_experts, 3)))
    num_tokens = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    indices = np.stack([rng.permutation(num_experts)[:k] for _ in range(num_tokens)]).astype(np.int32)
    mask = np.array(draw(st.lists(st.booleans(), min_size=num_tokens, max_size=num_tokens)))
    capacity = draw(st.integers(0, num_tokens))
    return indices, num_experts, capacity, mask


@pytest.mark.points(2)
@given(_masked_routing())
@_SETTINGS
def test_masked_positions_match_reference_property(ex, case):
    indices, num_experts, capacity, mask = case
    positions, keep = ex.masked_capacity_positions(indices, num_experts, capacity, mask)
    positions, keep = np.asarray(positions), np.asarray(keep).astype(bool)
    ref_positions, ref_keep = capacity_positions(indices, num_experts, capacity, token_mask=mask.astype(np.float32))
    ref_positions, ref_keep = np.asarray(ref_positions), np.asarray(ref_keep) > 0
    assert np.array_equal(keep, ref_keep), (
        f"keep for indices={indices.tolist()}, mask={mask.astype(int).tolist()}, capacity={capacity} should be "
        f"{ref_keep.tolist()}; got {keep.tolist()}"
    )
    assert np.array_equal(positions[mask], ref_positions[mask]), (
        f"the real tokens' positions should be {ref_positions[mask].tolist()} (padding takes no slot); "
        f"got {positions[mask].tolist()}"
    )


@pytest.mark.points(2)
def test_balance_loss_counts_real_tokens_only(ex):
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.0, 1.0]])
    got = float(ex.masked_balance_loss(probs, np.array([[0], [1], [1]]), np.array([1, 1, 0])))
    assert np.isclose(got, 1.0), (
        "probs [[0.9,0.1],[0.4,0.6],[0,1]], indices [[0],[1],[1]], mask [1,1,0]: f = (1/2, 1/2), P = (0.65, 0.35) "
        f"over the 2 real tokens, loss = 2*(0.5*0.65 + 0.5*0.35) = 1.0; got {got}"
    )
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(10, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    indices = np.argsort(-logits, axis=-1)[:, :2]
    mask = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0])
    expected = float(switch_balance_loss(probs.astype(np.float32), np.eye(4)[indices], mask=mask.astype(np.float32)))
    got = float(ex.masked_balance_loss(probs, indices, mask))
    assert np.isclose(got, expected, atol=1e-5), (
        f"balance loss E * sum f_i P_i over the 6 real tokens (k=2) should be {expected:.5f}; got {got:.5f}"
    )
    real = mask > 0
    alone = float(ex.masked_balance_loss(probs[real], indices[real], np.ones(real.sum())))
    assert np.isclose(got, alone, atol=1e-6), (
        f"the loss with padding masked ({got:.5f}) must equal the loss of the real tokens alone ({alone:.5f})"
    )


@pytest.mark.points(1)
def test_forward_values_and_zero_padding(ex):
    router, w_in, w_out = _weights()
    x = np.random.default_rng(1).normal(size=(2, 4, DIM))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    y, loss = ex.masked_moe_forward(x, mask, router, w_in, w_out, k=2)
    y = _np(y)
    assert y.shape == (2, 4, DIM), f"y must keep the [B, S] layout: expected shape (2, 4, {DIM}), got {y.shape}"
    assert np.array_equal(y[mask == 0], np.zeros((3, DIM))), f"padding outputs must be exactly 0; got {y[mask == 0]}"
    expected = _reference_forward(x.reshape(-1, DIM), router, w_in, w_out, 2).reshape(2, 4, DIM)
    assert np.allclose(y[mask > 0], expected[mask > 0], atol=1e-5), (
        "with no capacity limit, the real tokens' outputs must be sum over the top-2 experts (by logit) of "
        f"softmax-over-the-2-kept-logits gate * relu(x @ W_in[e]) @ W_out[e]; max abs error "
        f"{np.abs(y[mask > 0] - expected[mask > 0]).max():.3g}"
    )
    assert np.isfinite(float(loss)), f"the balance loss must be a finite float; got {loss}"


@pytest.mark.points(3)
def test_adding_padding_changes_neither_outputs_nor_loss(ex):
    router, w_in, w_out = _weights(seed=5)
    rng = np.random.default_rng(6)
    real = rng.normal(size=(2, 3, DIM))
    flat = real.reshape(-1, DIM)
    loads = np.bincount(np.argsort(-(flat @ router), axis=-1, kind="stable")[:, :2].ravel(), minlength=EXPERTS)
    capacity = int(loads.max())  # the busiest expert is exactly full: one stolen slot drops a real token
    y_real, loss_real = ex.masked_moe_forward(real, np.ones((2, 3)), router, w_in, w_out, k=2, capacity=capacity)
    y_real = _np(y_real)
    # Left padding whose rows copy real tokens (so they would compete for exactly the same experts).
    padded = np.concatenate([1.5 * real[:, :2], real], axis=1)  # [2, 5, d]
    mask = np.concatenate([np.zeros((2, 2)), np.ones((2, 3))], axis=1)
    y_pad, loss_pad = ex.masked_moe_forward(padded, mask, router, w_in, w_out, k=2, capacity=capacity)
    y_pad = _np(y_pad)
    assert y_pad.shape == (2, 5, DIM), f"expected output shape (2, 5, {DIM}); got {y_pad.shape}"
    assert np.allclose(y_pad[:, 2:], y_real, atol=1e-6), (
        f"left-padding the batch changed the real tokens' outputs (capacity {capacity}): padding must take no "
        f"capacity slot; max abs change {np.abs(y_pad[:, 2:] - y_real).max():.3g}"
    )
    assert np.array_equal(y_pad[:, :2], np.zeros((2, 2, DIM))), "padding outputs must be exactly 0"
    assert np.isclose(float(loss_pad), float(loss_real), atol=1e-6), (
        f"padding changed the balance loss from {float(loss_real):.6f} to {float(loss_pad):.6f}: f_i and P_i must "
        "be computed over the real tokens only"
    )
    # Right padding with large garbage, flattened to [T]: the same real outputs and loss.
    garbage = np.concatenate([flat, 50.0 * rng.normal(size=(4, DIM))])
    y_flat, loss_flat = ex.masked_moe_forward(
        garbage, np.r_[np.ones(6), np.zeros(4)], router, w_in, w_out, k=2, capacity=capacity
    )
    y_flat = _np(y_flat)
    assert np.allclose(y_flat[:6], y_real.reshape(-1, DIM), atol=1e-6), "right padding changed the real outputs"
    assert np.array_equal(y_flat[6:], np.zeros((4, DIM))), "padding outputs must be exactly 0"
    assert np.isclose(float(loss_flat), float(loss_real), atol=1e-6), "right padding changed the balance loss"


@pytest.mark.points(1)
def test_all_padding_batch(ex):
    """A batch with no real token: the loss is 0 (the docstring's rule, not 0/0 = NaN) and every output is 0."""
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    with np.errstate(invalid="ignore", divide="ignore"):
        got = float(ex.masked_balance_loss(probs, np.array([[0], [1], [1]]), np.zeros(3)))
    assert got == 0.0, (
        f"with no real token at all masked_balance_loss must be 0 (nothing to balance); got {got}: f_i and P_i "
        "divide by the number of real assignments and tokens, which is 0 here, so guard the division"
    )
    router, w_in, w_out = _weights(seed=8)
    x = np.random.default_rng(9).normal(size=(2, 3, DIM))
    with np.errstate(invalid="ignore", divide="ignore"):
        y, loss = ex.masked_moe_forward(x, np.zeros((2, 3)), router, w_in, w_out, k=2, capacity=2)
    y = _np(y)
    assert y.shape == (2, 3, DIM) and np.array_equal(y, np.zeros((2, 3, DIM))), (
        f"an all-padding batch must output exactly 0 everywhere, with shape (2, 3, {DIM}); got {y.tolist()}"
    )
    assert float(loss) == 0.0, f"an all-padding batch has balance loss 0; got {float(loss)}"


@pytest.mark.points(1)
def test_ties_go_to_the_lower_expert_index(ex):
    """Equal logits: the lower expert index is chosen first (the module's convention), which changes the output."""
    router = np.zeros((DIM, EXPERTS))
    router[0] = [1.0, 1.0, 1.0]  # the three experts tie for every token
    _, w_in, w_out = _weights(seed=10)
    x = np.abs(np.random.default_rng(11).normal(size=(5, DIM))) + 0.1
    for k in (1, 2):
        y, _ = ex.masked_moe_forward(x, np.ones(5), router, w_in, w_out, k=k)
        y = _np(y)
        expected = _reference_forward(x, router, w_in, w_out, k)  # stable argsort: ties -> lower index
        wrong = _reference_forward(x, router[:, ::-1], w_in[::-1], w_out[::-1], k)  # ties -> higher index
        assert not np.allclose(expected, wrong)
        assert np.allclose(y, expected, atol=1e-6), (
            f"the 3 experts have equal logits for every token (k={k}): ties must go to the lower expert index, "
            f"so the top-{k} is {[0, 1][:k]}; max abs error {np.abs(y - expected).max():.3g}"
            + (" (you picked the higher index)" if np.allclose(y, wrong, atol=1e-6) else "")
        )


@pytest.mark.points(2)
def test_padding_at_the_edge_of_float64_changes_nothing(ex):
    """'Padding rows may hold anything finite': rows of +-1e308 overflow to inf; none of it may reach a real token."""
    router, w_in, w_out = _weights(seed=12)
    rng = np.random.default_rng(13)
    real = rng.normal(size=(5, DIM))
    y_real, loss_real = ex.masked_moe_forward(real, np.ones(5), router, w_in, w_out, k=2, capacity=3)
    y_real = _np(y_real)
    garbage = np.where(rng.random((3, DIM)) < 0.5, -1.0, 1.0) * 1e308  # finite, but any matmul overflows
    x = np.concatenate([real[:2], garbage, real[2:]])
    mask = np.array([1, 1, 0, 0, 0, 1, 1, 1])
    with np.errstate(all="ignore"):
        y, loss = ex.masked_moe_forward(x, mask, router, w_in, w_out, k=2, capacity=3)
    y = _np(y)
    assert np.array_equal(y[2:5], np.zeros((3, DIM))), (
        f"padding rows holding +-1e308 must output exactly 0; got {y[2:5].tolist()}: multiplying inf or NaN by a "
        "mask of 0 gives NaN, so select with np.where instead of multiplying"
    )
    assert np.allclose(y[mask > 0], y_real, atol=1e-6), (
        "huge (finite) padding rows changed the real tokens' outputs: the padding must take no slot and nothing "
        "computed from it may be mixed into a real token"
    )
    assert np.isfinite(float(loss)) and np.isclose(float(loss), float(loss_real), atol=1e-6), (
        f"huge (finite) padding rows changed the balance loss from {float(loss_real):.6f} to {float(loss)}: "
        "P_i must average the real tokens' probabilities only (select them; 0 * NaN is NaN)"
    )


@pytest.mark.points(1)
def test_forward_loss_counts_every_choice_before_capacity(ex):
    """masked_moe_forward's loss: f_i over the real tokens' k choices (dropped ones too), P_i over the real tokens."""
    router, w_in, w_out = _weights(seed=14)
    x = np.random.default_rng(15).normal(size=(9, DIM))
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1])
    logits = x @ router
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for k in (1, 2):
        _, loss = ex.masked_moe_forward(x, mask, router, w_in, w_out, k=k, capacity=1)  # capacity 1 drops many
        indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        expected = float(
            switch_balance_loss(probs.astype(np.float32), np.eye(EXPERTS)[indices], mask=mask.astype(np.float32))
        )
        assert np.isclose(float(loss), expected, atol=1e-5), (
            f"k={k}, capacity 1: the loss must be E * sum_i f_i P_i with f_i the fraction of the real tokens' k "
            f"router choices (before capacity, dropped ones included) and P_i the real tokens' mean softmax "
            f"probability; expected {expected:.5f}, got {float(loss):.5f}"
        )
