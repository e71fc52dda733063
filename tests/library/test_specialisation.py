"""`moe_tf.specialisation`: the class x expert routing table and the mutual information, on hand-computed cases."""

import math

import numpy as np
import pytest

from moe_tf.specialisation import assignment_matrix, entropy_bits, mutual_information, specialisation_report


def test_assignment_matrix_counts_rows_and_joint():
    labels = [0, 0, 0, 1, 2, 2]
    experts = [1, 1, 0, 2, 2, 2]
    counts = assignment_matrix(labels, experts)
    np.testing.assert_array_equal(counts, [[1, 2, 0], [0, 0, 1], [0, 0, 2]])
    rows = assignment_matrix(labels, experts, normalize="row")
    np.testing.assert_allclose(rows, [[1 / 3, 2 / 3, 0], [0, 0, 1], [0, 0, 1]])
    joint = assignment_matrix(labels, experts, normalize="joint")
    np.testing.assert_allclose(joint, counts / 6)
    assert joint.sum() == pytest.approx(1.0)


def test_assignment_matrix_sizes_and_empty_rows():
    table = assignment_matrix([0, 2], [0, 0], num_classes=4, num_experts=3, normalize="row")
    assert table.shape == (4, 3)
    np.testing.assert_allclose(table[[0, 2]], [[1, 0, 0], [1, 0, 0]])
    assert np.isnan(table[1]).all() and np.isnan(table[3]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": [0, 1], "experts": [0]}, "same length"),
        ({"labels": [0.5, 1.0], "experts": [0, 1]}, "integer ids"),
        ({"labels": [0, -1], "experts": [0, 1]}, ">= 0"),
        ({"labels": [0, 3], "experts": [0, 1], "num_classes": 3}, "num_classes=3"),
        ({"labels": [0, 1], "experts": [0, 4], "num_experts": 4}, "num_experts=4"),
        ({"labels": [0, 1], "experts": [0, 1], "normalize": "col"}, "normalize"),
        ({"labels": [], "experts": []}, "non-empty"),
    ],
)
def test_assignment_matrix_errors_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        assignment_matrix(**kwargs)


def test_entropy_bits_hand_values():
    assert entropy_bits([0.5, 0.25, 0.25]) == pytest.approx(1.5)
    assert entropy_bits([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert entropy_bits([2, 2, 2, 2]) == pytest.approx(2.0)  # normalised first
    np.testing.assert_allclose(entropy_bits([[1, 1], [1, 0]], axis=1), [1.0, 0.0])


def test_mutual_information_hand_cases():
    # Each class on its own expert: I = H(C) = 1 bit.
    assert mutual_information([[5, 0], [0, 5]]) == pytest.approx(1.0)
    # Independent class and expert: 0 bits.
    assert mutual_information([[3, 3], [1, 1]]) == pytest.approx(0.0, abs=1e-12)
    # Everything on one expert (collapse): 0 bits, however the classes are.
    assert mutual_information([[4, 0], [7, 0], [1, 0]]) == pytest.approx(0.0, abs=1e-12)
    # p = [[1/2, 0], [1/4, 1/4]], p(c) = (1/2, 1/2), p(e) = (3/4, 1/4); by hand:
    # I = 1/2 log2((1/2)/(1/2*3/4)) + 1/4 log2((1/4)/(1/2*3/4)) + 1/4 log2((1/4)/(1/2*1/4))
    expected = 0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25 * math.log2(2)
    assert mutual_information([[2, 0], [1, 1]]) == pytest.approx(expected)
    # Probabilities and counts give the same value.
    assert mutual_information(np.array([[2, 0], [1, 1]]) / 4) == pytest.approx(expected)


def test_mutual_information_is_h_expert_minus_conditional_entropy():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, size=(10, 8)).astype(float)
    r = specialisation_report(counts)
    assert r["mi"] == pytest.approx(r["h_expert"] - r["h_expert_given_class"])
    assert 0.0 <= r["mi"] <= r["mi_max"] + 1e-12
    # Matches a direct loop over the table.
    joint = counts / counts.sum()
    pc, pe = joint.sum(1), joint.sum(0)
    direct = sum(
        joint[c, e] * math.log2(joint[c, e] / (pc[c] * pe[e])) for c in range(10) for e in range(8) if joint[c, e] > 0
    )
    assert r["mi"] == pytest.approx(direct)


def test_specialisation_report_hand_cases():
    r = specialisation_report([[10, 0], [0, 10]])
    assert (r["mi"], r["h_expert"], r["h_expert_given_class"], r["h_class"]) == pytest.approx((1, 1, 0, 1))
    assert r["max_load"] == pytest.approx(1.0) and r["purity"] == pytest.approx(1.0)
    # Four classes, two experts, classes {0,1} -> expert 0, {2,3} -> expert 1: MI = log2 E = 1 bit (mi_max),
    # purity 1/2 (each expert holds two classes equally, so its majority class is half of its examples).
    r = specialisation_report([[5, 0], [5, 0], [0, 5], [0, 5]])
    assert r["mi"] == pytest.approx(1.0) and r["mi_max"] == pytest.approx(1.0) and r["h_class"] == pytest.approx(2.0)
    assert r["purity"] == pytest.approx(0.5)
    # Collapse onto expert 2 of 4: max load = E = 4, H(E) = 0.
    r = specialisation_report([[0, 0, 3, 0], [0, 0, 5, 0]])
    assert r["max_load"] == pytest.approx(4.0) and r["h_expert"] == pytest.approx(0.0) and r["mi"] == 0.0


@pytest.mark.parametrize("bad", [[[1, -1]], [[0, 0]], [1, 2, 3], [[np.nan, 1]]])
def test_counts_errors(bad):
    with pytest.raises(ValueError, match="counts"):
        mutual_information(bad)
