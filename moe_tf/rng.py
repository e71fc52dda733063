"""Random numbers that XLA compiles into fast code on a CPU.

Why it exists: on the TensorFlow backend, `keras.random.normal` /
`keras.random.uniform` (and so `keras.layers.Dropout`) call
`tf.random.stateless_*` with `alg="auto_select"`. Compiled with XLA
(`jit_compile=True`) on a CPU that choice becomes a generator far slower
than Philox: one `[256, 256]` dropout mask took about 27 ms under XLA
against 0.8 ms without it, and a small MNIST model trained at 48 ms per step
with `jit_compile=True` against 8 ms eagerly (TF 2.21, Keras 3.15, 2 cores).
Asking for the counter-based Philox generator by name removes the slowdown.

The seeds still come from a `keras.random.SeedGenerator` (a layer's
`seed_generator`), exactly as Keras draws them, so a layer built with the
same seed draws the same numbers run after run, and the state is saved and
restored with the layer. On other backends these are `keras.random`'s own
functions.
"""

import keras

__all__ = ["normal", "uniform", "philox_seed"]


def _tensorflow():
    return keras.backend.backend() == "tensorflow"


def philox_seed(seed_generator):
    """The next `[2]` int32 seed of `seed_generator`, advancing it (as Keras casts it for XLA)."""
    import tensorflow as tf

    seed = seed_generator.next()  # int64 state, a new value on every call
    return tf.cast(tf.math.floormod(seed, tf.int32.max - 1), "int32")


def normal(shape, seed_generator, dtype="float32"):
    """Standard normal samples of `shape`, drawn with Philox on TensorFlow.

    Args:
        shape: the output shape (ints or scalar tensors).
        seed_generator: a `keras.random.SeedGenerator`; advanced by one draw.
        dtype: floating dtype of the result.

    Returns:
        A tensor of `shape` with N(0, 1) entries.

    Example:
    >>> gen = keras.random.SeedGenerator(0)
    >>> normal((2, 3), gen).shape
    TensorShape([2, 3])
    """
    if not _tensorflow():
        return keras.random.normal(shape, dtype=dtype, seed=seed_generator)
    import tensorflow as tf

    return tf.random.stateless_normal(shape, seed=philox_seed(seed_generator), dtype=dtype, alg="philox")


def uniform(shape, seed_generator, minval=0.0, maxval=1.0, dtype="float32"):
    """Uniform samples in `[minval, maxval)` of `shape`, drawn with Philox on TensorFlow.

    Args:
        shape: the output shape.
        seed_generator: a `keras.random.SeedGenerator`; advanced by one draw.
        minval, maxval: the range.
        dtype: floating dtype of the result.

    Returns:
        A tensor of `shape`.

    Example:
    >>> gen = keras.random.SeedGenerator(0)
    >>> float(keras.ops.min(uniform((100,), gen, 0.9, 1.1))) >= 0.9
    True
    """
    if not _tensorflow():
        return keras.random.uniform(shape, minval, maxval, dtype=dtype, seed=seed_generator)
    import tensorflow as tf

    return tf.random.stateless_uniform(
        shape, seed=philox_seed(seed_generator), minval=minval, maxval=maxval, dtype=dtype, alg="philox"
    )
