"""Grades exercise 2: total vs active parameters, FLOPs, and the Mixtral question."""

import math

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXERCISE = "ex02_param_count"

_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.mark.points(1)
def test_expert_params(ex):
    assert ex.expert_params(4, 8) == 76, "a d=4 -> h=8 -> 4 expert with biases has 4*8 + 8 + 8*4 + 4 = 76 parameters"
    assert ex.expert_params(4, 8, use_bias=False) == 64, "without biases: 2 * 4 * 8 = 64"
    assert ex.expert_params(4, 8, d_out=2) == 4 * 8 + 8 + 8 * 2 + 2, "d_out=2: 4*8 + 8 + 8*2 + 2 = 58"
    assert ex.expert_params(4, 8, use_bias=False, gated=True) == 96, "a gated (SwiGLU) expert has 3 kernels: 3*4*8"
    assert ex.expert_params(4, 8, gated=True) == 96 + 8 + 8 + 4, "gated with biases: 96 + 8 + 8 + 4 = 116"


@pytest.mark.points(1)
def test_router_params(ex):
    assert ex.router_params(4, 3) == 12, "the router kernel W_g is [d, E]: 4*3 = 12"
    assert ex.router_params(4, 3, use_bias=True) == 15, "with a bias: 12 + 3 = 15"
    assert ex.router_params(4, 3, noisy=True) == 24, "a noisy router has a second [d, E] kernel W_noise: 24"


@pytest.mark.points(1)  # per case: 3 points in all
@pytest.mark.parametrize(
    "d, h, num_experts, k, d_out, use_bias, noise",
    [(6, 8, 4, 2, None, True, "none"), (6, 8, 4, 1, None, False, "gaussian"), (5, 16, 8, 2, 3, True, "none")],
)
def test_total_matches_a_real_keras_layer(ex, d, h, num_experts, k, d_out, use_bias, noise):
    from moe_tf.layers import MixtureOfExperts

    layer = MixtureOfExperts(
        num_experts=num_experts, expert_units=h, k=k, output_units=d_out, use_bias=use_bias, noise=noise
    )
    layer.build((None, d))
    expected = layer.count_params()
    counts = ex.moe_param_counts(
        d, h, num_experts, k, d_out=d_out, use_bias=use_bias, router_bias=False, noisy_router=noise == "gaussian"
    )
    assert set(counts) >= {"per_expert", "router", "total", "active"}, (
        f"moe_param_counts must return a dict with keys per_expert, router, total, active; got {sorted(counts)}"
    )
    assert counts["total"] == expected, (
        f"MixtureOfExperts(num_experts={num_experts}, expert_units={h}, k={k}, output_units={d_out}, "
        f"use_bias={use_bias}, noise={noise!r}) built on d={d} has count_params() = {expected}; "
        f"your total is {counts['total']}"
    )


@pytest.mark.points(2)
@_SETTINGS
@given(
    d=st.integers(1, 64),
    h=st.integers(1, 256),
    num_experts=st.integers(1, 16),
    data=st.data(),
    use_bias=st.booleans(),
    gated=st.booleans(),
)
def test_active_is_router_plus_k_experts(ex, d, h, num_experts, data, use_bias, gated):
    k = data.draw(st.integers(1, num_experts), label="k")
    counts = ex.moe_param_counts(d, h, num_experts, k, use_bias=use_bias, gated=gated)
    per_expert = (3 if gated else 2) * d * h + ((2 * h if gated else h) + d if use_bias else 0)
    router = d * num_experts
    assert counts["per_expert"] == per_expert, f"per_expert for d={d}, h={h}: expected {per_expert}"
    assert counts["router"] == router, f"router for d={d}, E={num_experts}: expected d*E = {router}"
    assert counts["total"] == router + num_experts * per_expert, "total = router + E * per_expert"
    assert counts["active"] == router + k * per_expert, (
        f"active = router + k * per_expert (every token is scored by the router and runs k={k} experts): "
        f"expected {router + k * per_expert}, got {counts['active']}"
    )


@pytest.mark.points(2)
def test_flops_per_token(ex):
    assert ex.ffn_flops_per_token(4, 8) == 128, "one d=4 -> h=8 -> 4 FFN: 2*4*8 + 2*8*4 = 128 FLOPs"
    assert ex.ffn_flops_per_token(4, 8, gated=True) == 192, "gated: a third [d, h] matmul, 128 + 64 = 192"
    assert ex.moe_flops_per_token(d=4, h=8, num_experts=3, k=1) == 152, "router 2*4*3 = 24, plus 1 expert of 128"
    assert ex.moe_flops_per_token(d=4, h=8, num_experts=3, k=3) == 408, "k = E is the dense mixture: 24 + 3 * 128"
    # Top-1 costs what one dense FFN of the same width costs, plus the router: E x the parameters, not E x compute.
    d, h, num_experts = 512, 2048, 64
    extra = ex.moe_flops_per_token(d, h, num_experts, 1) - ex.ffn_flops_per_token(d, h)
    assert extra == 2 * d * num_experts, (
        f"top-1 MoE minus a dense FFN of the same width is the router, 2*d*E = {2 * d * num_experts}"
    )


