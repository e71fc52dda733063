"""Small 2-D toy problems for mixtures of experts: regions a gate can learn to carve.

`PiecewiseLinear` is a regression target that is linear inside each of R
equal angular sectors around the origin, either continuous (a "fan" of
planes through the origin, bent at the sector boundaries) or jumping from
one sector to the next. No single linear model fits it, while a mixture of R linear experts
with a softmax gate `softmax(x W_g)` (no bias, like `moe_tf`'s router) can
represent it: the gate's argmax regions are cones from the origin, and a gate
whose columns point at the sector centres carves exactly these sectors.

    problem = PiecewiseLinear(num_regions=4, seed=0)
    x, y, region = problem.sample(2000, seed=1)     # [N, 2], [N, 1], [N]
    xs, ys, points = grid(101)                       # for region maps
    true_region = problem.region(points)
"""

import numpy as np

from moe_tf import _checks

__all__ = ["PiecewiseLinear", "grid"]


class PiecewiseLinear:
    """A 2-D regression target that is a different linear function in each angular sector.

    The plane is cut into `num_regions` equal sectors around the origin,
    rotated by `rotation` radians: sector r holds the points whose angle lies in
    `[rotation + 2πr/R, rotation + 2π(r+1)/R)`. In sector r the target is

        y = w_r · x + b_r  (+ Gaussian noise of std `noise_std` when sampling)

    with coefficients drawn once from `seed`:

    - `continuous=False`: slopes `w_r ~ slope · N(0, I_2)` and offsets `b_r`
      spread evenly over `[-offset, offset]` in a random order. The distinct
      offsets make the target jump at the sector boundaries (near the
      origin by at least `2 · offset / (R − 1)`; further out the slopes can
      shrink or grow the jump).
    - `continuous=True` (needs R >= 3): `b_r = 0` and the target is
      continuous: its values on the unit vectors of the R boundary rays
      alternate in sign, with magnitudes `slope · U(0.5, 1.5)`, and each
      sector's plane passes through the values on its two boundary rays. The
      target bends sharply, but does not jump, at every boundary (for R = 4
      and equal magnitudes it is `slope · (|x_1| - |x_2|)`).

    Either way a single linear model cannot fit it.

    Args:
        num_regions: R >= 2 (>= 3 if continuous), the number of sectors (and
            of experts a mixture needs).
        slope: scale of the per-sector slopes (>= 0).
        offset: largest absolute per-sector offset (>= 0); unused if continuous.
        continuous: whether the pieces meet at the boundaries (see above).
        noise_std: standard deviation of the noise added by `sample` (>= 0).
        rotation: angle of the first sector boundary, in radians.
        seed: seed of the coefficients (an int, or None for fresh randomness).

    Attributes:
        coefficients: `[R, 3]` float64, row r is `(w_r[0], w_r[1], b_r)`.
        centres: `[R, 2]` unit vectors pointing at the sector centres. A
            bias-free softmax gate with kernel `c · centres.T` (any c > 0) has
            the sectors as its argmax regions.

    Example:
    >>> problem = PiecewiseLinear(num_regions=3, seed=0)
    >>> x, y, region = problem.sample(5, seed=1)
    >>> x.shape, y.shape, region.shape
    ((5, 2), (5, 1), (5,))
    """

    def __init__(self, num_regions=4, slope=2.0, offset=2.0, continuous=False, noise_std=0.1, rotation=0.0, seed=0):
        self.num_regions = _checks.positive_int("num_regions", num_regions)
        if self.num_regions < 2:
            raise ValueError(f"`num_regions` must be an integer >= 2; received num_regions={num_regions!r}.")
        self.slope = _checks.number("slope", slope)
        self.offset = _checks.number("offset", offset)
        self.continuous = bool(continuous)
        if self.continuous and self.num_regions < 3:
            raise ValueError(
                f"`continuous=True` needs num_regions >= 3 (sectors narrower than a half-plane); "
                f"received num_regions={num_regions!r}."
            )
        self.noise_std = _checks.number("noise_std", noise_std)
        if not _checks.is_number(rotation):
            raise ValueError(f"`rotation` must be a finite number of radians; received rotation={rotation!r}.")
        self.rotation = float(rotation)
        self.seed = seed
        rng = np.random.default_rng(seed)
        R = self.num_regions
        if self.continuous:
            bounds = self.rotation + 2 * np.pi * np.arange(R + 1) / R  # the last ray is the first one again
            rays = np.stack([np.cos(bounds), np.sin(bounds)], axis=1)  # [R + 1, 2]
            values = self.slope * (-1.0) ** np.arange(R) * rng.uniform(0.5, 1.5, size=R)
            values = np.append(values, values[0])  # [R + 1]
            # Sector r's plane w_r · x takes the drawn values on its two boundary rays: rays[r:r+2] w_r = values[r:r+2].
            slopes = np.stack([np.linalg.solve(rays[r : r + 2], values[r : r + 2]) for r in range(R)])
            offsets = np.zeros(R)
        else:
            slopes = self.slope * rng.normal(size=(R, 2))
            offsets = rng.permutation(np.linspace(-self.offset, self.offset, R))
        self.coefficients = np.concatenate([slopes, offsets[:, None]], axis=1)  # [R, 3]
        angles = self.rotation + 2 * np.pi * (np.arange(R) + 0.5) / R
        self.centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [R, 2]

    def region(self, x):
        """The sector of each point.

        Args:
            x: `[N, 2]` points.

        Returns:
            `[N]` int32 sector indices in `[0, R)`. The origin belongs to sector 0.
        """
        x = self._points(x)
        angle = np.mod(np.arctan2(x[:, 1], x[:, 0]) - self.rotation, 2 * np.pi)  # [N] in [0, 2π)
        region = np.floor(angle / (2 * np.pi / self.num_regions)).astype(np.int64)
        return np.minimum(region, self.num_regions - 1).astype(np.int32)

    def target(self, x):
        """The noise-free target `w_r · x + b_r` of each point, r its sector.

        Args:
            x: `[N, 2]` points.

        Returns:
            `[N, 1]` float32 targets.
        """
        x = self._points(x)
        coef = self.coefficients[self.region(x)]  # [N, 3]
        y = np.sum(coef[:, :2] * x, axis=1) + coef[:, 2]
        return y[:, None].astype(np.float32)

    def sample(self, num_samples, seed=None):
        """Draws points uniformly in the square `[-1, 1]^2` and their noisy targets.

        Args:
            num_samples: N, the number of points.
            seed: seed of the points and the noise (independent of the
                coefficients' seed).

        Returns:
            `(x, y, region)`: `[N, 2]` float32 points, `[N, 1]` float32
            targets (with noise of std `noise_std`), `[N]` int32 sectors.
        """
        num_samples = _checks.positive_int("num_samples", num_samples)
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1.0, 1.0, size=(num_samples, 2)).astype(np.float32)
        y = self.target(x) + (self.noise_std * rng.normal(size=(num_samples, 1))).astype(np.float32)
        return x, y.astype(np.float32), self.region(x)

    @staticmethod
    def _points(x):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"`x` must have shape [N, 2]; received an array of shape {x.shape}.")
        return x

    def __repr__(self):
        return (
            f"PiecewiseLinear(num_regions={self.num_regions}, slope={self.slope:g}, offset={self.offset:g}, "
            f"continuous={self.continuous}, noise_std={self.noise_std:g}, rotation={self.rotation:g}, seed={self.seed!r})"
        )


def grid(resolution=101, limit=1.0):
    """A square grid of points, for maps of which expert owns which region.

    Args:
        resolution: points per axis (>= 2).
        limit: the grid covers `[-limit, limit]^2` (> 0).

    Returns:
        `(xs, ys, points)`: `xs` and `ys` are `[resolution, resolution]`
        float32 coordinate arrays (as from `np.meshgrid`, for `imshow` or
        `contourf`), and `points` is `[resolution**2, 2]` float32, row-major:
        `values.reshape(resolution, resolution)` maps a per-point result back
        onto the grid.

    Example:
    >>> xs, ys, points = grid(3)
    >>> points.shape, float(xs[0, 0]), float(ys[-1, 0])
    ((9, 2), -1.0, 1.0)
    """
    resolution = _checks.positive_int("resolution", resolution)
    if resolution < 2:
        raise ValueError(f"`resolution` must be an integer >= 2; received resolution={resolution!r}.")
    limit = _checks.number("limit", limit, strict=True)
    axis = np.linspace(-limit, limit, resolution, dtype=np.float32)
    xs, ys = np.meshgrid(axis, axis)
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return xs, ys, points
