"""Tests for moe_tf.metrics: RoutingMetrics and routing_entropy."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moe_tf.metrics import RoutingMetrics, routing_entropy

SUFFIXES = ("max_load", "dropped", "entropy", "balance_loss", "z_loss")


def results(metric):
    return {key: float(value) for key, value in metric.result().items()}


def update(metric, counts, tokens=None, dropped=0.0, entropy_sum=0.0, balance_loss=1.0, z_loss=0.0):
    counts = np.asarray(counts, np.float32)
    metric.update_state(
        counts=counts,
        tokens=float(counts.sum()) if tokens is None else tokens,
        dropped=dropped,
        entropy_sum=entropy_sum,
        balance_loss=balance_loss,
        z_loss=z_loss,
    )


# --------------------------------------------------------------------------- RoutingMetrics


@pytest.mark.parametrize("name", ["moe", "block_3_moe"])
def test_result_keys_are_prefixed_with_the_name(name):
    metric = RoutingMetrics(num_experts=4, name=name)
    update(metric, [1, 2, 3, 4])
    assert set(metric.result()) == {f"{name}_{s}" for s in SUFFIXES}, (
        f"expected keys {sorted(f'{name}_{s}' for s in SUFFIXES)}, got {sorted(metric.result())}"
    )


@pytest.mark.parametrize("num_experts", [1, 2, 4, 8])
def test_max_load_uniform_and_collapse(num_experts):
    metric = RoutingMetrics(num_experts=num_experts, name="m")
    update(metric, [10.0] * num_experts)
    assert results(metric)["m_max_load"] == pytest.approx(1.0, rel=1e-6), "uniform counts give max_load 1.0"
    metric.reset_state()
    update(metric, [12.0] + [0.0] * (num_experts - 1))
    assert results(metric)["m_max_load"] == pytest.approx(num_experts, rel=1e-6), "all-in-one gives max_load E"


def test_max_load_intermediate_and_accumulated_over_batches():
    metric = RoutingMetrics(num_experts=4, name="m")
    update(metric, [2, 1, 1, 0])
    assert results(metric)["m_max_load"] == pytest.approx(2.0), "f = [.5, .25, .25, 0] gives max 0.5 * 4 = 2"
    update(metric, [0, 1, 1, 2])  # totals [2, 2, 2, 2]: balanced over the two batches
    assert results(metric)["m_max_load"] == pytest.approx(1.0), "loads accumulate across batches"
    np.testing.assert_allclose(np.asarray(metric.expert_load()), [0.25] * 4, err_msg="expert_load sums counts")


def test_dropped_entropy_and_loss_averages():
    metric = RoutingMetrics(num_experts=4, name="m")
    update(metric, [10, 10, 10, 10], tokens=20.0, dropped=4.0, entropy_sum=10.0, balance_loss=1.5, z_loss=2.0)
    update(metric, [5, 5, 5, 5], tokens=10.0, dropped=2.0, entropy_sum=20.0, balance_loss=2.5, z_loss=4.0)
    r = results(metric)
    assert r["m_dropped"] == pytest.approx(6.0 / 60.0), "dropped = total dropped / total assignments"
    assert r["m_entropy"] == pytest.approx(30.0 / 30.0), "entropy = summed entropy / real tokens"
    assert r["m_balance_loss"] == pytest.approx(2.0), "balance loss is the mean over steps"
    assert r["m_z_loss"] == pytest.approx(3.0), "z loss is the mean over steps"


def test_docstring_example():
    metric = RoutingMetrics(num_experts=4, name="moe")
    metric.update_state(
        counts=[10.0, 10.0, 10.0, 10.0], tokens=40.0, dropped=0.0, entropy_sum=55.4, balance_loss=1.0, z_loss=2.0
    )
    r = results(metric)
    assert r["moe_max_load"] == pytest.approx(1.0)
    assert r["moe_entropy"] == pytest.approx(55.4 / 40.0, rel=1e-6)


def test_reset_state_zeroes_everything():
    metric = RoutingMetrics(num_experts=3, name="m")
    update(metric, [9, 0, 0], tokens=9.0, dropped=3.0, entropy_sum=4.0, balance_loss=2.0, z_loss=5.0)
    assert results(metric)["m_max_load"] == pytest.approx(3.0)
    metric.reset_state()
    for variable in metric.variables:
        assert np.all(np.asarray(variable) == 0), f"reset_state should zero {variable.name}"
    r = results(metric)
    assert all(math.isfinite(v) for v in r.values()), f"empty metric must give finite results, got {r}"
    assert r == {f"m_{s}": 0.0 for s in SUFFIXES}, f"after reset every result should be 0, got {r}"
    update(metric, [1, 1, 1], tokens=3.0, dropped=0.0, entropy_sum=3.0, balance_loss=1.0, z_loss=1.0)
    r = results(metric)
    assert r["m_max_load"] == pytest.approx(1.0) and r["m_balance_loss"] == pytest.approx(1.0), (
        f"after reset only the new batch should count, got {r}"
    )


def test_per_expert_load_keys():
    metric = RoutingMetrics(num_experts=3, name="m", per_expert=True)
    update(metric, [6, 3, 1])
    r = results(metric)
    expected_keys = {f"m_{s}" for s in SUFFIXES} | {f"m_load_{i}" for i in range(3)}
    assert set(r) == expected_keys, f"per_expert=True should add m_load_0..2, got {sorted(r)}"
    loads = [r[f"m_load_{i}"] for i in range(3)]
    np.testing.assert_allclose(loads, [0.6, 0.3, 0.1], rtol=1e-6, err_msg="m_load_i should be f_i")
    assert r["m_max_load"] == pytest.approx(0.6 * 3), "max_load = max f_i * E"


@pytest.mark.parametrize("per_expert", [False, True])
def test_get_config_round_trip(per_expert):
    metric = RoutingMetrics(num_experts=6, name="moe_7", per_expert=per_expert)
    clone = RoutingMetrics.from_config(metric.get_config())
    assert clone.num_experts == 6 and clone.name == "moe_7" and clone.per_expert == per_expert
    update(clone, [1, 1, 1, 1, 1, 1])
    assert len(clone.result()) == len(SUFFIXES) + (6 if per_expert else 0)


# --------------------------------------------------------------------------- routing_entropy


@pytest.mark.parametrize("num_experts", [1, 2, 4, 8])
def test_routing_entropy_uniform_and_one_hot(num_experts):
    uniform = np.full((5, num_experts), 1.0 / num_experts, np.float32)
    assert float(routing_entropy(uniform)) == pytest.approx(math.log(num_experts), abs=1e-6), "uniform gives log(E)"
    one_hot = np.eye(num_experts, dtype=np.float32)[np.arange(5) % num_experts]
    got = float(routing_entropy(one_hot))
    assert got == pytest.approx(0.0, abs=1e-6) and math.isfinite(got), f"one-hot routers give 0, got {got}"


@given(
    num_tokens=st.integers(1, 8),
    num_experts=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    pattern=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_routing_entropy_matches_numpy_and_ignores_padding(num_tokens, num_experts, seed, pattern):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_experts), size=num_tokens).astype(np.float32)
    p = probs.astype(np.float64)
    per_token = -(p * np.log(np.maximum(p, 1e-12))).sum(-1)
    assert float(routing_entropy(probs)) == pytest.approx(per_token.mean(), rel=1e-5, abs=1e-6)

    mask = np.array(pattern[:num_tokens], np.float32)
    garbage = probs.copy()
    garbage[mask == 0] = rng.dirichlet(np.ones(num_experts) * 0.1, size=int((mask == 0).sum()))
    expected = per_token[mask > 0].mean() if mask.any() else 0.0
    got = float(routing_entropy(garbage, mask))
    assert math.isfinite(got), "masked entropy must be finite"
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (
        f"expected entropy over real tokens {expected}, got {got}"
    )
