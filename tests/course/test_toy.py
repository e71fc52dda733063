"""moe_tf.course.toy: the 2-D piecewise-linear problem of notebook 01 and its grid helper."""

import numpy as np
import pytest
from _helpers import np_softmax

from moe_tf.course.toy import PiecewiseLinear, grid


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("num_regions", [3, 4, 6])
def test_sample_shapes_dtypes_and_range(num_regions, continuous):
    problem = PiecewiseLinear(num_regions, continuous=continuous, seed=0)
    x, y, region = problem.sample(500, seed=1)
    assert x.shape == (500, 2) and x.dtype == np.float32
    assert y.shape == (500, 1) and y.dtype == np.float32
    assert region.shape == (500,) and region.dtype == np.int32
    assert np.all(np.abs(x) <= 1.0)
    assert set(np.unique(region)) == set(range(num_regions))  # 500 uniform points hit every sector


def test_regions_are_equal_angular_sectors_with_rotation():
    problem = PiecewiseLinear(4, rotation=np.pi / 4, seed=0)
    # Sector r spans angles [π/4 + r·π/2, π/4 + (r+1)·π/2).
    angles = np.pi / 4 + np.pi / 2 * (np.arange(4) + 0.5)
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.testing.assert_array_equal(problem.region(points), [0, 1, 2, 3])
    np.testing.assert_allclose(problem.centres, points, atol=1e-12)
    # Just past a boundary, the sector changes.
    eps = 1e-6
    a = np.array([np.pi / 4 - eps, np.pi / 4 + eps])
    np.testing.assert_array_equal(problem.region(np.stack([np.cos(a), np.sin(a)], 1)), [3, 0])


def test_target_is_the_linear_piece_of_each_sector():
    problem = PiecewiseLinear(5, seed=3)
    x, _, region = PiecewiseLinear(5, noise_std=0.0, seed=3).sample(300, seed=4)
    coef = problem.coefficients
    expected = np.einsum("nd,nd->n", x, coef[region, :2]) + coef[region, 2]
    np.testing.assert_allclose(problem.target(x)[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_noise_std_of_the_samples():
    problem = PiecewiseLinear(4, noise_std=0.3, seed=0)
    x, y, _ = problem.sample(20000, seed=5)
    residual = y - problem.target(x)
    assert abs(float(residual.std()) - 0.3) < 0.01
    x0, y0, _ = PiecewiseLinear(4, noise_std=0.0, seed=0).sample(100, seed=5)
    np.testing.assert_array_equal(y0, problem.target(x0))


def test_seeds_make_it_reproducible():
    a, b = PiecewiseLinear(4, seed=7), PiecewiseLinear(4, seed=7)
    np.testing.assert_array_equal(a.coefficients, b.coefficients)
    for u, v in zip(a.sample(50, seed=1), b.sample(50, seed=1)):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.coefficients, PiecewiseLinear(4, seed=8).coefficients)
    assert not np.array_equal(a.sample(50, seed=1)[0], a.sample(50, seed=2)[0])


def test_discontinuous_target_jumps_at_every_boundary():
    problem = PiecewiseLinear(4, offset=2.0, seed=0)
    np.testing.assert_allclose(np.sort(problem.coefficients[:, 2]), np.linspace(-2, 2, 4))
    eps = 1e-6
    for r in range(4):
        a = 2 * np.pi * r / 4 + np.array([-eps, eps])
        ray = 0.01 * np.stack([np.cos(a), np.sin(a)], 1)  # next to the origin: the offsets dominate
        left, right = problem.target(ray)[:, 0]
        assert abs(left - right) > 2 * 2.0 / 3 - 0.1


@pytest.mark.parametrize("num_regions", [3, 4, 7])
def test_continuous_target_meets_at_every_boundary_and_bends(num_regions):
    problem = PiecewiseLinear(num_regions, continuous=True, rotation=0.3, seed=2)
    assert np.all(problem.coefficients[:, 2] == 0)
    eps = 1e-7
    for r in range(num_regions):
        a = 0.3 + 2 * np.pi * r / num_regions + np.array([-eps, eps])
        ray = 0.9 * np.stack([np.cos(a), np.sin(a)], 1)
        left, right = problem.target(ray)[:, 0]
        assert abs(left - right) < 1e-5  # continuous across the boundary
    slopes = problem.coefficients[:, :2]
    assert np.all(np.linalg.norm(slopes - np.roll(slopes, 1, axis=0), axis=1) > 0.1)  # but bends there


@pytest.mark.parametrize("continuous", [False, True])
def test_no_linear_model_fits_it(continuous):
    problem = PiecewiseLinear(4, continuous=continuous, noise_std=0.0, seed=0)
    x, y, _ = problem.sample(4000, seed=1)
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    unexplained = np.mean((design @ coef - y) ** 2) / np.var(y)
    assert unexplained > 0.5


@pytest.mark.parametrize("num_regions", [2, 3, 4, 6])
def test_a_bias_free_softmax_gate_on_the_centres_carves_the_sectors(num_regions):
    problem = PiecewiseLinear(num_regions, rotation=0.2, seed=0)
    x, _, region = problem.sample(2000, seed=1)
    gates = np_softmax(x @ (10.0 * problem.centres.T))  # [N, R], gate kernel [2, R]
    np.testing.assert_array_equal(gates.argmax(axis=1), region)


def test_a_mixture_with_the_true_pieces_and_a_sharp_gate_fits_it():
    problem = PiecewiseLinear(4, continuous=True, noise_std=0.0, seed=0)
    x, y, _ = problem.sample(2000, seed=1)
    outputs = x @ problem.coefficients[:, :2].T + problem.coefficients[:, 2]  # [N, R]
    gates = np_softmax(x @ (200.0 * problem.centres.T))
    mixture = np.sum(gates * outputs, axis=1, keepdims=True)
    assert np.mean((mixture - y) ** 2) < 1e-3 * np.var(y)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_regions"):
        PiecewiseLinear(1)
    with pytest.raises(ValueError, match="num_regions"):
        PiecewiseLinear(2.5)
    with pytest.raises(ValueError, match="continuous=True"):
        PiecewiseLinear(2, continuous=True)
    with pytest.raises(ValueError, match="noise_std"):
        PiecewiseLinear(4, noise_std=-1.0)
    with pytest.raises(ValueError, match="slope"):
        PiecewiseLinear(4, slope=float("nan"))
    with pytest.raises(ValueError, match="rotation"):
        PiecewiseLinear(4, rotation="90deg")
    problem = PiecewiseLinear(4)
    with pytest.raises(ValueError, match="num_samples"):
        problem.sample(0)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        problem.target(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="resolution"):
        grid(1)
    with pytest.raises(ValueError, match="limit"):
        grid(5, limit=0.0)


def test_grid_is_row_major_over_the_square():
    xs, ys, points = grid(5, limit=2.0)
    assert xs.shape == ys.shape == (5, 5) and points.shape == (25, 2)
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points[:, 0].reshape(5, 5), xs)
    np.testing.assert_array_equal(points[:, 1].reshape(5, 5), ys)
    assert points.min() == -2.0 and points.max() == 2.0
    np.testing.assert_array_equal(xs[0], np.linspace(-2, 2, 5, dtype=np.float32))  # x varies along a row
    assert np.all(ys[:, 0] == np.linspace(-2, 2, 5, dtype=np.float32))  # y along a column
