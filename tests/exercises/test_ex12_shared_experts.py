"""Grades exercise 12: DeepSeekMoE fine-grained segmentation and shared experts (Dai et al. 2024)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex12_shared_experts"

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


def _ffn(x, w_in, w_out):
    return np.maximum(x @ w_in, 0.0) @ w_out


def _reference(x, router, routed_in, routed_out, shared_in, shared_out, k):
    logits = x @ router
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        for s in range(shared_in.shape[0]):
            y[t] += _ffn(x[t], shared_in[s], shared_out[s])
        for i in np.argsort(-scores[t], kind="stable")[:k]:
            y[t] += scores[t, i] * _ffn(x[t], routed_in[i], routed_out[i])
    return y


def _weights(seed, tokens=5, dim=4, hidden=6, routed=4, shared=1):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(tokens, dim)),
        rng.normal(size=(dim, routed)),
        rng.normal(size=(routed, dim, hidden)),
        rng.normal(size=(routed, hidden, dim)),
        rng.normal(size=(shared, dim, hidden)),
        rng.normal(size=(shared, hidden, dim)),
    )


@pytest.mark.points(1)
def test_combinatorial_flexibility(ex):
    assert int(ex.expert_combinations(16, 2)) == 120, "C(16, 2) = 120 expert sets for N=16, k=2"
    got = int(ex.expert_combinations(64, 8))
    assert got == 4_426_165_368, f"C(64, 8) should be 4,426,165,368 (N=16, k=2 split with m=4); got {got:,}"
    config = tuple(int(v) for v in ex.fine_grained_config(16, 2, 1024, 4))
    assert config == (64, 8, 256), f"fine_grained_config(16, 2, hidden=1024, m=4) should be (64, 8, 256); got {config}"


@st.composite
def _configs(draw):
    m = draw(st.integers(1, 8))
    return (
        draw(st.integers(1, 64)),
        draw(st.integers(1, 8)),
        draw(st.integers(1, 512)),
        m * draw(st.integers(1, 64)),
        m,
    )


@pytest.mark.points(2)
@given(_configs())
@_SETTINGS
def test_segmentation_keeps_parameters_and_flops_property(ex, config):
    n, k, d, h, m = config
    fine_n, fine_k, fine_h = (int(v) for v in ex.fine_grained_config(n, k, h, m))
    assert (fine_n, fine_k, fine_h) == (m * n, m * k, h // m), (
        f"fine_grained_config(N={n}, k={k}, h={h}, m={m}) should be {(m * n, m * k, h // m)}; "
        f"got {(fine_n, fine_k, fine_h)}"
    )
    coarse_params, fine_params = int(ex.ffn_param_count(n, d, h)), int(ex.ffn_param_count(fine_n, d, fine_h))
    assert coarse_params == n * 2 * d * h, (
        f"ffn_param_count({n}, {d}, {h}) should be N*2*d*h = {n * 2 * d * h}; got {coarse_params}"
    )
    assert fine_params == coarse_params, (
        f"segmentation must keep the total parameters: {coarse_params} vs {fine_params}"
    )
    coarse_flops = int(ex.active_flops_per_token(k, d, h))
    assert coarse_flops == 4 * k * d * h, (
        f"active_flops_per_token({k}, {d}, {h}) should be k*2*(2*d*h) = {4 * k * d * h}; got {coarse_flops}"
    )
    assert int(ex.active_flops_per_token(fine_k, d, fine_h)) == coarse_flops, (
        "segmentation must keep the FLOPs per token"
    )


@pytest.mark.points(2)
def test_split_expert_preserves_the_function(ex):
    rng = np.random.default_rng(0)
    w_in, w_out = rng.normal(size=(4, 12)), rng.normal(size=(12, 3))
    fine_in, fine_out = ex.split_expert(w_in, w_out, 4)
    fine_in, fine_out = _np(fine_in), _np(fine_out)
    assert fine_in.shape == (4, 4, 3) and fine_out.shape == (4, 3, 3), (
        "split_expert of [4, 12] and [12, 3] into m=4 should give [4, 4, 3] and [4, 3, 3]; "
        f"got {fine_in.shape}, {fine_out.shape}"
    )
    assert np.array_equal(fine_in[1], w_in[:, 3:6]), "segment 1 must hold hidden units 3..5 (columns of w_in)"
    x = rng.normal(size=(7, 4))
    total = sum(_ffn(x, fine_in[j], fine_out[j]) for j in range(4))
    assert np.allclose(total, _ffn(x, w_in, w_out), atol=1e-10), (
        "the m fine-grained experts' outputs must sum to the coarse expert's output (same parameters, same function)"
    )


@pytest.mark.points(2)
def test_forward_matches_formula(ex):
    x = np.array([[1.0, 2.0]])
    eye = np.eye(2)[None]
    got = _np(
        ex.deepseek_moe_forward(
            x,
            np.array([[1.0, 0.0], [0.0, 0.0]]),
            np.concatenate([2 * eye, eye]),
            np.concatenate([eye, eye]),
            eye,
            eye,
            1,
        )
    )
    expected = np.array([[1.0, 2.0]]) + (1 / (1 + np.exp(-1.0))) * np.array([[2.0, 4.0]])
    assert np.allclose(got, expected, atol=1e-6), (
        f"one identity shared expert plus routed expert 0 (W_in = 2I) with gate softmax((1, 0))_0 = 0.7311 "
        f"(not renormalised to 1) should give {expected.round(4).tolist()}; got {np.round(got, 4).tolist()}"
    )
    for seed, k, shared in [(1, 2, 1), (2, 1, 2), (3, 3, 1)]:
        weights = _weights(seed, shared=shared)
        got = _np(ex.deepseek_moe_forward(*weights, k))
        expected = _reference(*weights, k)
        assert got.shape == expected.shape, f"output must have shape [T, d] = {expected.shape}; got {got.shape}"
        assert np.allclose(got, expected, atol=1e-6), (
            f"y = sum_shared FFN(x) + sum_top-{k} softmax-gate * FFN_i(x) (K_s={shared}): max abs error "
            f"{np.abs(got - expected).max():.3g}"
        )


@pytest.mark.points(2)
def test_shared_experts_always_active(ex):
    x, router, routed_in, routed_out, shared_in, shared_out = _weights(7, shared=2)
    zeros = np.zeros_like(routed_out)
    expected_shared = sum(_ffn(x, shared_in[s], shared_out[s]) for s in range(2))
    for scale in (1.0, -5.0, 20.0):  # whatever the router does
        got = _np(ex.deepseek_moe_forward(x, scale * router, routed_in, zeros, shared_in, shared_out, 2))
        assert np.allclose(got, expected_shared, atol=1e-6), (
            "with all routed experts outputting 0, y must be the sum of the K_s=2 shared experts' outputs for every "
            "token, whatever the router"
        )
    no_shared_in, no_shared_out = np.zeros((0, 4, 6)), np.zeros((0, 6, 4))
    got = _np(ex.deepseek_moe_forward(x, router, routed_in, routed_out, no_shared_in, no_shared_out, 2))
    expected = _reference(x, router, routed_in, routed_out, no_shared_in, no_shared_out, 2)
    assert np.allclose(got, expected, atol=1e-6), "with K_s = 0 shared experts, y is the routed part alone"


def _is_python_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@pytest.mark.points(1)
def test_counts_are_exact_python_ints(ex):
    """Counts are Python ints (the module's rule), exact even beyond float precision (C(256, 32) > 2**53)."""
    got = ex.expert_combinations(256, 32)
    expected = 58_244_594_029_230_756_747_090_036_884_923_424_763_000
    assert _is_python_int(got) and got == expected, (
        f"expert_combinations(256, 32) must be the exact Python int C(256, 32) = {expected}; got "
        f"{type(got).__name__} {got!r}: a float (e.g. from factorials divided with /) is not exact past 2**53"
    )
    assert ex.expert_combinations(8, 8) == 1 and ex.expert_combinations(8, 0) == 1, "C(N, N) = C(N, 0) = 1"
    values = {
        "fine_grained_config(16, 2, 1024, 4)": ex.fine_grained_config(16, 2, 1024, 4),
        "ffn_param_count(16, 8, 32)": (ex.ffn_param_count(16, 8, 32),),
        "active_flops_per_token(2, 8, 32)": (ex.active_flops_per_token(2, 8, 32),),
    }
    for call, result in values.items():
        assert all(_is_python_int(v) for v in result), (
            f"{call} must return Python ints; got {tuple(type(v).__name__ for v in result)} "
            f"(use // for the hidden width, not /, and no numpy scalars)"
        )


@pytest.mark.points(1)
def test_fine_grained_config_rejects_an_indivisible_hidden_width(ex):
    """The documented ValueError: hidden = 1000 cannot be split into m = 3 (or 16) equal segments."""
    got = tuple(ex.fine_grained_config(8, 1, 1000, 8))
    assert got == (64, 8, 125), f"fine_grained_config(8, 1, hidden=1000, m=8) should be (64, 8, 125); got {got}"
    for hidden, m in [(1000, 3), (1000, 16), (6, 4)]:
        with pytest.raises(ValueError):
            ex.fine_grained_config(8, 1, hidden, m)
            pytest.fail(
                f"fine_grained_config(8, 1, hidden={hidden}, m={m}) must raise ValueError: {hidden} is not divisible "
                f"by {m}, so the segments would not have equal integer widths",
                pytrace=False,
            )


@pytest.mark.points(1)
def test_routing_ties_go_to_the_lower_expert(ex):
    """Equal affinities: the lower routed expert index wins (the docstring's rule); here that changes the output."""
    x, router, routed_in, routed_out, shared_in, shared_out = _weights(21, hidden=6, shared=1)
    rng = np.random.default_rng(22)
    shared_in, shared_out = rng.normal(size=(1, 4, 3)), rng.normal(size=(1, 3, 4))  # h_s = 3, h = 6
    tied = np.tile(router[:, :1], (1, 4))  # the 4 routed experts have the same centroid: all scores 1/4
    for k in (1, 2):
        got = _np(ex.deepseek_moe_forward(x, tied, routed_in, routed_out, shared_in, shared_out, k))
        expected = _reference(x, tied, routed_in, routed_out, shared_in, shared_out, k)
        wrong = _reference(x, tied, routed_in[::-1], routed_out[::-1], shared_in, shared_out, k)
        assert not np.allclose(expected, wrong)
        assert np.allclose(got, expected, atol=1e-6), (
            f"all 4 routed experts tie (scores 1/4), k={k}: the top-{k} must be experts {[0, 1][:k]} (lower index "
            f"first), each with gate 0.25; max abs error {np.abs(got - expected).max():.3g}"
            + (" (you picked the higher indices)" if np.allclose(got, wrong, atol=1e-6) else "")
        )