@pytest.mark.points(2)
def test_mixtral_shared_vs_expert(ex):
    shared, experts_total = ex.split_shared_and_expert(46.7e9, 12.9e9, num_experts=8, k=2)
    assert math.isclose(shared + experts_total, 46.7e9, rel_tol=1e-9), "shared + experts_total must equal total"
    assert math.isclose(shared, 46.7e9 - 8 * (46.7e9 - 12.9e9) / 6, rel_tol=1e-9), (
        "Mixtral: total = S + 8X, active = S + 2X gives X = 33.8B / 6 = 5.63B and S = 1.63B shared parameters"
    )
    # Cross-check with Mixtral's architecture: 32 layers, 8 SwiGLU experts of 4096 -> 14336 -> 4096, no biases.
    from_architecture = 32 * 8 * ex.expert_params(4096, 14336, use_bias=False, gated=True)
    assert abs(from_architecture - experts_total) / experts_total < 0.005, (
        f"32 layers x 8 experts x 3*4096*14336 = {from_architecture / 1e9:.2f}B should match the expert share "
        f"from the published counts ({experts_total / 1e9:.2f}B)"
    )
    # Active is above k/E of the total because the shared part is always active.
    assert 12.9e9 / 46.7e9 > 2 / 8
    with pytest.raises(ValueError):
        ex.split_shared_and_expert(10.0, 10.0, num_experts=4, k=4)


@pytest.mark.points(1)
def test_router_options_reach_the_layer_counts(ex):
    assert ex.router_params(4, 3, use_bias=True, noisy=True) == 27, (
        "a noisy router with a bias: W_g (4*3) + bias (3) + W_noise (4*3) = 27"
    )
    counts = ex.moe_param_counts(d=4, h=8, num_experts=3, k=1, router_bias=True)
    assert counts["router"] == 15, (
        f"moe_param_counts(..., router_bias=True): the router has a bias of E = 3, so 12 + 3 = 15; "
        f"got router = {counts['router']} (pass router_bias on to router_params)"
    )
    assert counts["total"] == 15 + 3 * 76 and counts["active"] == 15 + 76, (
        "with router_bias=True: total = 15 + 3 * 76 = 243 and active = 15 + 1 * 76 = 91 (every token uses the "
        f"whole router, bias included); got total = {counts['total']}, active = {counts['active']}"
    )
    counts = ex.moe_param_counts(d=4, h=8, num_experts=3, k=2, router_bias=True, noisy_router=True)
    assert counts["router"] == 27 and counts["active"] == 27 + 2 * 76, (
        "router_bias=True, noisy_router=True, k=2: router = 12 + 3 + 12 = 27, active = 27 + 2 * 76 = 179; "
        f"got router = {counts['router']}, active = {counts['active']}"
    )


@pytest.mark.points(1)
def test_output_width_and_gated_experts_in_counts_and_flops(ex):
    assert ex.expert_params(4, 8, d_out=2, gated=True) == 3 * 4 * 8 - 4 * 8 + 8 * 2 + 8 + 8 + 2, (
        "a gated expert 4 -> 8 -> 2 with biases: W1 (4*8) + W3 (4*8) + W2 (8*2) + b1 (8) + b3 (8) + b2 (2) = 98"
    )
    counts = ex.moe_param_counts(d=4, h=8, num_experts=3, k=2, d_out=2, gated=True)
    assert counts["per_expert"] == 98 and counts["total"] == 12 + 3 * 98 and counts["active"] == 12 + 2 * 98, (
        "moe_param_counts(d=4, h=8, E=3, k=2, d_out=2, gated=True): per_expert 98, total 12 + 3*98 = 306, "
        f"active 12 + 2*98 = 208; got {counts}"
    )
    assert ex.ffn_flops_per_token(4, 8, d_out=2) == 2 * 4 * 8 + 2 * 8 * 2, (
        "an FFN 4 -> 8 -> 2 costs 2*4*8 + 2*8*2 = 96 FLOPs: the second matmul is [1, h] @ [h, d_out]"
    )
    assert ex.ffn_flops_per_token(4, 8, d_out=2, gated=True) == 96 + 2 * 4 * 8, "gated, d_out=2: 96 + 64 = 160"
    assert ex.moe_flops_per_token(d=4, h=8, num_experts=3, k=2) == 24 + 2 * 128, (
        "top-2 of 3 experts 4 -> 8 -> 4: router 2*4*3 = 24 plus k = 2 experts of 128 = 280"
    )
    assert ex.moe_flops_per_token(d=4, h=8, num_experts=3, k=2, d_out=2, gated=True) == 24 + 2 * 160, (
        "moe_flops_per_token(d=4, h=8, E=3, k=2, d_out=2, gated=True): 24 + 2 * 160 = 344 "
        "(pass d_out and gated on to the expert FLOPs)"
    )


def _raises_value_error(call, what):
    try:
        result = call()
    except ValueError:
        return
    pytest.fail(f"{what} must raise ValueError (see the docstring); it returned {result!r}", pytrace=False)


@pytest.mark.points(1)
def test_invalid_k_raises(ex):
    for k in (0, 4):
        _raises_value_error(
            lambda k=k: ex.moe_param_counts(d=4, h=8, num_experts=3, k=k),
            f"moe_param_counts with k={k} and num_experts=3 (k must be in [1, E])",
        )
        _raises_value_error(
            lambda k=k: ex.moe_flops_per_token(d=4, h=8, num_experts=3, k=k),
            f"moe_flops_per_token with k={k} and num_experts=3 (k must be in [1, E])",
        )
    for k in (0, 8, 9):
        _raises_value_error(
            lambda k=k: ex.split_shared_and_expert(46.7e9, 12.9e9, num_experts=8, k=k),
            f"split_shared_and_expert with k={k} and num_experts=8 (it needs 1 <= k < E: with k = E "
            "total = active and the two equations cannot be separated)",
        )
