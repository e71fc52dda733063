"""Small numpy references and data makers shared by the test modules."""

import numpy as np


def np_softmax(x, axis=-1):
    """Softmax in float64, the reference the library's float32 math is checked against."""
    x = np.asarray(x, np.float64)
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def rand(*shape, seed=0, low=-1.0, high=1.0):
    """Deterministic float32 uniform noise of the given shape."""
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype("float32")
