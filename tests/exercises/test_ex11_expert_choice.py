"""Grades exercise 11: expert-choice routing (Zhou et al. 2022)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex11_expert_choice"

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


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _route(ex, x, kernel, capacity):
    scores, indices, gates = ex.expert_choice_routing(x, kernel, capacity)
    return _np(scores), np.asarray(indices).astype(np.int64), _np(gates)


def _affine_experts(num_experts, dim, dim_out, seed=1):
    rng = np.random.default_rng(seed)
    kernels = rng.normal(size=(num_experts, dim, dim_out))
    biases = rng.normal(size=(num_experts, dim_out)) + 2.0

    def experts(h):
        return np.einsum("ecd,edo->eco", _np(h), kernels) + biases[:, None, :]

    def one(e, row):
        return row @ kernels[e] + biases[e]

    return experts, one


@pytest.mark.points(1)
def test_capacity(ex):
    cases = [((8, 4, 2), 4), ((6, 4, 1), 2), ((12, 3, 1), 4), ((4, 2, 4), 4), ((10, 4, 1.2), 3)]
    for (n, e, k), expected in cases:
        got = ex.expert_choice_capacity(n, e, k)
        assert int(got) == expected, (
            f"expert_choice_capacity(num_tokens={n}, num_experts={e}, capacity_factor={k}) should be "
            f"min(ceil(n*k/e), n) = {expected}; got {got}"
        )


@pytest.mark.points(2)
def test_routing_worked_example(ex):
    x = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    scores, indices, gates = _route(ex, x, np.eye(2), 2)
    expected_scores = np.stack([_sigmoid(x[:, 0] - x[:, 1]), _sigmoid(x[:, 1] - x[:, 0])], axis=1)
    assert scores.shape == (4, 2), f"scores S must have shape [n, e] = (4, 2); got {scores.shape}"
    assert np.allclose(scores, expected_scores, atol=1e-6), (
        f"S = softmax(x @ W_g) over the experts should be {expected_scores.round(4).tolist()}; "
        f"got {scores.round(4).tolist()}"
    )
    assert indices.shape == (2, 2) and gates.shape == (2, 2), (
        f"I and G must have shape [e, c] = (2, 2); got {indices.shape} and {gates.shape}"
    )
    assert indices.tolist() == [[0, 2], [3, 1]], (
        f"each expert takes its top-2 tokens by score, best first: expected I = [[0, 2], [3, 1]], got "
        f"{indices.tolist()}"
    )
    expected_gates = np.array([[_sigmoid(2), _sigmoid(1)], [_sigmoid(3), _sigmoid(1)]])
    assert np.allclose(gates, expected_gates, atol=1e-6), (
        f"G[i, j] = S[I[i, j], i] should be {expected_gates.round(4).tolist()}; got {gates.round(4).tolist()}"
    )


@st.composite
def _batches(draw):
    n = draw(st.integers(1, 10))
    e = draw(st.integers(1, 5))
    k = draw(st.sampled_from([0.5, 1, 2]))
    return draw(st.integers(0, 10_000)), n, e, k


@pytest.mark.points(2)
@given(_batches())
@_SETTINGS
def test_every_expert_takes_exactly_c_tokens_property(ex, batch):
    seed, n, e, k = batch
    rng = np.random.default_rng(seed)
    x, kernel = rng.normal(size=(n, 3)), rng.normal(size=(3, e))
    c = int(ex.expert_choice_capacity(n, e, k))
    scores, indices, gates = _route(ex, x, kernel, c)
    assert np.allclose(scores.sum(axis=1), 1.0), "each token's scores must sum to 1 (softmax over experts)"
    assert indices.shape == (e, c), f"I must have shape [e, c] = {(e, c)} (n={n}, k={k}); got {indices.shape}"
    for i in range(e):
        row = indices[i]
        assert len(set(row.tolist())) == c and row.min(initial=0) >= 0 and row.max(initial=0) < n, (
            f"expert {i} must pick exactly c = {c} distinct tokens in [0, {n}); it picked {row.tolist()}"
        )
        assert np.allclose(gates[i], scores[row, i]), f"G[{i}] must be S[I[{i}], {i}]"
        assert np.all(np.diff(gates[i]) <= 1e-12), f"expert {i}'s tokens must be sorted by decreasing score"
        unpicked = np.setdiff1d(np.arange(n), row)
        if c and unpicked.size:
            assert gates[i, -1] >= scores[unpicked, i].max() - 1e-12, (
                f"expert {i} must pick its top-{c} tokens: an unpicked token scores higher than a picked one"
            )


@pytest.mark.points(2)
def test_a_token_may_be_picked_by_none_or_many(ex):
    # Token 0 is the favourite of experts 0 and 1; tokens 1, 2 of experts 2, 3; token 3 is nobody's top-1.
    x = np.array([[3.0, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 3], [0, 0, 2, 2]])
    _, indices, _ = _route(ex, x, np.eye(4), 1)
    assert indices.tolist() == [[0], [0], [1], [2]], f"expected I = [[0], [0], [1], [2]]; got {indices.tolist()}"
    counts = np.asarray(ex.experts_per_token(indices, 4))
    assert counts.tolist() == [2, 1, 1, 0], (
        f"experts_per_token should be [2, 1, 1, 0] (token 0 picked twice, token 3 never); got {counts.tolist()}"
    )
    counts = np.asarray(ex.experts_per_token(np.array([[0, 1], [0, 2]]), 4))
    assert counts.tolist() == [2, 1, 1, 0], (
        f"experts_per_token([[0, 1], [0, 2]], 4) should be [2, 1, 1, 0]; got {counts.tolist()}"
    )


@pytest.mark.points(2)
def test_forward_combines_gate_weighted_expert_outputs(ex):
    x = np.array([[3.0, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 3], [0, 0, 2, 2]])
    experts, one = _affine_experts(4, 4, 2)
    for capacity in (1, 2):
        _, indices, gates = _route(ex, x, np.eye(4), capacity)
        y = _np(ex.expert_choice_forward(x, np.eye(4), experts, capacity))
        assert y.shape == (4, 2), f"output must have shape [n, d_out] = (4, 2); got {y.shape}"
        expected = np.zeros((4, 2))
        for i in range(4):
            for j in range(capacity):
                t = indices[i, j]
                expected[t] += gates[i, j] * one(i, x[t])
        assert np.allclose(y, expected, atol=1e-6), (
            f"capacity {capacity}: y[t] must be the sum over the experts that picked t of G * FFN_expert(x[t]); "
            f"expected {expected.round(4).tolist()}, got {y.round(4).tolist()}"
        )
    y = _np(ex.expert_choice_forward(x, np.eye(4), experts, 1))
    assert np.array_equal(y[3], np.zeros(2)), (
        f"token 3 is picked by no expert, so its output must be exactly 0; got {y[3]}"
    )


@pytest.mark.points(1)
def test_not_causal_a_later_token_changes_an_earlier_output(ex):
    experts, _ = _affine_experts(2, 2, 2, seed=4)
    before = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    after = before.copy()
    after[3] = [3.0, 0.0]  # only the LAST token changes
    y_before = _np(ex.expert_choice_forward(before, np.eye(2), experts, 2))
    y_after = _np(ex.expert_choice_forward(after, np.eye(2), experts, 2))
    assert not np.allclose(y_before[0], y_after[0]), (
        "changing only token 3 must change token 0's output here (expert 0 now prefers token 3 and drops token 0): "
        "expert choice looks at the whole batch, future tokens included, so it is not causal"
    )


@pytest.mark.points(1)
def test_capacity_is_an_exact_python_int(ex):
    """c = ceil(n * k / e) computed exactly (no float round-off), capped at n, returned as a Python int in [0, n]."""
    # 1.1 * 100 / 2 is 55.00000000000001 in floating point (in every order of the operations): a float ceil
    # gives 56. The same for 1.1 * 50 / 5 and 1.1 * 150 / 3. n = 0 tokens gives 0.
    cases = [
        ((100, 2, 1.1), 55),
        ((50, 5, 1.1), 11),
        ((150, 3, 1.1), 55),
        ((0, 4, 2), 0),
        ((3, 8, 0.5), 1),
        ((5, 1, 2), 5),
    ]
    for (n, e, k), expected in cases:
        got = ex.expert_choice_capacity(n, e, k)
        assert isinstance(got, int) and not isinstance(got, bool), (
            f"expert_choice_capacity must return a Python int; got {type(got).__name__} {got!r}"
        )
        assert got == expected, (
            f"expert_choice_capacity(num_tokens={n}, num_experts={e}, capacity_factor={k}) should be "
            f"min(ceil(n*k/e), n) = {expected}, with n*k/e computed exactly (e.g. with fractions.Fraction); got {got}"
        )


@pytest.mark.points(1)
def test_ties_go_to_the_lower_token(ex):
    """Equal scores: an expert picks the lower token index first (the module's convention), best first."""
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # tokens 0, 2, 3 are identical
    _, indices, gates = _route(ex, x, np.eye(2), 2)
    assert indices.tolist() == [[0, 2], [1, 0]], (
        "tokens 0, 2 and 3 are identical, so they tie for both experts: expert 0 must pick tokens [0, 2] (lower "
        f"index first) and expert 1 its best token 1, then token 0; expected [[0, 2], [1, 0]], got {indices.tolist()}"
    )
    experts, one = _affine_experts(2, 2, 2, seed=3)
    y = _np(ex.expert_choice_forward(x, np.eye(2), experts, 2))
    expected = np.zeros((4, 2))
    for i, row in enumerate([[0, 2], [1, 0]]):
        for j, t in enumerate(row):
            expected[t] += gates[i, j] * one(i, x[t])
    assert np.allclose(y, expected, atol=1e-6) and np.array_equal(y[3], np.zeros(2)), (
        f"with ties broken towards the lower token, token 3 is picked by no expert and outputs exactly 0; expected "
        f"{expected.round(4).tolist()}, got {y.round(4).tolist()}"
    )
